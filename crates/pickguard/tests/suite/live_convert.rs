//! Conversions checked against real torch and safetensors (feature `live`):
//! every tensor must be bit-identical to `torch.load(weights_only=True)`.
#![cfg(feature = "live")]

use crate::common;

use std::process::Command;

/// Run a case generator of fixtures/gen into a fresh directory: the venv's
/// python, the generator directory, the output directory and its cases.json.
fn generate(
    script: &str,
    args: &[&str],
) -> (
    String,
    std::path::PathBuf,
    tempfile::TempDir,
    serde_json::Value,
) {
    let py = std::env::var("PICKGUARD_PYTHON").expect("PICKGUARD_PYTHON: run scripts/test.sh");
    let gendir = common::root().join("fixtures/gen");
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new(&py)
        .arg(gendir.join(script))
        .arg(dir.path())
        .args(args)
        .env("PYTHONWARNINGS", "ignore")
        .status()
        .unwrap();
    assert!(st.success(), "{script} failed");
    let cases =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cases.json")).unwrap())
            .unwrap();
    (py, gendir, dir, cases)
}

#[test]
fn conversions_are_bit_identical_to_torch_load() {
    let (py, gendir, dir, cases) = generate("convert_cases.py", &[]);
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 10);
    let mut failures = Vec::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let input = dir.path().join(name);
        let out = if input.is_dir() {
            dir.path().join(format!("{name}-out"))
        } else {
            dir.path().join(format!("{name}.safetensors"))
        };
        let args: Vec<String> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().replace("{out}", out.to_str().unwrap()))
            .collect();
        let r = common::pickguard()
            .current_dir(dir.path())
            .arg("convert")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .args(&args)
            .output()
            .unwrap();
        if c["expect"] == "refused" {
            if r.status.code() != Some(1) || out.exists() {
                failures.push(format!(
                    "{name}: expected refusal, got {:?}",
                    r.status.code()
                ));
            }
            continue;
        }
        if !r.status.success() {
            failures.push(format!(
                "{name}: convert failed: {}",
                String::from_utf8_lossy(&r.stderr)
            ));
            continue;
        }
        // The verifier gets the same selection options.
        let mut v = Command::new(&py);
        v.arg(gendir.join("verify_convert.py"))
            .arg(&input)
            .arg(&out)
            .env("PYTHONWARNINGS", "ignore");
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--key" | "--strip-prefix" => {
                    v.arg(a).arg(it.next().unwrap());
                }
                _ => {}
            }
        }
        if args.iter().any(|a| a == "--strip-prefix") && !args.iter().any(|a| a == "--key") {
            v.args(["--key", "state_dict"]);
        }
        let vr = v.output().unwrap();
        if !vr.status.success() {
            failures.push(format!(
                "{name}: {}{}",
                String::from_utf8_lossy(&vr.stdout),
                String::from_utf8_lossy(&vr.stderr)
            ));
        }
    }
    assert!(
        !dir.path().join("pickguard-marker").exists(),
        "a payload ran"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The attacker review's checkpoints (fixtures/gen/torch_attacks.py, built
/// from torch.save output and torch's own rebuild functions; the payloads
/// proven to run under torch.load): scan never calls the code-carrying ones
/// clean, and convert refuses whatever torch would read otherwise, or writes
/// exactly what torch reads.
#[test]
fn readings_torch_makes_are_the_readings_scan_and_convert_make() {
    let (py, gendir, dir, cases) = generate("torch_attacks.py", &["--prove"]);
    let mut bad = Vec::new();
    for c in cases.as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let input = dir.path().join(name);
        let scan = common::run(&["scan", input.to_str().unwrap()]);
        if c["scan"] == "not-clean" && scan.status.code() == Some(0) {
            bad.push(format!("{name}: scan says clean ({})", c["what"]));
        }
        let out = dir.path().join(format!("{name}.safetensors"));
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let conv = common::pickguard()
            .arg("convert")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&conv.stderr);
        assert!(!err.contains("panicked"), "{name}: {err}");
        match c["convert"].as_str().unwrap() {
            "refused" => {
                if conv.status.success() || out.exists() {
                    bad.push(format!("{name}: converted ({})", c["what"]));
                }
            }
            _ => {
                if !conv.status.success() {
                    bad.push(format!("{name}: convert failed: {err}"));
                    continue;
                }
                let v = Command::new(&py)
                    .arg(gendir.join("verify_convert.py"))
                    .arg(&input)
                    .arg(&out)
                    .args(&args)
                    .env("PYTHONWARNINGS", "ignore")
                    .output()
                    .unwrap();
                if !v.status.success() {
                    bad.push(format!(
                        "{name}: differs from torch: {}",
                        String::from_utf8_lossy(&v.stdout)
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
