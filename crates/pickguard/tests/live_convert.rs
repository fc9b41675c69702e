//! Conversions checked against real torch and safetensors (feature `live`):
//! every tensor must be bit-identical to `torch.load(weights_only=True)`.
#![cfg(feature = "live")]

mod common;

use std::process::Command;

#[test]
fn conversions_are_bit_identical_to_torch_load() {
    let py = std::env::var("PICKGUARD_PYTHON").expect("PICKGUARD_PYTHON: run scripts/test.sh");
    let gendir = common::root().join("fixtures/gen");
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new(&py)
        .arg(gendir.join("convert_cases.py"))
        .arg(dir.path())
        .env("PYTHONWARNINGS", "ignore")
        .status()
        .unwrap();
    assert!(st.success());
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cases.json")).unwrap())
            .unwrap();
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
