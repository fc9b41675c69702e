//! Tests against the real producers and loaders (feature `live`, run by
//! scripts/test.sh, which provides the venv and the SARIF schema).
#![cfg(feature = "live")]

use crate::common;

use common::Run;

use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> PathBuf {
    std::env::var_os("PICKGUARD_PYTHON").map(PathBuf::from).expect(
        "PICKGUARD_PYTHON must name the test venv's python: run scripts/test.sh, which creates it",
    )
}

/// What one load did: whether the payload's marker appeared, whether
/// loading raised, and what the loader printed.
struct Loaded {
    marker: bool,
    raised: bool,
    log: String,
}

/// Load each (fixture, loader) the way the manifest says, each in a fresh
/// directory, through one batch interpreter (load_fixture.py --batch: the
/// heavy imports once, each load in a child forked from it).
fn load_all(dir: &Path, jobs: &[(&common::Fixture, &str)]) -> Vec<Loaded> {
    use std::io::{BufRead, BufReader, Write};
    let cwds: Vec<tempfile::TempDir> = jobs.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let mut child = Command::new(python())
        .arg(common::root().join("fixtures/gen/load_fixture.py"))
        .arg("--batch")
        .env("PYTHONWARNINGS", "ignore")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    let mut input = child.stdin.take().unwrap();
    let requests: String = jobs
        .iter()
        .zip(&cwds)
        .map(|((f, loader), cwd)| {
            serde_json::json!({"loader": loader, "path": dir.join(&f.name), "cwd": cwd.path()})
                .to_string()
                + "\n"
        })
        .collect();
    let writer = std::thread::spawn(move || input.write_all(requests.as_bytes()));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    for ((f, loader), cwd) in jobs.iter().zip(&cwds) {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the batch loader stopped before {} ({loader})", f.name))
            .unwrap();
        let code = serde_json::from_str::<serde_json::Value>(&line).unwrap()["code"].clone();
        let log = std::fs::read_to_string(cwd.path().join("load.log")).unwrap_or_default();
        assert!(
            code == 0 || code == 3,
            "loader {loader} failed for {}: {code}\n{log}",
            f.name
        );
        out.push(Loaded {
            marker: cwd.path().join("pickguard-marker").exists(),
            raised: code == 3,
            log,
        });
    }
    writer.join().unwrap().unwrap();
    assert!(child.wait().unwrap().success(), "the batch loader failed");
    out
}

