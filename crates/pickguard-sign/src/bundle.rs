//! In-toto statement, DSSE envelope and Sigstore bundle, as `model_signing`
//! writes and reads them (key-based signing).

use crate::SignError;
use crate::manifest::{HashOptions, Manifest, Resource, hash_model, root_digest};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";

/// DSSE pre-authentication encoding.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    v.extend_from_slice(payload);
    v
}

fn load_signing_key(pem: &str) -> Result<SigningKey, SignError> {
    if let Ok(k) = SigningKey::from_pkcs8_pem(pem) {
        return Ok(k);
    }
    match p256::SecretKey::from_sec1_pem(pem) {
        Ok(sk) => Ok(SigningKey::from(sk)),
        Err(_) => Err(SignError::Key(
            "not an EC P-256 private key in PEM (PKCS#8 or SEC1)".into(),
        )),
    }
}

fn load_verifying_key(pem: &str) -> Result<VerifyingKey, SignError> {
    VerifyingKey::from_public_key_pem(pem).map_err(|_| {
        SignError::Key("not an EC P-256 public key in PEM (SubjectPublicKeyInfo)".into())
    })
}

/// `publicKey.hint`: hex SHA-256 of the key's PEM, LF line endings.
pub fn public_key_hint(key: &VerifyingKey) -> Result<String, SignError> {
    let pem = key
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| SignError::Key(e.to_string()))?;
    Ok(hex::encode(Sha256::digest(pem.as_bytes())))
}

fn statement(m: &Manifest) -> Value {
    let mut ser =
        json!({"method": "files", "hash_type": "sha256", "allow_symlinks": m.allow_symlinks});
    let mut algorithm = "sha256".to_string();
    if let Some(s) = m.shard_size {
        ser["method"] = json!("shards");
        ser["shard_size"] = json!(s);
        algorithm = format!("sha256-sharded-{s}");
    }
    if !m.ignore_paths.is_empty() {
        ser["ignore_paths"] = json!(m.ignore_paths);
    }
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": m.model_name, "digest": {"sha256": hex::encode(m.root_digest())}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": ser,
            "resources": m.resources.iter().map(|r| json!({"algorithm": algorithm, "name": r.name, "digest": hex::encode(r.digest)})).collect::<Vec<_>>(),
        }
    })
}

/// Hash `model` and write a signature bundle with an EC P-256 private key (PEM).
/// The signature file is left out of the manifest when it lies inside the model.
pub fn sign(
    model: &Path,
    private_key_pem: &str,
    signature_path: &Path,
    opts: &HashOptions,
) -> Result<Manifest, SignError> {
    sign_with(model, private_key_pem, None, signature_path, opts)
}

/// Like [`sign`], with the key's certificate and its chain (PEM) in the bundle.
pub fn sign_with_certificate(
    model: &Path,
    private_key_pem: &str,
    certificate_pem: &str,
    chain_pems: &[String],
    signature_path: &Path,
    opts: &HashOptions,
) -> Result<Manifest, SignError> {
    let mut certs = crate::x509::pem_certs(certificate_pem)?;
    certs.truncate(1);
    for c in chain_pems {
        certs.extend(crate::x509::pem_certs(c)?);
    }
    let key = load_signing_key(private_key_pem)?;
    if crate::x509::leaf_key(&certs[0])? != *key.verifying_key() {
        return Err(SignError::Key(
            "the private key does not match the signing certificate".into(),
        ));
    }
    sign_with(model, private_key_pem, Some(certs), signature_path, opts)
}

