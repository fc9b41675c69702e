//! The command line as users and scripts use it.

use crate::common;

use std::io::Write;
use std::process::Stdio;

#[test]
fn exit_codes() {
    let c = common::corpus();
    let code = |args: &[&str]| common::run(args).status.code().unwrap();
    let p = |n: &str| c.join(n).display().to_string();
    assert_eq!(code(&["scan", &p("ok-plain-data-p4.pkl")]), 0);
    assert_eq!(code(&["scan", &p("mal-exec.pkl")]), 1);
    assert_eq!(code(&["scan", &p("trust-third-party-class.pkl")]), 1);
    assert_eq!(
        code(&[
            "scan",
            "--fail-on",
            "malicious",
            &p("trust-third-party-class.pkl")
        ]),
        0
    );
    assert_eq!(code(&["scan", "--fail-on", "never", &p("mal-exec.pkl")]), 0);
    assert_eq!(code(&["scan", "/nonexistent/model.pt"]), 2);
    // Malicious wins over an unreadable file.
    assert_eq!(
        code(&["scan", &p("mal-exec.pkl"), "/nonexistent/model.pt"]),
        1
    );
}

#[test]
fn missing_file_is_an_error_entry_not_a_crash() {
    let (doc, code) = common::scan_json(&[std::path::Path::new("/nonexistent/x.pt")]);
    assert_eq!(code, 2);
    assert_eq!(doc["files"][0]["verdict"], "error");
    assert!(
        doc["files"][0]["error"]
            .as_str()
            .unwrap()
            .contains("No such file")
    );
}

#[test]
fn stdin_dash() {
    let data = std::fs::read(common::corpus().join("mal-torch-zip.pt")).unwrap();
    let mut child = common::pickguard()
        .args(["scan", "--format", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["files"][0]["path"], "-");
    assert_eq!(doc["files"][0]["verdict"], "malicious");
    assert_eq!(doc["files"][0]["format"], "torch-zip");
}

#[test]
fn directory_scan_is_recursive_and_content_based() {
    let tmp = tempfile::tempdir().unwrap();
    let deep = tmp.path().join("a/b");
    std::fs::create_dir_all(&deep).unwrap();
    // A pickle named like an image, and a text file named like a model.
    std::fs::copy(common::corpus().join("mal-inst.pkl"), deep.join("cat.png")).unwrap();
    std::fs::write(tmp.path().join("model.pt"), b"not a model\n").unwrap();
    let (doc, code) = common::scan_json(&[tmp.path()]);
    assert_eq!(code, 1);
    let files = doc["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    let png = files
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with("cat.png"))
        .unwrap();
    assert_eq!(png["verdict"], "malicious");
    let pt = files
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with("model.pt"))
        .unwrap();
    // Content decides the format; a model's name on unreadable content makes
    // it inconclusive, never clean (issue 14, class 11).
    assert_eq!(pt["verdict"], "inconclusive");
    assert_eq!(pt["format"], "unknown-model");
    assert_eq!(doc["summary"]["malicious"], 1);
}

