//! `pickguard run`: real Python and torch loading malicious and benign
//! models inside the sandbox (feature `live`; Linux with Landlock).
#![cfg(all(feature = "live", target_os = "linux"))]

use crate::common;

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

/// Processes (pids) whose environment holds exactly `mark` (`NAME=value`).
fn processes_with(mark: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == mark.as_bytes()))
                .unwrap_or(false)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
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
    // Sandboxed, the shell is refused and reported; the load still finishes,
    // and the exit status says something was blocked.
    let report = d.path().join("blocked.jsonl");
    let (code, stdout, stderr) = run_in(
        d.path(),
        &["--report", report.to_str().unwrap()],
        &["mal-reduce-os-system-p2.pkl"],
    );
    assert_eq!(code, 126, "{stderr}");
    assert!(stdout.contains("marker False"), "{stdout}");
    assert!(
        stderr.contains("blocked: execute") && stderr.contains("/sh"),
        "{stderr}"
    );
    assert!(!d.path().join("pickguard-marker").exists());
    // The machine-readable report names the exec.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&report)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().any(|b| b["kind"] == "exec"
            && b["target"].as_str().unwrap().ends_with("/sh")
            && b["probe"] == false),
        "{lines:?}"
    );
}

#[test]
fn torch_load_of_a_malicious_checkpoint_is_contained_and_benign_loads_work() {
    let d = setup(
        "import sys, os, torch\nobj = torch.load(sys.argv[1] if len(sys.argv) > 1 else 'mal-torch-zip.pt', weights_only=False)\nprint('loaded', type(obj).__name__, 'marker', os.path.exists('pickguard-marker'))\n",
    );
    let (code, stdout, stderr) = run_in(d.path(), &["-q"], &["mal-torch-zip.pt"]);
    assert_eq!(code, 126, "{stderr}");
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
    // A benign load exits 0: import torch's library probes are refused but
    // not counted, and summarised on one line rather than one per attempt.
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("loaded OrderedDict"),
        "{err}"
    );
    assert!(!err.contains("blocked: execute"), "{err}");
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
    // As root the sandbox runs as uid 65534: an allowed directory must be writable by it.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let (code, stdout, stderr) = run_in(
        d.path(),
        &[
            "-q",
            "--no-fail-on-block",
            "--allow-write",
            out_dir.to_str().unwrap(),
        ],
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
fn a_wrapper_script_runs_the_interpreter_it_names() {
    let d = tempfile::tempdir().unwrap();
    let shim = d.path().join("python3");
    let py = venv_bin("python");
    std::fs::write(&shim, format!("#!/bin/sh\nexec {} \"$@\"\n", py.display())).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = common::pickguard()
        .args(["run", "-q", "--"])
        .arg(&shim)
        .arg("-c")
        .arg("import sys; print('ran', sys.prefix)")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ran "),
        "{err}"
    );
    // A script that is not a Python wrapper is refused with a hint.
    let sh = d.path().join("tool");
    std::fs::write(&sh, "#!/bin/sh\necho hi\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = common::pickguard()
        .args(["run", "--"])
        .arg(&sh)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a script"));
}

/// The escapes of issue 13, each tried from inside the sandbox.
#[test]
fn the_sandbox_holds_against_known_escapes() {
    let d = tempfile::tempdir().unwrap();
    // A local service on a pathname UNIX socket (the docker.sock class).
    let sock = d.path().join("service.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    let probe = format!(
        r#"
import os, socket, ctypes, fcntl, termios, time, sys
libc = ctypes.CDLL(None, use_errno=True)
def t(label, f):
    try:
        r = f()
        print(label, "ALLOWED", repr(r)[:80])
    except Exception as e:
        print(label, "DENIED", getattr(e, "errno", type(e).__name__))
def sysc(nr, *a):
    r = libc.syscall(nr, *a)
    if r < 0:
        raise OSError(ctypes.get_errno(), "syscall")
    return r
t("secret", lambda: os.environ["AWS_SECRET_ACCESS_KEY"])
t("shadow", lambda: open("/etc/shadow").read())
t("init-environ", lambda: b"AWS_SECRET" in open("/proc/1/environ", "rb").read() or 1/0)
t("unix-socket", lambda: socket.socket(socket.AF_UNIX).connect({sock:?}))
t("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", 9)))
buf = ctypes.create_string_buffer(120)
t("io_uring", lambda: sysc(425, 8, buf))
t("bpf", lambda: sysc(321, 0, buf, 64))
t("mknod", lambda: os.mknod(os.environ["TMPDIR"] + "/null", 0o20666, os.makedev(1, 3)))
t("unshare", lambda: sysc(272, 0x10000000))
t("tiocsti", lambda: fcntl.ioctl(0, termios.TIOCSTI, b"x"))
t("ptrace", lambda: sysc(101, 16, 1, 0, 0))
# A double-forked, setsid daemon that outlives the command unless killed.
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(60)
    os._exit(0)