fn sign_with(
    model: &Path,
    private_key_pem: &str,
    certs: Option<Vec<Vec<u8>>>,
    signature_path: &Path,
    opts: &HashOptions,
) -> Result<Manifest, SignError> {
    let key = load_signing_key(private_key_pem)?;
    let mut opts = opts.clone();
    if let (Ok(root), Some(parent), Some(fname)) = (
        model.canonicalize(),
        signature_path.parent(),
        signature_path.file_name(),
    ) {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(sigdir) = parent.canonicalize() {
            let sig = sigdir.join(fname);
            if root.is_dir() && sig.starts_with(&root) {
                opts.ignore_paths.push(sig.display().to_string());
            }
        }
    }
    let manifest = hash_model(model, &opts)?;
    let payload =
        serde_json::to_vec(&statement(&manifest)).map_err(|e| SignError::Bundle(e.to_string()))?;
    let sig: DerSignature = key.sign(&pae(PAYLOAD_TYPE, &payload));
    let material = match certs {
        None => {
            json!({"publicKey": {"hint": public_key_hint(key.verifying_key())?}, "tlogEntries": []})
        }
        Some(certs) => json!({
            "x509CertificateChain": {"certificates": certs.iter().map(|c| json!({"rawBytes": STANDARD.encode(c)})).collect::<Vec<_>>()},
            "tlogEntries": []
        }),
    };
    let bundle = json!({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": material,
        "dsseEnvelope": {
            "payload": STANDARD.encode(&payload),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": STANDARD.encode(sig.as_bytes()), "keyid": ""}]
        }
    });
    let text = serde_json::to_string(&bundle).map_err(|e| SignError::Bundle(e.to_string()))?;
    let tmp = signature_path.with_extension("sig.partial");
    std::fs::write(&tmp, text).map_err(SignError::io(&tmp))?;
    std::fs::rename(&tmp, signature_path).map_err(SignError::io(signature_path))?;
    Ok(manifest)
}

/// The signed statement, decoded.
#[derive(Clone, Debug, Serialize)]
pub struct SignedStatement {
    pub subject_name: String,
    pub root_digest: String,
    pub method: String,
    /// For method "shards".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_size: Option<u64>,
    pub ignore_paths: Vec<String>,
    pub allow_symlinks: bool,
    pub resources: Vec<Resource>,
}

#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    pub hash: HashOptions,
    /// Hash only the files the signature names; others in the model are not errors.
    pub ignore_unsigned_files: bool,
}

/// What verification found. `ok` only when the signature is valid and the
/// files match exactly.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub signature_valid: bool,
    /// Files present now but not signed.
    pub added: Vec<String>,
    /// Signed files that are gone.
    pub removed: Vec<String>,
    /// Signed files whose contents changed.
    pub changed: Vec<String>,
    /// Problems with the signature itself.
    pub problems: Vec<String>,
    pub files_checked: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<SignedStatement>,
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn decode_b64(text: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text.trim_end_matches('=')))
        .ok()
}

/// What the verifier trusts.
#[derive(Clone, Debug)]
pub enum Trust {
    /// An EC P-256 public key, PEM.
    PublicKey(String),
    /// PEM files of trusted certificates (roots and intermediates).
    CertificateChain(Vec<String>),
}

/// The key that must have signed: the given one, or the bundle's leaf
/// certificate once its chain checks out against the trusted certificates.
fn signer_key(v: &Value, trust: &Trust, problems: &mut Vec<String>) -> Option<VerifyingKey> {
    let r = match trust {
        Trust::PublicKey(pem) => load_verifying_key(pem).map_err(|e| e.to_string()),
        Trust::CertificateChain(pems) => (|| {
            let certs: Vec<Vec<u8>> = s(
                v,
                &[
                    "verificationMaterial",
                    "x509CertificateChain",
                    "certificates",
                ],
            )
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| {
                        c.get("rawBytes")
                            .and_then(Value::as_str)
                            .and_then(decode_b64)
                    })
                    .collect()
            })
            .unwrap_or_default();
            if certs.is_empty() {
                return Err("the signature carries no certificate chain (signed with a bare key? use --public-key)".to_string());
            }
            let mut anchors = Vec::new();
            for p in pems {
                anchors.extend(crate::x509::pem_certs(p).map_err(|e| e.to_string())?);
            }
            crate::x509::verify_chain(&certs, &anchors)
                .map_err(|e| format!("certificate chain: {e}"))?;
            crate::x509::leaf_key(&certs[0]).map_err(|e| e.to_string())
        })(),
    };
    r.map_err(|e| problems.push(e)).ok()
}

