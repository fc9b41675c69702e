//! Signatures cross between pickguard and the OpenSSF `model_signing` tool
//! in both directions (feature `live`; keys made by openssl).
#![cfg(feature = "live")]

use crate::common;

use common::Run;

use std::path::{Path, PathBuf};
use std::process::Command;

fn model_signing() -> PathBuf {
    let py = PathBuf::from(
        std::env::var("PICKGUARD_PYTHON").expect("PICKGUARD_PYTHON: run scripts/test.sh"),
    );
    py.parent().unwrap().join("model_signing")
}

fn keys(dir: &Path) -> (PathBuf, PathBuf) {
    let k = dir.join("key.pem");
    let p = dir.join("pub.pem");
    assert!(
        Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out"
            ])
            .arg(&k)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("openssl")
            .args(["ec", "-in"])
            .arg(&k)
            .args(["-pubout", "-out"])
            .arg(&p)
            .output()
            .unwrap()
            .status
            .success()
    );
    (k, p)
}

fn ms(args: &[&str], paths: &[&Path]) -> (bool, String) {
    let mut c = Command::new(model_signing());
    c.args(args);
    let out = c.args(paths).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Layouts to try: (model path inside dir, signature path).
fn layouts(dir: &Path) -> Vec<(String, PathBuf, PathBuf)> {
    let d = dir.join("dir-model");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(
        d.join("weights.bin"),
        (0..200_000u32)
            .flat_map(|i| i.to_le_bytes())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(d.join("config.json"), b"{\"a\": 1}").unwrap();
    std::fs::write(d.join("sub/tok.txt"), b"tokens").unwrap();
    std::fs::create_dir_all(d.join(".git")).unwrap();
    std::fs::write(d.join(".git/HEAD"), b"ref").unwrap();
    let f = dir.join("single.safetensors");
    std::fs::write(&f, b"single file model").unwrap();
    let own = dir.join("own-sig");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(own.join("w.bin"), b"weights").unwrap();
    let uni = dir.join("unicode");
    std::fs::create_dir_all(uni.join("日本")).unwrap();
    std::fs::write(uni.join("café é.txt"), b"accents").unwrap();
    std::fs::write(uni.join("日本/重み.bin"), b"kanji").unwrap();
    vec![
        ("directory".into(), d, dir.join("dir.sig")),
        ("single file".into(), f, dir.join("single.sig")),
        (
            "signature inside the model".into(),
            own.clone(),
            own.join("model.sig"),
        ),
        ("non-ASCII names".into(), uni, dir.join("uni.sig")),
    ]
}

#[test]
fn pickguard_signatures_verify_in_model_signing_and_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keys(tmp.path());
    let mut bad = Vec::new();
    for (what, model, sig) in layouts(tmp.path()) {
        // pickguard signs, model_signing verifies.
        let r = common::run(&[
            "sign",
            model.to_str().unwrap(),
            "--private-key",
            key.to_str().unwrap(),
            "--signature",
            sig.to_str().unwrap(),
        ]);
        assert!(
            r.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let (ok, log) = ms(
            &["verify", "key"],
            &[
                &model,
                Path::new("--signature"),
                &sig,
                Path::new("--public_key"),
                &public,
            ],
        );
        if !ok {
            bad.push(format!(
                "{what}: model_signing rejected pickguard's signature: {log}"
            ));
        }
        // model_signing signs, pickguard verifies.
        let sig2 = sig.with_extension("ms.sig");
        let (ok, log) = ms(
            &["sign", "key"],
            &[
                &model,
                Path::new("--private_key"),
                &key,
                Path::new("--signature"),
                &sig2,
            ],
        );
        assert!(ok, "{what}: model_signing sign: {log}");
        let r = common::run(&[
            "verify",
            model.to_str().unwrap(),
            "--signature",
            sig2.to_str().unwrap(),
            "--public-key",
            public.to_str().unwrap(),
        ]);
        if r.status.code() != Some(0) {
            bad.push(format!(
                "{what}: pickguard rejected model_signing's signature: {}",
                String::from_utf8_lossy(&r.stdout)
            ));
        }
        // Both agree on the manifest root digest.
        let ours = common::run(&[
            "hash",
            "--format",
            "json",
            model.to_str().unwrap(),
            "--ignore-paths",
            sig.to_str().unwrap(),
            "--ignore-paths",
            sig2.to_str().unwrap(),
        ]);
        let doc: serde_json::Value = serde_json::from_slice(&ours.stdout).unwrap();
        let r = common::run(&[
            "verify",
            "--format",
            "json",
            model.to_str().unwrap(),
            "--signature",
            sig2.to_str().unwrap(),
            "--public-key",
            public.to_str().unwrap(),
        ]);
        let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        if what != "signature inside the model"
            && doc["root_digest"] != v["statement"]["root_digest"]
        {
            bad.push(format!(
                "{what}: root digest {} vs model_signing's {}",
                doc["root_digest"], v["statement"]["root_digest"]
            ));
        }

        // Tamper: both tools must fail, and pickguard names the file.
        let victim = if model.is_dir() {
            std::fs::read_dir(&model)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.is_file() && !p.to_string_lossy().ends_with(".sig"))
                .unwrap()
        } else {
            model.clone()
        };
        let mut content = std::fs::read(&victim).unwrap();
        content.push(b'!');
        std::fs::write(&victim, &content).unwrap();
        let (ok, _) = ms(
            &["verify", "key"],
            &[
                &model,
                Path::new("--signature"),
                &sig,
                Path::new("--public_key"),
                &public,
            ],
        );
        if ok {
            bad.push(format!("{what}: model_signing accepted a tampered model"));
        }
        let r = common::run(&[
            "verify",
            model.to_str().unwrap(),
            "--signature",
            sig2.to_str().unwrap(),
            "--public-key",
            public.to_str().unwrap(),
        ]);
        let text = String::from_utf8_lossy(&r.stdout).into_owned();
        let name = if model.is_dir() {
            victim.file_name().unwrap().to_string_lossy().into_owned()
        } else {
            ".".into()
        };
        if r.status.code() != Some(1) || !text.contains(&format!("changed: {name}")) {
            bad.push(format!(
                "{what}: pickguard on the tampered model: {:?} {text}",
                r.status.code()
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn scan_checks_the_signature_first() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keys(tmp.path());
    let model = tmp.path().join("m");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::copy(
        common::corpus().join("ok-torch-state-dict.pt"),
        model.join("pytorch_model.bin"),
    )
    .unwrap();
    let sig = tmp.path().join("m.sig");
    let (ok, log) = ms(
        &["sign", "key"],
        &[
            &model,
            Path::new("--private_key"),
            &key,
            Path::new("--signature"),
            &sig,
        ],
    );
    assert!(ok, "{log}");
    let scan = |m: &Path| {
        let out = common::run(&[
            "scan",
            "--format",
            "json",
            m.to_str().unwrap(),
            "--verify-signature",
            sig.to_str().unwrap(),
            "--public-key",
            public.to_str().unwrap(),
        ]);
        (
            out.status.code(),
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        )
    };
    let (code, doc) = scan(&model);
    assert_eq!(code, Some(0), "{doc}");
    // Swap the checkpoint for a malicious one: the signature check flags it too.
    std::fs::copy(
        common::corpus().join("mal-torch-zip.pt"),
        model.join("pytorch_model.bin"),
    )
    .unwrap();
    let (code, doc) = scan(&model);
    assert_eq!(code, Some(1));
    let sigentry = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["format"] == "model-signature")
        .unwrap();
    assert_eq!(sigentry["verdict"], "malicious");
    assert!(
        sigentry["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("changed: pytorch_model.bin")
    );
}

/// A root CA and a code-signing leaf for `key`, made with openssl.
fn ca_and_leaf(dir: &Path, key: &Path) -> (PathBuf, PathBuf) {
    let cnf = dir.join("ext.cnf");
    std::fs::write(
        &cnf,
        "[v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         [v3_leaf]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = codeSigning\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new("openssl").args(args).current_dir(dir).ok();
    };
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ca.key",
    ]);
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=pickguard test root",
        "-days",
        "30",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        "/CN=pickguard test signer",
        "-out",
        "leaf.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "10",
        "-out",
        "leaf.pem",
        "-extfile",
        "ext.cnf",
        "-extensions",
        "v3_leaf",
    ]);
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "other.key",
    ]);
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "other.key",
        "-subj",
        "/CN=other root",
        "-days",
        "30",
        "-out",
        "other.pem",
    ]);
    (dir.join("ca.pem"), dir.join("leaf.pem"))
}

