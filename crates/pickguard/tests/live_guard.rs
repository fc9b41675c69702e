//! `pickguard run`: real Python and torch loading malicious and benign
//! models inside the sandbox (feature `live`; Linux with Landlock).
#![cfg(all(feature = "live", target_os = "linux"))]

mod common;

use common::venv_bin;
use std::process::Command;

/// `pickguard run ARGS -- python load.py PROGRAM_ARGS` in `dir`.
fn run_in(dir: &std::path::Path, args: &[&str], program_args: &[&str]) -> (i32, String, String) {
    let py = venv_bin("python");
    let out = common::pickguard()
        .current_dir(dir)
        .arg("run")
        .args(args)
        .arg("--")
        .arg(&py)
        .arg("load.py")
        .args(program_args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn setup(script: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("load.py"), script).unwrap();
    for f in [
        "mal-reduce-os-system-p2.pkl",
        "mal-torch-zip.pt",
        "ok-torch-state-dict.pt",
    ] {
        std::fs::copy(common::corpus().join(f), d.path().join(f)).unwrap();
    }
    d
}

#[test]
fn malicious_pickle_cannot_execute_a_shell() {
    let d = setup(
        "import pickle, os\npickle.load(open('mal-reduce-os-system-p2.pkl', 'rb'))\nprint('marker', os.path.exists('pickguard-marker'))\n",
    );
    // Unsandboxed, the payload really runs.
    let out = Command::new(venv_bin("python"))
        .arg("load.py")
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("marker True"));
    std::fs::remove_file(d.path().join("pickguard-marker")).unwrap();
    // Sandboxed, the shell is refused and reported; the load still finishes.
    let (code, stdout, stderr) = run_in(d.path(), &[], &["mal-reduce-os-system-p2.pkl"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("marker False"), "{stdout}");
    assert!(
        stderr.contains("blocked: execute") && stderr.contains("/sh"),
        "{stderr}"
    );
    assert!(!d.path().join("pickguard-marker").exists());
}

#[test]
fn torch_load_of_a_malicious_checkpoint_is_contained_and_benign_loads_work() {
    let d = setup(
        "import sys, os, torch\nobj = torch.load(sys.argv[1] if len(sys.argv) > 1 else 'mal-torch-zip.pt', weights_only=False)\nprint('loaded', type(obj).__name__, 'marker', os.path.exists('pickguard-marker'))\n",
    );
    let (code, stdout, stderr) = run_in(d.path(), &["-q"], &["mal-torch-zip.pt"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("marker False"), "{stdout}\n{stderr}");
    assert!(stderr.contains("blocked: execute /bin/sh"), "{stderr}");
    let py = venv_bin("python");
    let out = common::pickguard()
        .current_dir(d.path())
        .args(["run", "-q", "--"])
        .arg(&py)
        .args(["load.py", "ok-torch-state-dict.pt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("loaded OrderedDict"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn network_and_writes_are_denied_and_exit_status_passes_through() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let d = setup(&format!(
        "import socket, sys\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n    print('network reached')\nexcept OSError as e:\n    print('network refused', e.errno)\n\
         try:\n    open('written.txt', 'w').write('x')\n    print('write ok')\nexcept OSError as e:\n    print('write refused', e.errno)\n\
         try:\n    open('out/ok.txt', 'w').write('x')\n    print('allowed write ok')\nexcept OSError as e:\n    print('allowed write refused', e.errno)\nsys.exit(7)\n"
    ));
    std::fs::create_dir(d.path().join("out")).unwrap();
    let out_dir = d.path().join("out");
    let (code, stdout, stderr) = run_in(
        d.path(),
        &["-q", "--allow-write", out_dir.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 7, "{stdout}{stderr}");
    assert!(stdout.contains("network refused 13"), "{stdout}");
    assert!(
        stderr.contains("blocked: open a network socket (AF_INET"),
        "{stderr}"
    );
    assert!(stdout.contains("write refused 13"), "{stdout}");
    assert!(stdout.contains("allowed write ok"), "{stdout}");
    assert!(!d.path().join("written.txt").exists());
    assert!(d.path().join("out/ok.txt").exists());
    // --allow-network lets it through.
    let (_, stdout, _) = run_in(
        d.path(),
        &[
            "-q",
            "--allow-network",
            "--allow-write",
            out_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(stdout.contains("network reached"), "{stdout}");
    drop(listener);
}

#[test]
fn scripts_as_programs_are_refused_with_a_hint() {
    let d = tempfile::tempdir().unwrap();
    let shim = d.path().join("python3");
    std::fs::write(&shim, "#!/bin/sh\nexec python3 \"$@\"\n").unwrap();
    let out = common::pickguard()
        .args(["run", "--"])
        .arg(&shim)
        .arg("-c")
        .arg("1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a script"));
}
