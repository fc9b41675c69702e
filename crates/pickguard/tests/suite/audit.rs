//! `pickguard audit` on the configuration matrix in fixtures/audit.

use crate::common;

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

fn run_audit(dir: &std::path::Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let out = common::pickguard()
        .arg("audit")
        .arg(dir)
        .args(["--format", "json"])
        .args(extra)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (
        out.status.code().unwrap(),
        doc,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 18: every distributed and release shape has a fixed twin with no finding,
/// and the findings point at the line to change.
#[test]
fn policy_checks_fixed_twins_and_lines() {
    let base = common::root().join("fixtures/audit");
    let pairs = [
        (
            "dist-torchrun-any-address",
            "dist-torchrun-private-endpoint",
        ),
        ("dist-slurm-public-master", "dist-slurm-private-master"),
        ("dist-k8s-loadbalancer", "dist-k8s-headless"),
        ("dist-docker-publish", "dist-docker-loopback"),
        ("dist-compose-ports", "dist-compose-loopback"),
        ("dist-python-tcpstore", "dist-python-tcpstore-fd"),
        ("release-pypi-repo-token", "release-pypi-trusted"),
        ("release-docker-latest", "release-docker-pinned"),
        ("release-gitlab-cache", "release-gitlab-env"),
        ("pr-target-checkout", "pr-plain-checkout"),
    ];
    for (bad, good) in pairs {
        let (code, doc, _) = run_audit(&base.join(bad), &[]);
        assert_eq!(code, 1, "{bad}: {doc}");
        for f in doc["findings"].as_array().unwrap() {
            assert!(f["line"].as_u64().unwrap() > 0, "{bad}: {f}");
            assert!(!f["fix"].as_str().unwrap().is_empty());
        }
        let (code, doc, _) = run_audit(&base.join(good), &[]);
        assert_eq!(code, 0, "{good} should be clean: {doc}");
        assert!(doc["findings"].as_array().unwrap().is_empty());
    }
    let at = |dir: &str, rule: &str| -> Vec<(String, u64)> {
        let (_, doc, _) = run_audit(&base.join(dir), &[]);
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["rule"] == rule)
            .map(|f| {
                (
                    f["file"].as_str().unwrap().to_owned(),
                    f["line"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let wf = ".github/workflows/release.yml".to_string();
    assert_eq!(
        at(
            "release-pypi-repo-token",
            "AUD201-release-self-hosted-runner"
        ),
        vec![(wf.clone(), 10)]
    );
    assert_eq!(
        at("release-pypi-repo-token", "AUD202-release-shared-cache"),
        vec![(wf.clone(), 13), (wf.clone(), 17), (wf.clone(), 18)]
    );
    assert_eq!(
        at("release-docker-latest", "AUD208-release-mutable-base-image"),
        vec![("Dockerfile".to_string(), 1)]
    );
    assert_eq!(
        at("dist-k8s-loadbalancer", "AUD104-distributed-host-network"),
        vec![
            ("deploy/pytorchjob.yaml".to_string(), 11),
            ("deploy/pytorchjob.yaml".to_string(), 24)
        ]
    );
    assert_eq!(
        at("pr-target-checkout", "AUD205-pr-target-checkout"),
        vec![(".github/workflows/benchmark.yml".to_string(), 10)]
    );
}

/// `--check` runs only what it names; a selected check with nothing to read
/// is exit 2, never a clean 0; an unreadable workflow makes the answer
/// incomplete (exit 2), not clean.
#[test]
fn checks_are_selected_and_fail_closed() {
    let base = common::root().join("fixtures/audit");
    // Only the release check: the confusion exposure of this fixture is not reported.
    let (code, doc, _) = run_audit(
        &base.join("gha-env-extra-index"),
        &["--check", "release", "--private", "acme-*"],
    );
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["checks"], serde_json::json!(["release"]));
    let (code, _, _) = run_audit(
        &base.join("dist-slurm-public-master"),
        &["--check", "release"],
    );
    assert_eq!(code, 2, "nothing for the release check to read");
    let (code, doc, _) = run_audit(
        &base.join("dist-slurm-public-master"),
        &["--check", "distributed,release"],
    );
    assert_eq!(code, 1);
    assert!(
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["check"] == "distributed")
    );
    // An unreadable workflow next to a clean one: incomplete, exit 2.
    let d = tempfile::tempdir().unwrap();
    let wf = d.path().join(".github/workflows");
    std::fs::create_dir_all(&wf).unwrap();
    std::fs::copy(
        base.join("release-pypi-trusted/.github/workflows/release.yml"),
        wf.join("release.yml"),
    )
    .unwrap();
    std::fs::write(wf.join("broken.yml"), "jobs:\n  publish: [unclosed\n").unwrap();
    let (code, doc, err) = run_audit(d.path(), &["--check", "release"]);
    assert_eq!(code, 2, "{doc}");
    assert!(err.contains("broken.yml"), "{err}");
    let text = common::pickguard()
        .args(["audit", "--check", "release"])
        .arg(d.path())
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&text.stdout);
    assert!(
        t.contains("incomplete: .github/workflows/broken.yml"),
        "{t}"
    );
    // A billion-laughs workflow is refused, not expanded.
    let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    let mut prev = 'a';
    for c in 'b'..='m' {
        laughs.push_str(&format!("{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        prev = c;
    }
    std::fs::write(wf.join("broken.yml"), laughs).unwrap();
    let (code, _, err) = run_audit(d.path(), &["--check", "release"]);
    assert_eq!(code, 2);
    assert!(err.contains("nodes"), "{err}");
}

/// SARIF carries the check and the physical line for the new rules.
#[test]
fn policy_findings_in_sarif() {
    let base = common::root().join("fixtures/audit");
    let out = common::pickguard()
        .arg("audit")
        .arg(base.join("release-gh-assets"))
        .args(["--format", "sarif"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = s["runs"][0]["results"].as_array().unwrap();
    let asset = results
        .iter()
        .find(|r| r["ruleId"] == "AUD209-release-binary-asset")
        .expect("AUD209 in SARIF");
    let loc = &asset["locations"][0]["physicalLocation"];
    assert_eq!(
        loc["artifactLocation"]["uri"],
        ".github/workflows/release.yml"
    );
    assert_eq!(loc["region"]["startLine"], 11);
    assert_eq!(asset["properties"]["check"], "release");
}
