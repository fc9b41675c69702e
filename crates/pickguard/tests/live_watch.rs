//! `pickguard watch` with the real eBPF sensor (feature `live`; root).
//! One test function: the sensor is host-wide, so the detect and enforce
//! phases run one after the other, and only events whose command lines
//! carry this test's unique directory are considered.
#![cfg(all(feature = "live", target_os = "linux"))]

mod common;

use common::{Proc, venv_bin};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Watcher {
    _proc: Proc,
    events: mpsc::Receiver<serde_json::Value>,
    /// The start-up line that names the enforcement mechanism.
    ready: String,
}

fn start(extra: &[&str]) -> Watcher {
    let mut c = common::pickguard()
        .arg("watch")
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = c.stdout.take().unwrap();
    let stderr = c.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line)
                && tx.send(v).is_err()
            {
                break;
            }
        }
    });
    let mut err = BufReader::new(stderr);
    let mut log = String::new();
    loop {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "watch exited before ready: {log}"
        );
        log.push_str(&line);
        if line.contains("ready") {
            break;
        }
    }
    let ready = log.lines().last().unwrap_or("").to_owned();
    Watcher {
        _proc: Proc(c),
        events: rx,
        ready,
    }
}

/// The first alert whose parent command line mentions `token`, within `wait`.
fn alert_for(w: &Watcher, token: &str, wait: Duration) -> Option<serde_json::Value> {
    let deadline = std::time::Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match w.events.recv_timeout(left) {
            Ok(ev) if ev["event"] == "alert" && ev.to_string().contains(token) => return Some(ev),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

fn load(dir: &Path, script: &str, model: &str) {
    let out = Command::new(venv_bin("python"))
        .arg(dir.join(script))
        .arg(dir.join(model))
        .current_dir(dir)
        .output()
        .unwrap();
    let _ = out;
}

#[test]
fn detects_and_stops_the_shell_of_a_malicious_model() {
    let d = tempfile::Builder::new()
        .prefix("pgwatch")
        .tempdir()
        .unwrap();
    let dir = d.path();
    let token = dir.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::write(dir.join("load.py"), "import pickle, sys\ntry:\n    pickle.load(open(sys.argv[1], 'rb'))\nexcept Exception as e:\n    print(e)\n").unwrap();
    std::fs::write(
        dir.join("tload.py"),
        "import sys, torch\ntorch.load(sys.argv[1], weights_only=False)\n",
    )
    .unwrap();
    std::fs::copy(
        common::corpus().join("mal-reduce-os-system-p2.pkl"),
        dir.join("evil.pth"),
    )
    .unwrap();
    std::fs::copy(
        common::corpus().join("ok-plain-data-p2.pkl"),
        dir.join("ok.pth"),
    )
    .unwrap();
    std::fs::copy(
        common::corpus().join("mal-torch-zip.pt"),
        dir.join("evil-torch.pt"),
    )
    .unwrap();
    let marker = dir.join("pickguard-marker");

    // Detect only: the payload runs, the alert names the model and the shell.
    let w = start(&[]);
    assert!(w.ready.contains("enforcement: detect-only"), "{}", w.ready);
    load(dir, "load.py", "evil.pth");
    let ev =
        alert_for(&w, &token, Duration::from_secs(10)).expect("an alert for the malicious pickle");
    assert_eq!(ev["verdict"], "detected");
    assert!(ev["model"].as_str().unwrap().ends_with("evil.pth"), "{ev}");
    assert!(
        ["dash", "sh", "bash"].contains(&ev["name"].as_str().unwrap()),
        "{ev}"
    );
    assert!(
        ev["origin_cmdline"].as_str().unwrap().contains("load.py"),
        "{ev}"
    );
    assert!(marker.exists(), "detect mode does not block");
    std::fs::remove_file(&marker).unwrap();
    // A benign model load followed by nothing: no alert.
    load(dir, "load.py", "ok.pth");
    assert!(
        alert_for(&w, &token, Duration::from_secs(2)).is_none(),
        "benign load alerted"
    );
    // Real torch.load(weights_only=False) of a malicious checkpoint.
    load(dir, "tload.py", "evil-torch.pt");
    let ev = alert_for(&w, &token, Duration::from_secs(30)).expect("an alert for torch.load");
    assert!(
        ev["model"].as_str().unwrap().ends_with("evil-torch.pt"),
        "{ev}"
    );
    std::fs::remove_file(&marker).ok();
    drop(w);

    // Enforce: the shell never runs; the strongest mechanism that loads is named.
    let w = start(&["--enforce"]);
    assert!(
        w.ready.contains("enforcement: bpf-lsm-deny")
            || w.ready.contains("enforcement: bpf-sigkill-at-exec"),
        "{}",
        w.ready
    );
    load(dir, "load.py", "evil.pth");
    let ev = alert_for(&w, &token, Duration::from_secs(10)).expect("an alert under --enforce");
    assert!(
        ev["verdict"] == "killed" || ev["verdict"] == "denied",
        "{ev}"
    );
    assert!(!marker.exists(), "the shell ran despite --enforce");
    load(dir, "tload.py", "evil-torch.pt");
    let ev = alert_for(&w, &token, Duration::from_secs(30))
        .expect("an alert for torch.load under --enforce");
    assert_eq!(ev["verdict"], "killed");
    assert!(
        !marker.exists(),
        "torch payload's shell ran despite --enforce"
    );
}