/// Parse and check the bundle and its signature; the statement when valid.
fn check_bundle(
    bundle: &str,
    trust: &Trust,
    problems: &mut Vec<String>,
) -> Option<SignedStatement> {
    let v: Value = match serde_json::from_str(bundle) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("not JSON: {e}"));
            return None;
        }
    };
    let mt = v.get("mediaType").and_then(Value::as_str).unwrap_or("");
    if mt != BUNDLE_MEDIA_TYPE {
        problems.push(format!(
            "unsupported bundle media type {mt:?} (expected {BUNDLE_MEDIA_TYPE})"
        ));
        return None;
    }
    let key = &signer_key(&v, trust, problems)?;
    if let Some(hint) =
        s(&v, &["verificationMaterial", "publicKey", "hint"]).and_then(Value::as_str)
        && public_key_hint(key).ok().as_deref() != Some(hint)
    {
        problems.push(format!(
            "key mismatch: the signature names key {hint}, not the public key given"
        ));
        return None;
    }
    let env = v.get("dsseEnvelope")?;
    if env.get("payloadType").and_then(Value::as_str) != Some(PAYLOAD_TYPE) {
        problems.push("DSSE payload type is not in-toto JSON".into());
        return None;
    }
    let payload = env
        .get("payload")
        .and_then(Value::as_str)
        .and_then(decode_b64);
    let sigs = env.get("signatures").and_then(Value::as_array);
    let (Some(payload), Some(sigs)) = (payload, sigs) else {
        problems.push("DSSE envelope lacks a payload or signatures".into());
        return None;
    };
    if sigs.len() != 1 {
        problems.push(format!(
            "{} signatures in the envelope; exactly one is expected",
            sigs.len()
        ));
        return None;
    }
    let sig = sigs[0]
        .get("sig")
        .and_then(Value::as_str)
        .and_then(decode_b64);
    let sig = sig.and_then(|b| Signature::from_der(&b).ok());
    let Some(sig) = sig else {
        problems.push("the signature is not a DER-encoded ECDSA signature".into());
        return None;
    };
    if key.verify(&pae(PAYLOAD_TYPE, &payload), &sig).is_err() {
        problems.push("the signature does not verify with the public key given".into());
        return None;
    }
    let st: Value = match serde_json::from_slice(&payload) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("signed payload is not JSON: {e}"));
            return None;
        }
    };
    if st.get("_type").and_then(Value::as_str) != Some(STATEMENT_TYPE)
        || st.get("predicateType").and_then(Value::as_str) != Some(PREDICATE_TYPE)
    {
        problems.push("signed payload is not a model_signing v1.0 statement".into());
        return None;
    }
    let pred = st.get("predicate")?;
    let ser = pred.get("serialization").cloned().unwrap_or(Value::Null);
    let method = ser
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    // model_signing writes shard_size as a float (1000000.0).
    let shard_size = ser
        .get("shard_size")
        .and_then(Value::as_f64)
        .filter(|f| *f >= 1.0 && f.fract() == 0.0)
        .map(|f| f as u64);
    let sharded_alg = shard_size.map(|s| format!("sha256-sharded-{s}"));
    match (method.as_str(), shard_size) {
        ("files", _) | ("shards", Some(_)) => {}
        _ => {
            problems.push(format!("serialization method {method:?} is not supported (files, or shards with a shard_size)"));
            return None;
        }
    }
    let mut resources = Vec::new();
    for r in pred
        .get("resources")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let name = r.get("name").and_then(Value::as_str);
        let alg = r.get("algorithm").and_then(Value::as_str);
        let digest = r
            .get("digest")
            .and_then(Value::as_str)
            .and_then(|d| hex::decode(d).ok())
            .and_then(|d| <[u8; 32]>::try_from(d).ok());
        let alg_ok =
            alg == Some("sha256") || (alg.is_some() && alg.map(str::to_owned) == sharded_alg);
        match (name, alg_ok, digest) {
            (Some(n), true, Some(d)) => resources.push(Resource {
                name: n.to_owned(),
                digest: d,
            }),
            _ => {
                problems.push(format!("resource {r} is not a sha256 file digest"));
                return None;
            }
        }
    }
    let subject = s(&st, &["subject"])
        .and_then(Value::as_array)
        .and_then(|a| a.first());
    let root = subject
        .and_then(|x| s(x, &["digest", "sha256"]))
        .and_then(Value::as_str)
        .unwrap_or("");
    let computed = hex::encode(root_digest(resources.iter().map(|r| &r.digest)));
    if computed != root {
        problems.push(format!(
            "manifest is inconsistent: root digest {root}, resources give {computed}"
        ));
        return None;
    }
    Some(SignedStatement {
        shard_size: if method == "shards" { shard_size } else { None },
        subject_name: subject
            .and_then(|x| x.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        root_digest: root.to_owned(),
        method,
        ignore_paths: ser
            .get("ignore_paths")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        allow_symlinks: ser
            .get("allow_symlinks")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        resources,
    })
}