time.sleep(0.3)
print("done")
"#
    );
    std::fs::write(d.path().join("probe.py"), probe).unwrap();
    // stdin is a pseudo-terminal, as in an interactive shell.
    let driver = format!(
        "import os, pty, subprocess, sys
m, s = pty.openpty()
p = subprocess.run(sys.argv[1:], stdin=s, capture_output=True, env=dict(os.environ, AWS_SECRET_ACCESS_KEY='AKIA-TEST-SECRET', PICKGUARD_DAEMON_MARK='{}'))
sys.stdout.write(p.stdout.decode()); sys.stderr.write(p.stderr.decode()); sys.exit(p.returncode)
",
        d.path().display()
    );
    let out = Command::new(venv_bin("python"))
        .arg("-c")
        .arg(driver)
        .arg(env!("CARGO_BIN_EXE_pickguard"))
        .args(["run", "-q", "--env", "PICKGUARD_DAEMON_MARK", "--"])
        .arg(venv_bin("python"))
        .arg("probe.py")
        .current_dir(d.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("done"), "{stdout}{stderr}");
    for label in [
        "secret",
        "shadow",
        "init-environ",
        "unix-socket",
        "udp",
        "io_uring",
        "bpf",
        "mknod",
        "unshare",
        "tiocsti",
        "ptrace",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{label} DENIED"))),
            "{label} was not denied:\n{stdout}{stderr}"
        );
    }
    assert!(
        listener.accept().is_err(),
        "the UNIX socket service was reached"
    );
    // The daemon died with the sandbox: no process carries its mark.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mark = format!("PICKGUARD_DAEMON_MARK={}", d.path().display());
    let alive = processes_with(&mark);
    assert!(
        alive.is_empty(),
        "daemon(s) outlived the sandbox: {alive:?}"
    );
}

/// Without namespaces (`--no-namespaces`, or a kernel that refuses them) the
/// banner says what is not enforced, and daemons still die with the program.
#[test]
fn the_fallback_says_what_it_cannot_do_and_still_kills_daemons() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("load.py"),
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n    os._exit(0)\ntime.sleep(0.3)\nprint('done')\n",
    )
    .unwrap();
    let mark = format!("PICKGUARD_DAEMON_MARK={}", d.path().display());
    let t = std::time::Instant::now();
    let out = common::pickguard()
        .current_dir(d.path())
        .env("PICKGUARD_DAEMON_MARK", d.path())
        .args([
            "run",
            "--no-namespaces",
            "--env",
            "PICKGUARD_DAEMON_MARK",
            "--",
        ])
        .arg(venv_bin("python"))
        .arg("load.py")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(30),
        "run waited for the daemon"
    );
    assert!(err.contains("view: NOT isolated"), "{err}");
    let alive = processes_with(&mark).len();
    assert_eq!(alive, 0, "a daemon outlived the sandbox");
}