fn check_loads(dir: &Path) {
    let fixtures = common::manifest(dir);
    // (fixture, loader, whether the payload must stay inert under it)
    let mut jobs: Vec<(&common::Fixture, &str, bool)> = Vec::new();
    for f in fixtures.iter().filter(|f| f.load != "none") {
        jobs.push((f, &f.load, false));
        // Readings the payload is built to stay hidden from.
        jobs.extend(f.inert.iter().map(|other| (f, other.as_str(), true)));
    }
    let pairs: Vec<(&common::Fixture, &str)> = jobs.iter().map(|&(f, l, _)| (f, l)).collect();
    let results = load_all(dir, &pairs);
    let mut bad = Vec::new();
    let mut ran = 0;
    for ((f, loader, inert), r) in jobs.iter().zip(&results) {
        let log = r.log.trim();
        if *inert {
            if r.marker {
                bad.push(format!(
                    "{}: marker under {loader}, manifest says inert ({log})",
                    f.name
                ));
            }
            continue;
        }
        ran += 1;
        if r.marker != f.marker {
            bad.push(format!(
                "{}: marker {}, manifest says {} ({log})",
                f.name, r.marker, f.marker
            ));
        }
        if r.raised != f.raises {
            bad.push(format!(
                "{}: raised {}, manifest says {} ({log})",
                f.name, r.raised, f.raises
            ));
        }
        // Truly malicious fixtures must be flagged: the corpus test checks the verdict.
        if f.marker && f.expect != "malicious" && !(f.unread && f.expect == "inconclusive") {
            bad.push(format!(
                "{}: runs a payload but the manifest expects {}",
                f.name, f.expect
            ));
        }
    }
    assert!(ran >= 40, "only {ran} fixtures loaded");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn committed_fixtures_behave_as_labelled_under_real_loaders() {
    check_loads(&common::corpus());
}

#[test]
fn regenerated_fixtures_scan_and_load_the_same() {
    let out = tempfile::tempdir().unwrap();
    let st = Command::new(python())
        .arg(common::root().join("fixtures/gen/make_fixtures.py"))
        .arg("--out")
        .arg(out.path())
        .env("PYTHONWARNINGS", "ignore")
        .status()
        .expect("run generator");
    assert!(st.success(), "fixture generator failed");
    let committed: Vec<String> = common::manifest(&common::corpus())
        .into_iter()
        .map(|f| f.name)
        .collect();
    let fresh: Vec<String> = common::manifest(out.path())
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(
        committed, fresh,
        "the committed corpus is stale: regenerate it with fixtures/gen/make_fixtures.py --out fixtures/corpus"
    );
    let bad = common::check_corpus(out.path());
    assert!(bad.is_empty(), "regenerated corpus:\n{}", bad.join("\n"));
    check_loads(out.path());
}

#[test]
fn sarif_validates_against_the_schema() {
    let schema = std::env::var_os("PICKGUARD_SARIF_SCHEMA")
        .expect("PICKGUARD_SARIF_SCHEMA: run scripts/test.sh");
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("r.sarif");
    let st = common::pickguard()
        .args(["scan", "--format", "sarif", "-o"])
        .arg(&report)
        .arg(common::corpus())
        .arg("/nonexistent/file.pt")
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1));
    let code = "import json,sys,jsonschema\n\
                s=json.load(open(sys.argv[1])); d=json.load(open(sys.argv[2]))\n\
                jsonschema.Draft4Validator(s).validate(d)\n\
                assert d['runs'][0]['results'], 'no results'\n\
                print('valid', len(d['runs'][0]['results']))";
    // audit writes its SARIF through the same writer: validate it too.
    let audit_report = tmp.path().join("a.sarif");
    let out = common::pickguard()
        .arg("audit")
        .arg(common::root().join("fixtures/audit/dockerfile-extra-index"))
        .args(["--private", "acme-*", "--format", "sarif"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    std::fs::write(&audit_report, &out.stdout).unwrap();
    for r in [&report, &audit_report] {
        Command::new(python())
            .args(["-c", code])
            .arg(&schema)
            .arg(r)
            .ok();
    }
}

#[test]
fn real_torch_checkpoint_of_many_tensors_is_complete_and_clean() {
    // A 5 000-tensor state dict made by torch.save now, not committed.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("many.pt");
    let code = "import torch,sys\n\
                sd={f'layer.{i}.weight': torch.zeros(2) for i in range(5000)}\n\
                torch.save(sd, sys.argv[1])";
    let st = Command::new(python())
        .args(["-c", code])
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    let (doc, exit) = common::scan_json(&[&path]);
    assert_eq!(exit, 0, "{doc}");
    assert_eq!(doc["files"][0]["verdict"], "clean");
    assert_eq!(doc["files"][0]["tensors"], 5000);
}

/// The ggml type sizes the GGUF reader uses are llama.cpp's own (the `gguf`
/// package's GGML_QUANT_SIZES), for every type it lists.
#[test]
fn gguf_type_sizes_match_the_gguf_package() {
    let out = Command::new(python())
        .args([
            "-c",
            "import gguf, json; print(json.dumps({int(k): list(v) for k, v in gguf.GGML_QUANT_SIZES.items()}))",
        ])
        .ok();
    let sizes: std::collections::BTreeMap<String, (u64, u64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    assert!(sizes.len() >= 30, "{sizes:?}");
    for (t, want) in &sizes {
        let t: u32 = t.parse().unwrap();
        assert_eq!(
            pickguard_formats::gguf::type_size(t),
            Some(*want),
            "ggml type {t}"
        );
    }
    // Types the package does not list are unknown to the reader too.
    for t in 0..64u32 {
        if !sizes.contains_key(&t.to_string()) {
            assert_eq!(pickguard_formats::gguf::type_size(t), None, "ggml type {t}");
        }
    }
}

/// 7z archives built against the 7z reading (fixtures/gen/sevenz_attacks.py,
/// from an attacker review): a BCJ start offset the decoder would ignore
/// (py7zr applies it and the payload runs: proven here) is inconclusive; a
/// Keras directory inside 7z is judged by its config.json; nested archives
/// share one decompression budget; a slow PPMd member stops at --timeout.
#[test]
fn seven_z_archives_built_against_the_reader() {
    let d = tempfile::tempdir().unwrap();
    Command::new(python())
        .arg(common::root().join("fixtures/gen/sevenz_attacks.py"))
        .arg(d.path())
        .ok();
    let victim = tempfile::tempdir().unwrap();
    Command::new(python())
        .current_dir(victim.path())
        .arg(common::root().join("fixtures/gen/load_fixture.py"))
        .arg("7z:model.pkl:pickle-loads")
        .arg(d.path().join("bcj-offset.7z"))
        .env("PYTHONWARNINGS", "ignore")
        .ok();
    assert!(
        victim.path().join("pickguard-marker").exists(),
        "py7zr extraction did not run the payload: the fixture proves nothing"
    );
    let scan = |name: &str, extra: &[&str]| {
        let out = common::pickguard()
            .args(["scan", "-f", "json", "--no-progress"])
            .args(extra)
            .arg(d.path().join(name))
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let f = doc["files"][0].clone();
        let rules: Vec<String> = f["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["rule"].as_str().unwrap().to_owned())
            .collect();
        (
            f["verdict"].as_str().unwrap().to_owned(),
            rules,
            f.to_string(),
        )
    };
    let (v, rules, f) = scan("bcj-offset.7z", &[]);
    assert_eq!(v, "inconclusive", "{f}");
    assert!(rules.iter().any(|r| r == "PG303-unreadable"), "{f}");
    let (v, _, f) = scan("keras-dir.7z", &[]);
    assert_eq!(v, "malicious", "{f}");
    let (v, rules, f) = scan("nested-budget.7z", &["--max-decompressed", "96M"]);
    assert_eq!(v, "inconclusive", "{f}");
    assert!(rules.iter().any(|r| r == "PG301-budget-exceeded"), "{f}");
    let (v, rules, f) = scan("ppmd-slow.7z", &["--timeout", "1"]);
    assert_eq!(v, "inconclusive", "{f}");
    assert!(f.contains("time limit"), "{f}");
    assert!(rules.iter().any(|r| r == "PG301-budget-exceeded"), "{f}");
}