/// Verify `model` against a signature bundle and what the caller trusts.
pub fn verify(
    model: &Path,
    bundle: &str,
    trust: &Trust,
    signature_path: Option<&Path>,
    opts: &VerifyOptions,
) -> Result<VerifyReport, SignError> {
    let mut report = VerifyReport {
        ok: false,
        signature_valid: false,
        added: vec![],
        removed: vec![],
        changed: vec![],
        problems: vec![],
        files_checked: 0,
        statement: None,
    };
    let Some(st) = check_bundle(bundle, trust, &mut report.problems) else {
        return Ok(report);
    };
    report.signature_valid = true;
    let mut hopts = opts.hash.clone();
    hopts.ignore_paths.extend(st.ignore_paths.iter().cloned());
    if let Some(sp) = signature_path {
        hopts.ignore_paths.push(
            sp.canonicalize()
                .unwrap_or_else(|_| sp.to_owned())
                .display()
                .to_string(),
        );
    }
    let model_abs = model.canonicalize().map_err(SignError::io(model))?;
    hopts.ignore_paths = hopts
        .ignore_paths
        .iter()
        .map(|p| {
            if Path::new(p).is_absolute() {
                p.clone()
            } else {
                model_abs.join(p).display().to_string()
            }
        })
        .collect();
    let (files, _) = crate::manifest::list_files(&model_abs, &hopts)?;
    if let Some(size) = st.shard_size {
        return verify_shards(report, st, &files, size, opts);
    }
    let signed: BTreeMap<&str, &[u8; 32]> = st
        .resources
        .iter()
        .map(|r| (r.name.as_str(), &r.digest))
        .collect();
    let local: BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for n in &local {
        if !signed.contains_key(n) && !opts.ignore_unsigned_files {
            report.added.push((*n).to_owned());
        }
    }
    for n in signed.keys() {
        if !local.contains(n) {
            report.removed.push((*n).to_owned());
        }
    }
    use rayon::prelude::*;
    let to_hash: Vec<&(String, std::path::PathBuf)> = files
        .iter()
        .filter(|(n, _)| signed.contains_key(n.as_str()))
        .collect();
    let digests = to_hash
        .par_iter()
        .map(|(n, p)| crate::manifest::hash_file(p).map(|d| (n.as_str(), d)))
        .collect::<Result<Vec<_>, _>>()?;
    for (n, d) in &digests {
        if signed.get(n).is_some_and(|s| *s != d) {
            report.changed.push((*n).to_owned());
        }
    }
    report.files_checked = digests.len();
    report.ok = report.added.is_empty() && report.removed.is_empty() && report.changed.is_empty();
    report.statement = Some(st);
    Ok(report)
}