/// Regressions from an adversarial review of `run`.
#[test]
fn review_regressions_host_view_fds_death_and_timeouts() {
    let d = tempfile::tempdir().unwrap();
    // A secret that is not an argument: invisible inside, even when the
    // interpreter is spelled /bin/python3 (whose prefix would be /).
    let secret = d.path().join("id_rsa");
    std::fs::write(&secret, "PRIVATE KEY").unwrap();
    let code = format!(
        "import os\ntry:\n    open({:?}).read(); print('secret READ')\nexcept OSError as e:\n    print('secret denied', e.errno)\ntry:\n    os.fstat(3); print('fd3 OPEN')\nexcept OSError as e:\n    print('fd3 closed', e.errno)\nprint(sorted(os.listdir('/')))\n",
        secret.display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg("exec 3</etc/hostname; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_pickguard"))
        .args(["run", "-q", "--", "/bin/python3", "-c", &code])
        .current_dir(d.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("secret denied"), "{stdout}{stderr}");
    assert!(
        stdout.contains("fd3 closed 9"),
        "an inherited fd reached the program: {stdout}"
    );
    assert!(
        !stdout.contains("'work'") && !stdout.contains("'root'"),
        "host root visible: {stdout}"
    );

    // The program cannot unchain itself from run: clearing the parent-death
    // signal is refused, and killing run kills the sandbox.
    let mark = format!("PICKGUARD_SURVIVE_MARK={}", d.path().display());
    let survive = "import ctypes, os, time\nlibc = ctypes.CDLL(None, use_errno=True)\nprint('pdeathsig', libc.prctl(1, 0, 0, 0, 0), flush=True)\nos.setsid()\ntime.sleep(60)\n";
    let mut child = common::pickguard()
        .current_dir(d.path())
        .env("PICKGUARD_SURVIVE_MARK", d.path())
        .args([
            "run",
            "-q",
            "--env",
            "PICKGUARD_SURVIVE_MARK",
            "--",
            "/usr/bin/python3",
            "-c",
            survive,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = child.kill();
    let _ = child.wait();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let alive = processes_with(&mark).len();
    assert_eq!(alive, 0, "the sandbox outlived a killed run");

    // --timeout returns, with 124, even for a program that tries to stay.
    let t = std::time::Instant::now();
    let out = common::pickguard()
        .current_dir(d.path())
        .args([
            "run",
            "-q",
            "--timeout",
            "2",
            "--",
            "/usr/bin/python3",
            "-c",
            survive,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t.elapsed()
    );

    // A payload named like a library probe is not a probe: it counts.
    let fake = "import os\nopen(os.environ['TMPDIR'] + '/gcc', 'w').write('#!/bin/sh\\n')\nos.chmod(os.environ['TMPDIR'] + '/gcc', 0o755)\ntry:\n    os.execv(os.environ['TMPDIR'] + '/gcc', ['gcc'])\nexcept OSError as e:\n    print('refused', e.errno)\n";
    let out = common::pickguard()
        .current_dir(d.path())
        .args(["run", "-q", "--", "/usr/bin/python3", "-c", fake])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(126),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--memory` and `--pids` are the kernel's where a cgroup can be made (the
/// banner says so, and then tmpfs pages count as memory and forks stop at
/// the limit, whatever uid runs them); elsewhere the banner says rlimits
/// only, and the address-space limit still stops the allocation. No group
/// is left behind either way.
#[test]
fn limits_are_the_kernels_where_a_cgroup_can_be_made() {
    let d = tempfile::tempdir().unwrap();
    let py = venv_bin("python");
    let run = |args: &[&str], code: &str| {
        let out = common::pickguard()
            .current_dir(d.path())
            .arg("run")
            .args(args)
            .arg("--")
            .arg(&py)
            .args(["-c", code])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // 300 MB in the private tmp (tmpfs), then touched heap: past 128 MB.
    let hog = "import os\nwith open(os.environ['TMPDIR'] + '/f', 'wb') as f:\n    for _ in range(300):\n        f.write(b'x' * (1 << 20))\nprint('wrote 300 MB')\n";
    let (code, out, err) = run(&["--memory", "128M"], hog);
    let by_cgroup = err.contains("counted by the kernel for every process of the sandbox");
    if by_cgroup {
        assert_eq!(code, 137, "{out}\n{err}");
        assert!(!out.contains("wrote 300 MB"), "{out}");
        assert!(err.contains("more than --memory"), "{err}");
    } else {
        assert!(err.contains("by rlimits only"), "{err}");
        assert_ne!(code, 0, "{out}\n{err}");
    }
    // A benign load under the limit is not disturbed.
    let (code, out, err) = run(
        &["--memory", "512M"],
        "b = bytearray(64 << 20)\nprint('ok')\n",
    );
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
    // Forks stop at the limit.
    let forks = "import os, time\nn = 0\nfor _ in range(40):\n    try:\n        if os.fork() == 0:\n            time.sleep(2)\n            os._exit(0)\n        n += 1\n    except OSError:\n        break\nprint(n)\n";
    let (code, out, err) = run(&["--pids", "10"], forks);
    assert_eq!(code, 0, "{err}");
    let n: u32 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{out}\n{err}"));
    assert!(n < 10, "{n} forks under --pids 10\n{err}");
    // Nothing named pickguard-run-* is left in any cgroup hierarchy.
    let left: Vec<_> = walkdir_cgroups()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pickguard-run-"))
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn walkdir_cgroups() -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    while let Some(d) = stack.pop() {
        if out.len() > 100_000 {
            break;
        }
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path());
                stack.push(e.path());
            }
        }
    }
    out
}
