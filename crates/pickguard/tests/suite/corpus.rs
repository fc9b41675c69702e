//! The committed corpus: every fixture gets the verdict and rules its manifest names.

use crate::common;

#[test]
fn corpus_verdicts_match_manifest() {
    let dir = common::corpus();
    let fixtures = common::manifest(&dir);
    assert!(
        fixtures.len() >= 50,
        "corpus unexpectedly small: {}",
        fixtures.len()
    );
    // Each verdict class is represented, so the test can fail in each direction.
    for v in ["clean", "needs-trust", "malicious"] {
        assert!(fixtures.iter().any(|f| f.expect == v), "no {v} fixture");
    }
    let bad = common::check_corpus(&dir);
    assert!(bad.is_empty(), "mismatches:\n{}", bad.join("\n"));
}

#[test]
fn every_malicious_fixture_names_a_call_or_structure() {
    // Malicious files carry at least one finding with a rule that decides "malicious".
    let dir = common::corpus();
    let (doc, code) = common::scan_json(&[&dir]);
    assert_eq!(code, 1);
    for f in doc["files"].as_array().unwrap() {
        if f["verdict"] == "malicious" {
            let n = f["findings"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["rule"].as_str().unwrap().starts_with("PG1"))
                .count();
            assert!(n > 0, "{} is malicious without a PG1xx finding", f["path"]);
        }
    }
}

#[test]
fn call_chains_are_readable() {
    let dir = common::corpus();
    let (doc, _) = common::scan_json(&[
        &dir.join("mal-getattr-import.pkl"),
        &dir.join("mal-reduce-os-system-p0.pkl"),
    ]);
    let text = doc.to_string();
    assert!(
        text.contains("getattr(builtins.__import__('os'), 'system')('touch pickguard-marker')"),
        "{text}"
    );
    assert!(
        text.contains("posix.system('touch pickguard-marker')"),
        "{text}"
    );
}

#[test]
fn nested_pickles_are_scanned() {
    let dir = common::corpus();
    let (doc, _) = common::scan_json(&[&dir.join("mal-nested-pickle-loads.pkl")]);
    let findings = doc["files"][0]["findings"].as_array().unwrap();
    let inner = findings
        .iter()
        .find(|f| f["global"] == "posix.system")
        .expect("inner payload found");
    assert!(
        inner["location"]["member"]
            .as_str()
            .unwrap()
            .starts_with("<pickle@"),
        "{inner}"
    );
    assert!(
        doc.to_string()
            .contains("_pickle.loads(b'\\\\x80\\\\x02cposix"),
        "{doc}"
    );
}

#[test]
fn frame_divergence_reports_both_readings() {
    let dir = common::corpus();
    let (doc, _) = common::scan_json(&[&dir.join("mal-frame-divergence.pkl")]);
    let findings = doc["files"][0]["findings"].as_array().unwrap();
    let sys = findings
        .iter()
        .find(|f| f["rule"] == "PG101-dangerous-global")
        .expect("os.system found");
    // The call exists only in the file-object reading.
    assert_eq!(sys["location"]["view"], "file-no-peek");
    assert!(findings.iter().any(|f| f["rule"] == "PG108-frame-tamper"));
}

#[test]
fn buffered_file_reading_mixes_frames() {
    // Real CPython runs this payload only through pickle.load(open(f, 'rb'))
    // (the live test checks): the big first frame is read exactly, the small
    // second one through peek().
    let dir = common::corpus();
    let (doc, code) = common::scan_json(&[&dir.join("mal-frame-mixed.pkl")]);
    assert_eq!(code, 1, "exit 1 means malicious: {doc}");
    let findings = doc["files"][0]["findings"].as_array().unwrap();
    let call = findings
        .iter()
        .find(|f| {
            f["rule"] == "PG101-dangerous-global"
                && f["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("calls os.system")
        })
        .expect("the os.system call is found");
    assert_eq!(call["location"]["view"], "file-mixed-1", "{call}");
    // Neither pure reading calls it.
    assert!(!findings.iter().any(|f| {
        f["message"]
            .as_str()
            .unwrap()
            .starts_with("calls os.system")
            && f["location"]["view"] != "file-mixed-1"
    }));
}

#[test]
fn torch_checkpoint_counts_tensors_and_is_clean() {
    let dir = common::corpus();
    let (doc, code) = common::scan_json(&[
        &dir.join("ok-torch-state-dict.pt"),
        &dir.join("ok-torch-legacy.pt"),
    ]);
    assert_eq!(code, 0, "{doc}");
    let files = doc["files"].as_array().unwrap();
    assert_eq!(files[0]["format"], "torch-zip");
    assert_eq!(files[1]["format"], "torch-legacy");
    // 16 and 14 entries; "tied" is lin.weight again (memoized: one rebuild call).
    assert_eq!(files[0]["tensors"], 15);
    assert_eq!(files[1]["tensors"], 13);
}