/// Verification for method "shards": shard digests grouped by file, and the
/// differences reported per file.
fn verify_shards(
    mut report: VerifyReport,
    st: SignedStatement,
    files: &[(String, std::path::PathBuf)],
    size: u64,
    opts: &VerifyOptions,
) -> Result<VerifyReport, SignError> {
    let mut signed: BTreeMap<String, BTreeMap<String, [u8; 32]>> = BTreeMap::new();
    for r in &st.resources {
        let file = r.name.rsplitn(3, ':').nth(2).unwrap_or(&r.name).to_owned();
        signed
            .entry(file)
            .or_default()
            .insert(r.name.clone(), r.digest);
    }
    // Empty files have no shards, so shard manifests cannot name them.
    let local: BTreeMap<&str, &std::path::PathBuf> = files
        .iter()
        .filter(|(_, p)| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(true))
        .map(|(n, p)| (n.as_str(), p))
        .collect();
    for n in local.keys() {
        if !signed.contains_key(*n) && !opts.ignore_unsigned_files {
            report.added.push((*n).to_owned());
        }
    }
    for n in signed.keys() {
        if !local.contains_key(n.as_str()) {
            report.removed.push(n.clone());
        }
    }
    let both: Vec<(String, std::path::PathBuf)> = files
        .iter()
        .filter(|(n, _)| signed.contains_key(n))
        .cloned()
        .collect();
    let mine = crate::manifest::hash_shards_pub(&both, size)?;
    let mut got: BTreeMap<String, BTreeMap<String, [u8; 32]>> = BTreeMap::new();
    for r in mine {
        let file = r.name.rsplitn(3, ':').nth(2).unwrap_or(&r.name).to_owned();
        got.entry(file).or_default().insert(r.name, r.digest);
    }
    for (f, shards) in &got {
        if signed.get(f) != Some(shards) {
            report.changed.push(f.clone());
        }
    }
    report.files_checked = got.len();
    report.ok = report.added.is_empty() && report.removed.is_empty() && report.changed.is_empty();
    report.statement = Some(st);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair() -> (String, String) {
        let sk = p256::SecretKey::from_slice(&[0x42u8; 32]).unwrap();
        let sec1 = sk.to_sec1_pem(LineEnding::LF).unwrap().to_string();
        let pubpem = sk.public_key().to_public_key_pem(LineEnding::LF).unwrap();
        (sec1, pubpem)
    }

    #[test]
    fn round_trip_and_tamper() {
        let (sk, pk) = keypair();
        let d = tempfile::tempdir().unwrap();
        let model = d.path().join("m");
        std::fs::create_dir_all(model.join("sub")).unwrap();
        std::fs::write(model.join("w.bin"), vec![7u8; 100_000]).unwrap();
        std::fs::write(model.join("sub/c.json"), b"{}").unwrap();
        let sig = model.join("model.sig");
        let m = sign(&model, &sk, &sig, &HashOptions::default()).unwrap();
        assert_eq!(
            m.resources.len(),
            2,
            "the signature inside the model is not signed"
        );
        let bundle = std::fs::read_to_string(&sig).unwrap();
        let pk = Trust::PublicKey(pk);
        let r = verify(&model, &bundle, &pk, Some(&sig), &VerifyOptions::default()).unwrap();
        assert!(r.ok, "{r:?}");
        std::fs::write(model.join("w.bin"), vec![8u8; 100_000]).unwrap();
        std::fs::write(model.join("new.txt"), b"x").unwrap();
        std::fs::remove_file(model.join("sub/c.json")).unwrap();
        let r = verify(&model, &bundle, &pk, Some(&sig), &VerifyOptions::default()).unwrap();
        assert!(!r.ok && r.signature_valid);
        assert_eq!(
            (r.changed, r.added, r.removed),
            (
                vec!["w.bin".to_string()],
                vec!["new.txt".to_string()],
                vec!["sub/c.json".to_string()]
            )
        );
    }

    #[test]
    fn wrong_key_and_edited_payload_fail() {
        let (sk, pk) = keypair();
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f.bin"), b"abc").unwrap();
        let sig = d.path().join("x.sig");
        sign(&d.path().join("f.bin"), &sk, &sig, &HashOptions::default()).unwrap();
        let bundle = std::fs::read_to_string(&sig).unwrap();
        let other = SigningKey::from_slice(&[3u8; 32])
            .unwrap()
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let r = verify(
            &d.path().join("f.bin"),
            &bundle,
            &Trust::PublicKey(other),
            None,
            &VerifyOptions::default(),
        )
        .unwrap();
        assert!(!r.signature_valid && r.problems[0].contains("key mismatch"));
        let mut v: Value = serde_json::from_str(&bundle).unwrap();
        let p = STANDARD
            .decode(v["dsseEnvelope"]["payload"].as_str().unwrap())
            .unwrap();
        let edited = String::from_utf8(p)
            .unwrap()
            .replace("\"f.bin\"", "\"g.bin\"");
        v["dsseEnvelope"]["payload"] = json!(STANDARD.encode(edited));
        let r = verify(
            &d.path().join("f.bin"),
            &v.to_string(),
            &Trust::PublicKey(pk),
            None,
            &VerifyOptions::default(),
        )
        .unwrap();
        assert!(!r.signature_valid);
    }
}