#[test]
fn certificate_signatures_cross_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, _) = keys(tmp.path());
    let (ca, leaf) = ca_and_leaf(tmp.path(), &key);
    let model = tmp.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("w.bin"), vec![5u8; 50_000]).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    // pickguard signs with the certificate, model_signing verifies against the root.
    let pg_sig = tmp.path().join("pg.sig");
    let r = common::run(&[
        "sign",
        &s(&model),
        "--private-key",
        &s(&key),
        "--signing-cert",
        &s(&leaf),
        "--cert-chain",
        &s(&ca),
        "--signature",
        &s(&pg_sig),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (ok, log) = ms(
        &["verify", "certificate"],
        &[
            &model,
            Path::new("--signature"),
            &pg_sig,
            Path::new("--certificate_chain"),
            &ca,
        ],
    );
    assert!(
        ok,
        "model_signing rejected pickguard's certificate signature: {log}"
    );
    // model_signing signs, pickguard verifies.
    let ms_sig = tmp.path().join("ms.sig");
    let (ok, log) = ms(
        &["sign", "certificate"],
        &[
            &model,
            Path::new("--private_key"),
            &key,
            Path::new("--signing_certificate"),
            &leaf,
            Path::new("--certificate_chain"),
            &ca,
            Path::new("--signature"),
            &ms_sig,
        ],
    );
    assert!(ok, "{log}");
    let r = common::run(&[
        "verify",
        &s(&model),
        "--signature",
        &s(&ms_sig),
        "--cert-chain",
        &s(&ca),
    ]);
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    // An unrelated root is not trusted.
    let r = common::run(&[
        "verify",
        &s(&model),
        "--signature",
        &s(&ms_sig),
        "--cert-chain",
        &s(&tmp.path().join("other.pem")),
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stdout).contains("certificate chain"));
}

#[test]
fn sharded_signatures_hash_large_files_in_parallel_and_verify_model_signing_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keys(tmp.path());
    let model = tmp.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(
        model.join("big.bin"),
        (0..300_000u32)
            .flat_map(|i| i.to_le_bytes())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(model.join("empty.txt"), b"").unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    // model_signing (its Python API: the CLI cannot sign shards) signs with shards; pickguard verifies.
    let sig = tmp.path().join("ms-shards.sig");
    let code = "import sys, model_signing\n\
                c = model_signing.signing.Config().use_elliptic_key_signer(private_key=sys.argv[1])\n\
                c.set_hashing_config(model_signing.hashing.Config().use_shard_serialization(shard_size=100000))\n\
                c.sign(sys.argv[2], sys.argv[3])";
    let py = std::env::var("PICKGUARD_PYTHON").unwrap();
    Command::new(&py)
        .args(["-c", code])
        .arg(&key)
        .arg(&model)
        .arg(&sig)
        .ok();
    let r = common::run(&[
        "verify",
        &s(&model),
        "--signature",
        &s(&sig),
        "--public-key",
        &s(&public),
    ]);
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    // pickguard's own sharded signatures round-trip and catch tampering per file.
    let pg = tmp.path().join("pg-shards.sig");
    let r = common::run(&[
        "sign",
        &s(&model),
        "--private-key",
        &s(&key),
        "--signature",
        &s(&pg),
        "--shard-size",
        "100000",
    ]);
    assert!(r.status.success());
    let doc = std::fs::read_to_string(&pg).unwrap();
    assert!(doc.contains("dsseEnvelope"));
    let r = common::run(&[
        "verify",
        &s(&model),
        "--signature",
        &s(&pg),
        "--public-key",
        &s(&public),
    ]);
    assert_eq!(r.status.code(), Some(0));
    let mut data = std::fs::read(model.join("big.bin")).unwrap();
    data[250_000] ^= 1;
    std::fs::write(model.join("big.bin"), data).unwrap();
    for sigf in [&sig, &pg] {
        let r = common::run(&[
            "verify",
            &s(&model),
            "--signature",
            &s(sigf),
            "--public-key",
            &s(&public),
        ]);
        assert_eq!(r.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&r.stdout).contains("changed: big.bin"));
    }
}
