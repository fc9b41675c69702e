//! `pickguard audit` on the configuration matrix in fixtures/audit.

mod common;

use std::collections::BTreeSet;

fn rules(dir: &std::path::Path, private: &[&str]) -> (BTreeSet<String>, i32, serde_json::Value) {
    let mut c = common::pickguard();
    c.arg("audit").arg(dir).args(["--format", "json"]);
    for p in private {
        c.args(["--private", p]);
    }
    let out = c.output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let set = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap().to_owned())
        .collect();
    (set, out.status.code().unwrap(), doc)
}

#[test]
fn every_shape_gets_exactly_its_rules() {
    let base = common::root().join("fixtures/audit");
    let mut n = 0;
    let mut bad = Vec::new();
    let (mut safe, mut unsafe_) = (0, 0);
    for e in std::fs::read_dir(&base).unwrap() {
        let dir = e.unwrap().path();
        let expect: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expect.json")).unwrap())
                .unwrap();
        let private: Vec<&str> = expect["private"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        let want: BTreeSet<String> = expect["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        let (got, code, _) = rules(&dir, &private);
        if got != want {
            bad.push(format!("{}: got {got:?}, want {want:?}", dir.display()));
        }
        if code != if want.is_empty() { 0 } else { 1 } {
            bad.push(format!("{}: exit {code}", dir.display()));
        }
        if want.is_empty() {
            safe += 1
        } else {
            unsafe_ += 1
        }
        n += 1;
    }
    assert!(
        n >= 25 && safe >= 8 && unsafe_ >= 15,
        "{n} cases, {safe} safe, {unsafe_} unsafe"
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn applying_the_advice_removes_the_finding() {
    // (exposed shape, the same project with the fix applied)
    let pairs = [
        ("pip-extra-index", "pip-single-private-index"),
        ("pip-extra-index", "pip-hash-pinned"),
        ("uv-explicit-unpinned", "uv-explicit-pinned"),
        ("uv-unsafe-best-match", "uv-private-index-first"),
        ("poetry-private-supplemental", "poetry-explicit-pinned"),
        ("pdm-default-sources", "pdm-include-packages"),
        ("pipfile-unpinned", "pipfile-index-pinned"),
        ("ci-uv-pip-style", "uv-default-and-index-cli"),
    ];
    let base = common::root().join("fixtures/audit");
    for (bad, good) in pairs {
        let (before, _, _) = rules(&base.join(bad), &["acme-*"]);
        let (after, code, _) = rules(&base.join(good), &["acme-*"]);
        assert!(!before.is_empty(), "{bad} should be exposed");
        assert!(
            after.is_empty() && code == 0,
            "{good} should be clean: {after:?}"
        );
    }
}

#[test]
fn private_names_come_from_pins_and_claims_are_exported() {
    let base = common::root().join("fixtures/audit");
    // No --private: the package pinned to the private index is private by that pin.
    let (_, _, doc) = rules(&base.join("uv-explicit-pinned"), &[]);
    assert_eq!(doc["private_names"], serde_json::json!(["acme-internal"]));
    let tmp = tempfile::tempdir().unwrap();
    let claims = tmp.path().join("claims.json");
    let out = common::pickguard()
        .arg("audit")
        .arg(base.join("pipfile-index-pinned"))
        .arg("--export-claims")
        .arg(&claims)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&claims).unwrap()).unwrap();
    assert_eq!(c["names"], serde_json::json!(["acme-internal"]));
    // A claims file feeds the audit back.
    let (got, code, _) = {
        let out = common::pickguard()
            .arg("audit")
            .arg(base.join("pip-extra-index"))
            .arg("--claims")
            .arg(&claims)
            .args(["--format", "json"])
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            doc["findings"].as_array().unwrap().len(),
            out.status.code().unwrap(),
            (),
        )
    };
    assert!(got > 0 && code == 1);
    // SARIF names the file and line of a Dockerfile finding.
    let out = common::pickguard()
        .arg("audit")
        .arg(base.join("dockerfile-extra-index"))
        .args(["--private", "acme-*", "--format", "sarif"])
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let loc = &s["runs"][0]["results"][0]["locations"][0]["physicalLocation"];
    assert_eq!(loc["artifactLocation"]["uri"], "Dockerfile");
    assert_eq!(loc["region"]["startLine"], 2);
}

#[test]
fn findings_carry_physical_lines_and_one_sarif_shape() {
    let d = tempfile::tempdir().unwrap();
    // The RUN starts on physical line 5, after a continued line.
    std::fs::write(
        d.path().join("Dockerfile"),
        "FROM python:3.12\nRUN apt-get update && \\\n    apt-get install -y git\nENV A=1\nRUN pip install -Ur requirements.txt \\\n    --extra-index-url https://pypi.org/simple/ \\\n    -i https://pkgs.acme.example/simple/ acme-internal\n",
    )
    .unwrap();
    let out = common::pickguard()
        .arg("audit")
        .arg(d.path())
        .args(["--private", "acme-*", "--format", "sarif"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &doc["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "pickguard");
    for r in run["tool"]["driver"]["rules"].as_array().unwrap() {
        assert!(
            r["helpUri"].as_str().unwrap().contains("docs/rules.md#aud"),
            "{r}"
        );
    }
    let res = &run["results"][0];
    let loc = &res["locations"][0]["physicalLocation"];
    assert_eq!(loc["artifactLocation"]["uri"], "Dockerfile");
    assert_eq!(loc["region"]["startLine"], 5, "{res}");
    // Option values are not package names.
    let json = common::pickguard()
        .arg("audit")
        .arg(d.path())
        .args(["--private", "acme-*", "--format", "json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&json.stdout);
    assert!(!text.contains("requirements-txt"), "{text}");
}