#[test]
fn text_output_has_verdict_lines_and_chains() {
    let c = common::corpus();
    let out = common::run(&[
        "scan",
        "--color",
        "never",
        &c.join("mal-reduce-os-system-p2.pkl").display().to_string(),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("MALICIOUS"), "{text}");
    assert!(
        text.contains("↳ posix.system('touch pickguard-marker')"),
        "{text}"
    );
    assert!(text.contains("PG101-dangerous-global"), "{text}");
    assert!(!text.contains('\u{1b}'), "no colour when not asked");
    let colored = common::run(&[
        "scan",
        "--color",
        "always",
        &c.join("mal-exec.pkl").display().to_string(),
    ]);
    assert!(
        String::from_utf8(colored.stdout)
            .unwrap()
            .contains('\u{1b}')
    );
}

#[test]
fn sarif_shape() {
    let c = common::corpus();
    let out = common::run(&["scan", "--format", "sarif", &c.display().to_string()]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["version"], "2.1.0");
    let run = &doc["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    for r in run["results"].as_array().unwrap() {
        let idx = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(
            rules[idx]["id"], r["ruleId"],
            "ruleIndex points at its rule"
        );
        assert!(["error", "warning", "note"].contains(&r["level"].as_str().unwrap()));
    }
}

#[test]
fn policy_config_allows_and_denies() {
    let c = common::corpus();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("policy.toml");
    std::fs::write(
        &cfg,
        "allow = [\"acme_models.*\"]\ndeny = [\"collections.OrderedDict\"]\n",
    )
    .unwrap();
    let cfgs = cfg.display().to_string();
    let run = |f: &str| {
        let out = common::run(&[
            "scan",
            "--format",
            "json",
            "--config",
            &cfgs,
            &c.join(f).display().to_string(),
        ]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["files"][0]["verdict"].as_str().unwrap().to_owned()
    };
    assert_eq!(run("trust-third-party-class.pkl"), "clean");
    assert_eq!(run("ok-torch-state-dict.pt"), "malicious");
    // --allow on the command line does the same as the config.
    let out = common::run(&[
        "scan",
        "--allow",
        "acme_models.Net",
        &c.join("trust-third-party-class.pkl").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    // A bad config is a clear error.
    std::fs::write(&cfg, "allow = 3\n").unwrap();
    let out = common::run(&[
        "scan",
        "--config",
        &cfgs,
        &c.join("mal-exec.pkl").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("policy file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run with standard output a pipe whose reader has already gone, as in
/// `pickguard ... | head` once head has exited.
fn with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let mut child = common::pickguard()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_pipe_ends_the_output_not_the_verdict() {
    let c = common::corpus();
    let dir = c.display().to_string();
    let evil = c.join("mal-exec.pkl").display().to_string();
    let plain = c.join("ok-plain-data-p4.pkl").display().to_string();
    // The verdict stays the exit status, for every output format.
    for f in ["text", "json", "sarif"] {
        let (code, err) = with_closed_stdout(&["scan", "-f", f, &dir]);
        assert_eq!(code, Some(1), "scan -f {f} of the corpus: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let (code, err) = with_closed_stdout(&["scan", &evil]);
    assert_eq!(code, Some(1), "{err}");
    let (code, err) = with_closed_stdout(&["scan", &plain]);
    assert_eq!(code, Some(0), "{err}");
    // Commands that print: no panic, no error, their own status.
    for args in [
        vec!["hash", dir.as_str()],
        vec!["rules"],
        vec!["completions", "bash"],
        vec!["watch", "--print-rules"],
    ] {
        let (code, err) = with_closed_stdout(&args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
    let audit = common::root().join("fixtures/audit").display().to_string();
    let (code, err) = with_closed_stdout(&["audit", &audit]);
    assert_eq!(code, Some(1), "audit of the exposed fixtures: {err}");
}

#[test]
fn sarif_is_refused_where_it_is_not_written() {
    let c = common::corpus();
    let model = c.join("ok-plain-data-p4.pkl").display().to_string();
    for args in [
        vec!["hash", &model],
        vec![
            "verify",
            &model,
            "--signature",
            "x.sig",
            "--public-key",
            "k.pem",
        ],
        vec!["convert", &model],
        vec!["inspect", &model],
        vec!["rules"],
    ] {
        let mut a = args.clone();
        a.extend(["--format", "sarif"]);
        let out = common::run(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{a:?}: {err}");
        assert!(
            err.contains("invalid value 'sarif'") && err.contains("text, json"),
            "{a:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{a:?} printed something");
    }
    // Where SARIF is written, it is SARIF.
    let out = common::run(&["scan", "--format", "sarif", &model]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sarif json");
    assert_eq!(v["version"], "2.1.0");
}

#[test]
fn help_teaches() {
    let out = common::run(&["scan", "--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "needs-trust",
        "inconclusive",
        "--format",
        "--fail-on",
        "Exit status",
    ] {
        assert!(text.contains(word), "--help lacks {word}");
    }
}

#[test]
fn output_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("r.json");
    let c = common::corpus();
    let out = common::run(&[
        "scan",
        "-f",
        "json",
        "-o",
        &out_path.display().to_string(),
        &c.join("mal-exec.pkl").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_path).unwrap()).unwrap();
    assert_eq!(doc["files"][0]["verdict"], "malicious");
}

#[test]
fn every_rule_is_documented_and_every_section_is_a_rule() {
    let doc = std::fs::read_to_string(common::root().join("docs/rules.md")).unwrap();
    // The registry as users see it (`pickguard rules`), which is built from
    // the scan and audit rule tables.
    let out = common::run(&["rules", "--format", "json"]);
    assert!(out.status.success());
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<String> = listed
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let mut expected: Vec<String> = pickguard_scan::Rule::ALL
        .iter()
        .map(|r| r.id().to_owned())
        .chain(pickguard_audit::Rule::ALL.iter().map(|r| r.id().to_owned()))
        .collect();
    expected.sort();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, expected);
    assert!(ids.contains(&"PG000-read-error".to_string()));
    for r in &listed {
        assert!(
            ["scan", "audit"].contains(&r["command"].as_str().unwrap()),
            "{r}"
        );
        assert!(!r["summary"].as_str().unwrap().is_empty(), "{r}");
        if r["command"] == "audit" {
            assert!(r["fix"].is_string(), "every audit rule has a fix: {r}");
        }
    }
    let one = common::run(&["rules", "aud004"]);
    assert!(String::from_utf8_lossy(&one.stdout).contains("AUD004-private-name-reaches-public"));
    // One rule's text is its whole description, as the docs give it.
    let one = common::run(&["rules", "PG301"]);
    let one = String::from_utf8_lossy(&one.stdout);
    assert!(
        one.contains("--timeout") && one.contains("docs/rules.md#pg301"),
        "{one}"
    );
    // The file is generated from the tables, byte for byte.
    let md = common::run(&["rules", "--format", "markdown"]);
    assert!(md.status.success());
    assert!(
        String::from_utf8(md.stdout).unwrap() == doc,
        "docs/rules.md is not what the rule tables make: run `cargo dev docs`"
    );
    assert_eq!(common::run(&["rules", "PG999"]).status.code(), Some(2));
    for id in &ids {
        assert!(doc.contains(&format!("`{id}`")), "docs/rules.md lacks {id}");
        assert!(
            doc.contains(&format!("## {}\n", id.to_lowercase())),
            "docs/rules.md lacks a section for {id}"
        );
    }
    // ... and no section documents a rule that does not exist.
    for line in doc.lines().filter(|l| l.starts_with("## ")) {
        let anchor = &line[3..];
        assert!(
            ids.iter().any(|i| i.to_lowercase() == anchor),
            "docs/rules.md has a section for unknown rule {anchor}"
        );
    }
}

/// Issue 14, classes 9–11 and 13: nothing unread is ever called clean, and
/// nothing in a file can forge the report.
#[test]
fn inputs_that_were_not_read_are_never_clean() {
    let m = common::corpus().join("mal-reduce-os-system-p2.pkl");
    let d = tempfile::tempdir().unwrap();
    // A pipe as a path (what `pickguard scan /dev/stdin` and `<(cat f)` give).
    let out = common::pickguard()
        .args(["scan", "--no-progress", "/dev/stdin"])
        .stdin(std::fs::File::open(&m).unwrap())
        .output()
        .unwrap();
    // stdin of a file is a regular file; force a real pipe too.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut child = common::pickguard()
        .args(["scan", "--no-progress", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        i.write_all(&std::fs::read(&m).unwrap()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.starts_with("MALICIOUS"), "{text}");
    // A FIFO nobody writes to is an error, not a hang and not clean.
    let fifo = d.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let out = common::run(&["scan", fifo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ERROR"));
    // A device is refused; a /proc file (size 0) is read, not taken as empty.
    let out = common::run(&["scan", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(2));
    // Random bytes and an empty file named like models are inconclusive.
    std::fs::write(d.path().join("random.pt"), b"\x13\x37 not a model at all").unwrap();
    std::fs::write(d.path().join("empty.ckpt"), b"").unwrap();
    let (doc, code) = common::scan_json(&[
        d.path().join("random.pt").as_path(),
        d.path().join("empty.ckpt").as_path(),
    ]);
    assert_eq!(code, 2);
    for f in doc["files"].as_array().unwrap() {
        assert_eq!(f["verdict"], "inconclusive", "{f}");
    }
    // A directory with no model files: nothing was checked, exit 2.
    let docs = d.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(docs.join("README.md"), "hello").unwrap();
    let out = common::run(&["scan", docs.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was checked"));
}

#[test]
fn symlinked_models_are_scanned_like_a_hugging_face_cache() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("blobs")).unwrap();
    std::fs::create_dir_all(d.path().join("snapshots/abc")).unwrap();
    std::fs::copy(
        common::corpus().join("mal-reduce-os-system-p2.pkl"),
        d.path().join("blobs/5f1e"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "../../blobs/5f1e",
        d.path().join("snapshots/abc/pytorch_model.bin"),
    )
    .unwrap();
    let (doc, code) = common::scan_json(&[d.path().join("snapshots").as_path()]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["files"][0]["verdict"], "malicious");
    // --no-follow: the link is not read, and so nothing was checked.
    let out = common::run(&[
        "scan",
        "--no-follow",
        d.path().join("snapshots").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn names_from_a_file_cannot_forge_report_lines() {
    // A pickle whose STACK_GLOBAL strings carry a newline and an ANSI escape:
    // protocol 4, SHORT_BINUNICODE module and name, STACK_GLOBAL, STOP.
    let module = "os\nCLEAN         fake.pt (pickle)\x1b[2K";
    let name = "system";
    let mut p = vec![0x80, 4];
    for s in [module, name] {
        p.push(0x8c);
        p.push(s.len() as u8);
        p.extend_from_slice(s.as_bytes());
    }
    p.extend_from_slice(&[0x93, b'.']);
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("forge.pkl");
    std::fs::write(&f, &p).unwrap();
    let out = common::run(&["scan", "--color", "never", f.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.lines().any(|l| l.starts_with("CLEAN")),
        "a forged line was printed:\n{text}"
    );
    assert!(!text.contains('\x1b'), "{text:?}");
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn watch_refuses_bad_rules_and_allowances_before_loading_anything() {
    // Allowances name where a model load came from, never just a program.
    for bad in [
        "sh",
        "program=sh",
        "origin=",
        "origin=/a,origin=/b",
        "comm=sh",
    ] {
        let out = common::run(&["watch", "--allow", bad]);
        assert_eq!(out.status.code(), Some(2), "--allow {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--allow"), "{bad}: {err}");
    }
    let d = tempfile::tempdir().unwrap();
    let rules = d.path().join("rules.toml");
    std::fs::write(&rules, "windw = 3\n").unwrap();
    let out = common::run(&["watch", "--rules", rules.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("windw"));
    let out = common::run(&["watch", "--window", "0"]);
    assert_eq!(out.status.code(), Some(2));
    // The default rule file prints, parses, and names what the docs promise.
    let out = common::run(&["watch", "--print-rules"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let doc: toml::Value = toml::from_str(&text).unwrap();
    let models: Vec<&str> = doc["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for ext in [
        ".pth.tar", ".sav", ".p", ".pkl.gz", ".joblib", ".npy", ".npz", ".h5", ".keras",
    ] {
        assert!(
            models.contains(&ext),
            "{ext} missing from the default models"
        );
    }
    std::fs::write(&rules, &*text).unwrap();
    let out = common::run(&["watch", "--rules", rules.to_str().unwrap(), "--allow", "x"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"),
        "the printed rules load as a rule file"
    );
}

/// Issue 17: an ONNX tensor's external data behind a symbolic link that leaves
/// the model's directory is malicious; read from standard input, where the
/// directory is unknown, the external data is inconclusive, never clean.
#[test]
fn onnx_external_data_through_a_link_and_from_stdin() {
    let src = common::corpus().join("ok-onnx-external.onnx");
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(&src, d.path().join("model.onnx")).unwrap();
    std::fs::write(d.path().join("outside"), vec![0u8; 16]).unwrap();
    let inner = d.path().join("m");
    std::fs::create_dir(&inner).unwrap();
    std::fs::copy(&src, inner.join("ok-onnx-external.onnx")).unwrap();
    std::os::unix::fs::symlink("../outside", inner.join("ok-onnx-external.onnx.data")).unwrap();
    let out = common::run(&[
        "scan",
        inner.join("ok-onnx-external.onnx").to_str().unwrap(),
        "--format",
        "json",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &doc["files"][0];
    assert_eq!(f["verdict"], "malicious", "{doc}");
    assert!(
        f["findings"][0]["rule"]
            .as_str()
            .unwrap()
            .starts_with("PG116"),
        "{doc}"
    );
    // External data that is a directory inside the model's directory is not
    // data: inconclusive, never clean.
    let dirdata = d.path().join("dirdata");
    std::fs::create_dir(&dirdata).unwrap();
    std::fs::copy(&src, dirdata.join("ok-onnx-external.onnx")).unwrap();
    std::fs::create_dir(dirdata.join("ok-onnx-external.onnx.data")).unwrap();
    let out = common::run(&[
        "scan",
        dirdata.join("ok-onnx-external.onnx").to_str().unwrap(),
        "--format",
        "json",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["files"][0]["verdict"], "inconclusive", "{doc}");
    // The same model read from a pipe: the data file cannot be checked.
    let out = common::pickguard()
        .args(["scan", "-", "--format", "json"])
        .stdin(std::fs::File::open(&src).unwrap())
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["files"][0]["verdict"], "inconclusive", "{doc}");
    assert_eq!(out.status.code(), Some(2));
}

/// Every budget is a flag whose `--help` names the real default, and a
/// `[limits]` key; a file past one is inconclusive (exit 2), never clean;
/// the flag beats the policy file; bad values are refused.
#[test]
fn analysis_budgets_are_settable_and_fail_closed() {
    let help = String::from_utf8(common::run(&["scan", "--help"]).stdout).unwrap();
    let defaults = pickguard_scan::ScanOptions::default();
    for b in pickguard_scan::budgets::BUDGETS {
        let flag = format!("--{}", b.key.replace('_', "-"));
        let v = pickguard_scan::Budgets::current(&defaults, b.key).unwrap();
        let shown = format!("[default: {}]", pickguard_scan::budgets::show(b, v));
        let at = help
            .find(&format!("{flag} <"))
            .unwrap_or_else(|| panic!("{flag} missing from scan --help"));
        let next = help[at + 2..]
            .find("\n      --")
            .map_or(help.len(), |n| at + 2 + n);
        let text = help[at..next]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            text.contains(&shown),
            "{flag}: help does not say {shown}: {text}"
        );
    }
    let c = common::corpus();
    let sd = c.join("ok-torch-state-dict.pt");
    let dir = tempfile::tempdir().unwrap();
    let scan = |args: &[&str]| {
        let mut a = vec!["scan", "-f", "json"];
        a.extend_from_slice(args);
        let out = common::run(&a);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (
            doc,
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let p = sd.to_str().unwrap();
    let (doc, code, _) = scan(&[p]);
    assert_eq!(
        (code, doc["files"][0]["verdict"].as_str()),
        (0, Some("clean"))
    );
    // A pickle budget and the member budget, from the command line.
    for args in [
        ["--max-nodes", "5"],
        ["--max-members", "2"],
        ["--max-ops", "3"],
    ] {
        let (doc, code, _) = scan(&[args[0], args[1], p]);
        assert_eq!(code, 2, "{args:?}: {doc}");
        let f = &doc["files"][0];
        assert_eq!(f["verdict"], "inconclusive", "{args:?}: {doc}");
        assert!(
            f["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["rule"] == "PG301-budget-exceeded"),
            "{args:?}: {doc}"
        );
    }
    // From the policy file; the flag wins over it.
    let cfg = dir.path().join("policy.toml");
    std::fs::write(&cfg, "[limits]\nmax_nodes = \"5\"\n").unwrap();
    let c = cfg.to_str().unwrap();
    assert_eq!(scan(&["--config", c, p]).1, 2);
    let (doc, code, _) = scan(&["--config", c, "--max-nodes", "1M", p]);
    assert_eq!(code, 0, "{doc}");
    // Nonsense is an error naming the flag or key, not a default.
    for (args, says) in [
        (vec!["--max-nodes", "0", p], "--max-nodes"),
        (vec!["--max-depth", "deep", p], "--max-depth"),
        (vec!["--max-decompressed=-1G", p], "--max-decompressed"),
    ] {
        let (_, code, err) = scan(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    std::fs::write(&cfg, "[limits]\nmax_nodez = 5\n").unwrap();
    let (_, code, err) = scan(&["--config", c, p]);
    assert_eq!(code, 2);
    assert!(err.contains("max_nodez"), "{err}");
    // convert takes the same flags: past a budget it refuses to convert.
    let out = common::run(&[
        "convert",
        "--max-nodes",
        "5",
        p,
        "-o",
        dir.path().join("o.safetensors").to_str().unwrap(),
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!dir.path().join("o.safetensors").exists());
}

/// A Keras model directory (an unpacked `.keras`, a hub download) is loaded
/// by `keras.saving.load_model(dir)` from its config.json: scanned, not
/// skipped as a non-model file, whether or not its siblings are there (a
/// remote file has none to look at; Keras deserialises the config before
/// it looks for weights). A config.json that is not a Keras object config
/// (a Hugging Face transformers config) is not judged as Keras.
#[test]
fn keras_model_directories_have_their_config_scanned() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("config.json"),
        r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64}"#,
    )
    .unwrap();
    let (_, code) = common::scan_json(&[d.path()]);
    assert_eq!(
        code, 2,
        "a transformers config is not a model: nothing checked"
    );
    let config = r#"{"module": "keras.layers", "class_name": "TorchModuleWrapper",
        "config": {"name": "w", "module": "gASMBXBvc2l4jAZzeXN0ZW2TjAJpZIVSLg=="}}"#;
    std::fs::write(d.path().join("config.json"), config).unwrap();
    for with_siblings in [false, true] {
        if with_siblings {
            std::fs::write(
                d.path().join("metadata.json"),
                r#"{"keras_version": "3.15.1"}"#,
            )
            .unwrap();
        }
        let (doc, code) = common::scan_json(&[d.path()]);
        assert_eq!(code, 1, "{doc}");
        let f = doc["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| {
                f["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("config.json"))
            })
            .unwrap_or_else(|| panic!("{doc}"));
        assert_eq!(f["verdict"], "malicious", "{doc}");
        assert_eq!(f["format"], "keras-config");
    }
}

/// `--quarantine DIR`: malicious files (a symbolic link's target, not the
/// link) move into DIR/<sha256>/<name> with a manifest line each; clean
/// files stay; the bytes are kept exactly; a second copy of the same bytes
/// does not overwrite the first; afterwards the directory scans clean.
#[test]
fn quarantine_moves_malicious_files_aside_with_a_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let (models, q) = (tmp.path().join("models"), tmp.path().join("q"));
    let blobs = tmp.path().join("cache/blobs");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::create_dir_all(&blobs).unwrap();
    let corpus = common::corpus();
    let evil = std::fs::read(corpus.join("mal-getattr-import.pkl")).unwrap();
    std::fs::write(models.join("evil.pkl"), &evil).unwrap();
    std::fs::write(models.join("again.pkl"), &evil).unwrap();
    std::fs::copy(corpus.join("ok-torch-state-dict.pt"), models.join("ok.pt")).unwrap();
    // A Hugging Face cache keeps the bytes in blobs/ and links to them.
    std::fs::copy(corpus.join("mal-build-on-module.pkl"), blobs.join("abc")).unwrap();
    std::os::unix::fs::symlink("../cache/blobs/abc", models.join("linked.pkl")).unwrap();
    // Scan `models` with `extra` flags: (exit code, standard error).
    let scan = |extra: &[&str]| {
        let out = common::pickguard()
            .arg("scan")
            .args(extra)
            .arg(&models)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let qarg = q.to_str().unwrap();
    let (code, err) = scan(&["--no-follow", "--quarantine", qarg]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("quarantined"), "{err}");
    assert!(!models.join("evil.pkl").exists() && !models.join("again.pkl").exists());
    assert!(models.join("ok.pt").exists(), "a clean file was moved");
    let manifest: Vec<serde_json::Value> = std::fs::read_to_string(q.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(manifest.len(), 2, "{manifest:?}");
    for m in &manifest {
        let stored = std::path::Path::new(m["stored"].as_str().unwrap());
        assert_eq!(std::fs::read(stored).unwrap(), evil);
        assert!(stored.starts_with(q.join(m["sha256"].as_str().unwrap())));
        assert!(
            m["rules"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r.as_str().unwrap().starts_with("PG1"))
        );
    }
    // With links followed (the default), the link's target is what goes.
    let (code, err) = scan(&["--quarantine", qarg]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        !blobs.join("abc").exists(),
        "the blob a link points to is still there"
    );
    assert!(
        models.join("linked.pkl").symlink_metadata().is_ok(),
        "the link itself is left, dangling"
    );
    let lines = std::fs::read_to_string(q.join("manifest.jsonl")).unwrap();
    assert!(
        lines.lines().count() == 3 && lines.contains("blobs/abc"),
        "{lines}"
    );
    // The dangling link is an error (nothing can load it); without it, what
    // is left scans clean.
    assert_eq!(scan(&[]).0, Some(2));
    std::fs::remove_file(models.join("linked.pkl")).unwrap();
    let (code, err) = scan(&[]);
    assert_eq!(code, Some(0), "{err}");
}

/// What users read, as snapshots (`tests/snapshots/`; review changes with
/// `cargo insta review`, or rerun with INSTA_UPDATE=always and read the diff).
mod snapshots {
    use super::common;

    /// Run from the repository root with relative paths, so reports name
    /// files as a user typing the command would see them.
    fn out(args: &[&str]) -> String {
        let o = common::pickguard()
            .args(args)
            .current_dir(common::root())
            .env("NO_COLOR", "1")
            .env("COLUMNS", "100")
            .output()
            .expect("run");
        String::from_utf8(o.stdout)
            .expect("utf-8")
            .replace(env!("CARGO_PKG_VERSION"), "[version]")
    }

    const FILES: [&str; 5] = [
        "fixtures/corpus/mal-exec.pkl",
        "fixtures/corpus/ok-plain-data-p4.pkl",
        "fixtures/corpus/trust-torchscript.pt",
        "fixtures/corpus/mal-keras-lambda.h5",
        "fixtures/corpus/inc-keras-h5-dense-attributes.h5",
    ];

    #[test]
    fn scan_text_report() {
        let mut a = vec!["scan", "-v"];
        a.extend(FILES);
        insta::assert_snapshot!(out(&a));
    }

    #[test]
    fn scan_json_report() {
        let mut a = vec!["scan", "-f", "json"];
        a.extend(FILES);
        insta::assert_snapshot!(out(&a));
    }

    #[test]
    fn scan_sarif_report() {
        insta::assert_snapshot!(out(&["scan", "-f", "sarif", FILES[0], FILES[3]]));
    }

    #[test]
    fn audit_text_report() {
        insta::assert_snapshot!(out(&["audit", "fixtures/audit/decl-pyproject-private"]));
    }

    #[test]
    fn help_pages() {
        for cmd in ["scan", "convert", "audit", "run", "watch", "firewall serve"] {
            let mut a: Vec<&str> = cmd.split(' ').collect();
            a.push("--help");
            insta::assert_snapshot!(format!("help_{}", cmd.replace(' ', "_")), out(&a));
        }
    }
}
