//! `pickguard watch` with the real eBPF sensor (feature `live`; root).
//! One test function: the sensor is host-wide, so the phases run one after
//! the other, and only events that carry this test's unique directory name
//! are considered. Every payload is a real pickle loaded by real Python;
//! every "killed" is checked by the marker file the payload would have made.
#![cfg(all(feature = "live", target_os = "linux"))]

mod common;

use common::venv_bin;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The sensor is host-wide and each test begins with `watch --stop`: the
/// tests of this file take turns, whatever --test-threads says.
static HOST_SENSOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_sensor_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    HOST_SENSOR.lock().unwrap_or_else(|p| p.into_inner())
}

struct Watcher {
    child: Child,
    events: mpsc::Receiver<Value>,
    /// The start-up line that names the enforcement mechanism.
    ready: String,
}

impl Watcher {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Watcher {
    /// An orderly stop (SIGTERM), so the sensor unpins what it pinned.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    std::thread::spawn(move || for _ in err.lines().map_while(Result::ok) {});
    let ready = log.lines().last().unwrap_or("").to_owned();
    Watcher {
        child: c,
        events: rx,
        ready,
    }
}

/// The first alert (or sensor-signal report) mentioning `needle`, within `wait`.
fn alert_for(w: &Watcher, needle: &str, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match w.events.recv_timeout(left) {
            Ok(ev)
                if (ev["event"] == "alert" || ev["event"] == "signal-sensor")
                    && ev.to_string().contains(needle) =>
            {
                return Some(ev);
            }
            // Shown when the test fails (libtest prints a failing test's output).
            Ok(other) => eprintln!("(skipped while looking for {needle}) {other}"),
            Err(_) => return None,
        }
    }
    None
}

/// Write one pickle per (file, code): loading it runs `code` with exec.
fn payloads(dir: &Path, list: &[(&str, String)]) {
    let spec: Vec<Value> = list
        .iter()
        .map(|(f, c)| serde_json::json!([dir.join(f), c]))
        .collect();
    let maker = "import builtins, json, os, pickle, sys\n\
        class P:\n    def __init__(s, c): s.c = c\n    def __reduce__(s): return (builtins.exec, (s.c,))\n\
        for path, code in json.load(sys.stdin):\n\
        \x20   os.makedirs(os.path.dirname(path), exist_ok=True)\n\
        \x20   pickle.dump(P(code), open(path, 'wb'), protocol=2)\n";
    let mut c = Command::new(venv_bin("python"))
        .args(["-c", maker])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&spec).unwrap().as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success(), "making payloads");
}

/// `python load.py MODEL` in `dir`: the exit status.
fn load(dir: &Path, script: &str, model: &str) -> Option<i32> {
    Command::new(venv_bin("python"))
        .arg(dir.join(script))
        .arg(model)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .code()
}

fn sha256(p: &Path) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(std::fs::read(p).unwrap());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn which(p: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {p}")])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !s.is_empty(),
        "{p} is required (scripts/setup-test-env.sh installs it)"
    );
    std::fs::canonicalize(s).unwrap()
}

/// Each way a payload reaches a program, as (model file, payload code,
/// marker the program would create, alert kind expected).
fn variants() -> Vec<(String, String, String, &'static str)> {
    let sh = which("sh");
    let busybox = which("busybox");
    let touch = which("touch");
    let call = |argv: String| format!("import subprocess, sys\nsubprocess.call({argv})\n");
    let mut v = vec![
        (
            "env.pth.tar".to_string(),
            call("['env', 'sh', '-c', 'touch marker-env']".into()),
            "marker-env".to_string(),
            "shell",
        ),
        (
            "nice.sav".into(),
            call("['nice', 'sh', '-c', 'touch marker-nice']".into()),
            "marker-nice".into(),
            "shell",
        ),
        (
            "timeout.p".into(),
            call("['timeout', '5', 'sh', '-c', 'touch marker-timeout']".into()),
            "marker-timeout".into(),
            "shell",
        ),
        (
            "script.pkl.gz".into(),
            "import os, subprocess\nopen('run.sh', 'w').write('#!/bin/sh\\ntouch marker-script\\n')\n\
             os.chmod('run.sh', 0o755)\nsubprocess.call(['./run.sh'])\n"
                .into(),
            "marker-script".into(),
            "shell",
        ),
        (
            "perl.pth".into(),
            call("['perl', '-le', 'open(F, \">marker-perl\")']".into()),
            "marker-perl".into(),
            "inline-code",
        ),
        (
            "pyc.pth".into(),
            call("[sys.executable, '-c', 'import os; os.system(\"touch marker-pyc\")']".into()),
            "marker-pyc".into(),
            "shell",
        ),
        (
            "curl.pth".into(),
            call("['curl', '-s', '-o', 'marker-curl', 'file:///etc/hostname']".into()),
            "marker-curl".into(),
            "network-tool",
        ),
        (
            "copy.pth".into(),
            format!(
                "import shutil, subprocess\nshutil.copy('{}', 'notashell')\nopen('notashell', 'ab').write(b'appended')\n\
                 subprocess.call(['./notashell', '-c', 'touch marker-copy'])\n",
                sh.display()
            ),
            "marker-copy".into(),
            "shell",
        ),
        (
            "hardlink.pth".into(),
            format!(
                "import os, subprocess\nos.link('{}', 'hl')\nsubprocess.call(['./hl', '-c', 'touch marker-hardlink'])\n",
                sh.display()
            ),
            "marker-hardlink".into(),
            "shell",
        ),
        (
            "busybox.pth".into(),
            format!(
                "import shutil, subprocess\nshutil.copy('{}', 'bb')\nsubprocess.call(['./bb', 'sh', '-c', 'touch marker-busybox'])\n",
                busybox.display()
            ),
            "marker-busybox".into(),
            "shell",
        ),
        (
            "memfd.pth".into(),
            format!(
                "import os\nfd = os.memfd_create('x')\nos.write(fd, open('{}', 'rb').read())\npid = os.fork()\n\
                 if pid == 0:\n    os.execve(fd, ['x', '-c', 'touch marker-memfd'], {{}})\nos.waitpid(pid, 0)\n",
                sh.display()
            ),
            "marker-memfd".into(),
            "anonymous-exec",
        ),
        (
            "fresh.pth".into(),
            format!(
                "import shutil, subprocess\nshutil.copy('{}', 'mytouch')\nsubprocess.call(['./mytouch', 'marker-fresh'])\n",
                touch.display()
            ),
            "marker-fresh".into(),
            "fresh-binary",
        ),
    ];
    // The dynamic loader run directly maps the shell without a second exec.
    let ldso = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("the dynamic loader");
    v.push((
        "ldso.pth".into(),
        call(format!(
            "['{ldso}', '{}', '-c', 'touch marker-ldso']",
            sh.display()
        )),
        "marker-ldso".into(),
        "launcher",
    ));
    // An interpreter running a dropped script, by name and by #!.
    v.push((
        "perlscript.pth".into(),
        "import subprocess\nopen('x.pl', 'w').write('open(F, \">marker-perlscript\");')\nsubprocess.call(['perl', 'x.pl'])\n".into(),
        "marker-perlscript".into(),
        "interpreter",
    ));
    v.push((
        "shebang.pth".into(),
        "import os, subprocess\nopen('y.pl', 'w').write('#!/usr/bin/perl\\nopen(F, \">marker-shebang\");\\n')\n\
         os.chmod('y.pl', 0o755)\nsubprocess.call(['./y.pl'])\n"
            .into(),
        "marker-shebang".into(),
        "interpreter",
    ));
    // A model with a 150-byte name under a path longer than 255 bytes.
    let long = format!(
        "{}/{}/{}.pth",
        "a".repeat(120),
        "b".repeat(60),
        "c".repeat(150)
    );
    v.push((
        long,
        "import os\nos.system('touch marker-long')\n".into(),
        "marker-long".into(),
        "shell",
    ));
    v
}

#[test]
fn watch_sees_through_indirection_and_keeps_enforcing() {
    let _turn = one_sensor_at_a_time();
    // Under the system temp dir: the hard-link variant needs the test
    // directory on the same file system as /bin/sh.
    let d = tempfile::Builder::new()
        .prefix("pgwatch")
        .tempdir_in("/var/tmp")
        .unwrap();
    let dir = d.path().canonicalize().unwrap();
    let token = dir.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::write(
        dir.join("load.py"),
        "import pickle, sys\ntry:\n    pickle.load(open(sys.argv[1], 'rb'))\nexcept Exception as e:\n    print(e)\n",
    )
    .unwrap();
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
    let variants = variants();
    let mut list: Vec<(&str, String)> = variants
        .iter()
        .map(|(f, c, _, _)| (f.as_str(), c.clone()))
        .collect();
    let sys_touch = |m: &str| format!("import os\nos.system('touch {m}')\n");
    for (f, m) in [
        ("late.pth", "marker-late"),
        ("pre.pth", "marker-pre"),
        ("held.pth", "marker-held"),
        ("emb.pth", "marker-emb"),
        ("evil-allow.pth", "marker-notallowed"),
        ("untrusted.pth", "marker-untrusted"),
        ("env2.pth", "marker-env2"),
    ] {
        list.push((f, sys_touch(m)));
    }
    // The main thread exits while another thread goes on to run the shell.
    list.push((
        "leader.pth",
        "import ctypes, os, threading, time\n\
         def w():\n    time.sleep(0.3)\n    os.system('touch marker-leader')\n    os._exit(0)\n\
         threading.Thread(target=w).start()\nctypes.CDLL(None).syscall(60, 0)\n"
            .into(),
    ));
    // Opening a kernel helper setting for writing (it writes back what it read).
    list.push((
        "corepattern.pth",
        "f = open('/proc/sys/kernel/core_pattern', 'r+')\nv = f.read()\nf.seek(0)\nf.write(v)\nf.close()\n\
         open('marker-corepattern', 'w')\n"
            .into(),
    ));
    // The same through the legacy open(2) syscall, which Python does not use
    // but a payload can (nothing is written).
    list.push((
        "coreopen.pth",
        "import ctypes\nctypes.CDLL(None).syscall(2, b'/proc/sys/kernel/core_pattern', 2)\n\
         open('marker-coreopen', 'w')\n"
            .into(),
    ));
    // Setting the clock (to what it is): inode times can no longer be trusted.
    list.push((
        "clock.pth",
        "import time\ntime.clock_settime(time.CLOCK_REALTIME, time.time())\nopen('marker-clock', 'w')\n".into(),
    ));
    // Decoys: 70 clean "models" opened after the real one, then the shell.
    list.push((
        "decoy.pth",
        "import os, pickle\nfor i in range(70):\n    pickle.dump({'i': i}, open(f'decoy{i}.pth', 'wb'))\n\
         os.system('touch marker-decoy')\n"
            .into(),
    ));
    // A daemon that waits for the sensor to be restarted, then runs its shell.
    list.push((
        "restart.pth",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    os.closerange(3, 1024)\n\
         \x20   while not os.path.exists('go2'): time.sleep(0.05)\n\
         \x20   os.system('touch marker-restart')\n    os._exit(0)\n"
            .into(),
    ));
    // A daemon (double fork, new session) that waits until the window has
    // passed before it runs its shell.
    list.push((
        "daemon.pth",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(3)\n\
         \x20       os.execv('/bin/sh', ['sh', '-c', 'touch marker-daemon'])\n    os._exit(0)\n"
            .into(),
    ));
    // A payload that starts a new "origin" whose command line matches an allowance.
    list.push((
        "fakeorigin.pth",
        "import subprocess, sys\nsubprocess.call([sys.executable, '-c', \"import os, pickle, time; \
         pickle.load(open('ok.pth', 'rb')); time.sleep(0.5); os.system('touch marker-fakeorigin')\", \
         'allowed-loader.py'])\n"
            .into(),
    ));
    payloads(&dir, &list);

    // A sensor left pinned by an earlier, interrupted run would still enforce.
    let st = common::pickguard()
        .args(["watch", "--stop"])
        .status()
        .unwrap();
    assert!(st.success());

    // ---- Detect only: the payload runs; the alert carries what a responder needs.
    let w = start(&["--window", "300"]);
    assert!(w.ready.contains("enforcement: detect-only"), "{}", w.ready);
    load(&dir, "load.py", "evil.pth");
    let ev =
        alert_for(&w, &token, Duration::from_secs(15)).expect("an alert for the malicious pickle");
    assert_eq!(ev["verdict"], "detected", "{ev}");
    assert_eq!(ev["kind"], "shell", "{ev}");
    assert_eq!(
        ev["argv"],
        serde_json::json!(["sh", "-c", "touch pickguard-marker"]),
        "argv captured at exec: {ev}"
    );
    let evil = dir.join("evil.pth").display().to_string();
    assert_eq!(ev["model"], evil.as_str(), "absolute model path: {ev}");
    let m = ev["models"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(m["sha256"], sha256(&dir.join("evil.pth")).as_str(), "{ev}");
    assert_eq!(
        m["size"],
        std::fs::metadata(dir.join("evil.pth")).unwrap().len()
    );
    assert_eq!(m["scan"], "malicious", "{ev}");
    assert_eq!(
        ev["origin"]["cwd"],
        dir.display().to_string().as_str(),
        "{ev}"
    );
    assert!(
        ev["origin_cmdline"].as_str().unwrap().contains("load.py"),
        "{ev}"
    );
    assert!(
        ev["origin"]["exe"].as_str().unwrap().contains("python"),
        "{ev}"
    );
    assert!(!ev["hostname"].as_str().unwrap().is_empty(), "{ev}");
    assert_eq!(ev["uid"], 0);
    assert!(marker.exists(), "detect mode does not block");
    std::fs::remove_file(&marker).unwrap();
    // A benign model load followed by nothing: no alert.
    load(&dir, "load.py", "ok.pth");
    assert!(
        alert_for(&w, &token, Duration::from_secs(2)).is_none(),
        "benign load alerted"
    );
    // Real torch.load(weights_only=False) of a malicious checkpoint.
    load(&dir, "tload.py", "evil-torch.pt");
    let ev = alert_for(&w, &token, Duration::from_secs(60)).expect("an alert for torch.load");
    assert!(
        ev["model"].as_str().unwrap().ends_with("evil-torch.pt"),
        "{ev}"
    );
    std::fs::remove_file(&marker).ok();
    drop(w);

    // ---- Processes already running when the sensor starts: one has imported
    // pickle and will open its model later, one already holds its model open.
    let go = dir.join("go");
    let waiter = |body: &str| {
        format!(
            "import os, pickle, sys, time\n{body}\nt = time.time()\nwhile not os.path.exists('go') and time.time() - t < 120: time.sleep(0.05)\n"
        )
    };
    std::fs::write(
        dir.join("pre.py"),
        waiter("") + "pickle.load(open('pre.pth', 'rb'))\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("held.py"),
        waiter("f = open('held.pth', 'rb')") + "pickle.load(f)\n",
    )
    .unwrap();
    let spawn_py = |script: &str| {
        Command::new(venv_bin("python"))
            .arg(dir.join(script))
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut pre = spawn_py("pre.py");
    let mut held = spawn_py("held.py");
    std::thread::sleep(Duration::from_secs(1));

    // ---- Enforce: each indirection is seen and stopped.
    let w = start(&["--enforce", "--window", "300"]);
    assert!(
        w.ready.contains("enforcement: bpf-lsm-deny")
            || w.ready.contains("enforcement: bpf-sigkill-at-exec"),
        "{}",
        w.ready
    );
    let armed_at_start: u32 = w
        .ready
        .split("; ")
        .find_map(|p| p.strip_suffix(" running interpreter(s) already holding a model armed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(armed_at_start >= 1, "{}", w.ready);
    std::fs::write(&go, "").unwrap();
    let _ = pre.wait();
    let _ = held.wait();
    // Both alerts, in whichever order they come.
    let mut want: Vec<(&str, &str)> = vec![("pre.pth", "marker-pre"), ("held.pth", "marker-held")];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !want.is_empty() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no alert for the already-running loaders of {want:?}"));
        let Ok(ev) = w.events.recv_timeout(left) else {
            panic!("no alert for the already-running loaders of {want:?}");
        };
        if ev["event"] != "alert" {
            continue;
        }
        let text = ev.to_string();
        if let Some(i) = want
            .iter()
            .position(|(name, _)| text.contains(&format!("{token}/{name}")))
        {
            assert!(
                ev["verdict"] == "killed" || ev["verdict"] == "denied",
                "{ev}"
            );
            want.remove(i);
        }
    }
    for m in ["marker-pre", "marker-held"] {
        assert!(!dir.join(m).exists(), "{m}: the shell ran");
    }
    for (model, _, m, kind) in &variants {
        load(&dir, "load.py", model);
        let ev = alert_for(&w, &format!("{token}/{model}"), Duration::from_secs(15))
            .unwrap_or_else(|| panic!("no alert for {model} ({m})"));
        assert_eq!(ev["kind"], *kind, "{model}: {ev}");
        assert!(
            ev["verdict"] == "killed" || ev["verdict"] == "denied",
            "{ev}"
        );
        assert_eq!(
            ev["model"],
            dir.join(model).display().to_string().as_str(),
            "{model}: the alert names the model: {ev}"
        );
        assert!(
            !dir.join(m).exists(),
            "{model}: {m} was created despite --enforce"
        );
    }
    load(&dir, "tload.py", "evil-torch.pt");
    let ev = alert_for(&w, &token, Duration::from_secs(60)).expect("torch.load under --enforce");
    assert!(
        ev["verdict"] == "killed" || ev["verdict"] == "denied",
        "{ev}"
    );
    assert!(
        !marker.exists(),
        "torch payload's shell ran despite --enforce"
    );

    // An embedded interpreter, not named python*, that maps libpython.
    let libpython = std::fs::read_dir("/usr/lib/x86_64-linux-gnu")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("libpython3") && n.ends_with(".so.1.0")
        })
        .expect("libpython (scripts/setup-test-env.sh installs it)");
    let app = dir.join("embedapp");
    let cc = Command::new("cc")
        .arg("-o")
        .arg(&app)
        .arg(common::root().join("fixtures/gen/embed_python.c"))
        .arg("-ldl")
        .status()
        .unwrap();
    assert!(cc.success(), "building the embedding program");
    let st = Command::new(&app)
        .arg(&libpython)
        .arg("import pickle\npickle.load(open('emb.pth', 'rb'))\n")
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let ev = alert_for(&w, "marker-emb", Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no alert for the embedded interpreter (exit {st})"));
    assert_eq!(
        ev["origin"]["exe"],
        app.display().to_string().as_str(),
        "{ev}"
    );
    assert!(!dir.join("marker-emb").exists());

    // Found by an attacker review: each of these ran a program unreported.
    let sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    payloads(
        &dir,
        &[(
            "ptrace.pth",
            format!(
                "import ctypes\nctypes.CDLL(None).ptrace(16, {}, 0, 0)\nopen('marker-ptrace', 'w')\n",
                sleeper.id()
            ),
        )],
    );
    let _sleeper = common::Proc(sleeper);
    for (model, marker, kind) in [
        ("leader.pth", "marker-leader", "shell"),
        ("ptrace.pth", "marker-ptrace", "ptrace"),
        ("corepattern.pth", "marker-corepattern", "kernel-helper"),
        ("coreopen.pth", "marker-coreopen", "kernel-helper"),
        ("decoy.pth", "marker-decoy", "shell"),
        ("clock.pth", "marker-clock", "clock-change"),
    ] {
        load(&dir, "load.py", model);
        let ev = alert_for(&w, &format!("{token}/{model}"), Duration::from_secs(15))
            .unwrap_or_else(|| panic!("no alert for {model}"));
        assert_eq!(ev["kind"], kind, "{model}: {ev}");
        assert!(
            ev["verdict"] == "killed" || ev["verdict"] == "denied",
            "{ev}"
        );
        assert_eq!(
            ev["model"],
            dir.join(model).display().to_string().as_str(),
            "{model}: the alert names the malicious model, not a decoy: {ev}"
        );
        assert!(!dir.join(marker).exists(), "{model}: {marker} was created");
    }
    // After a clock change every exec in an armed tree counts as fresh
    // (perl would otherwise be `inline-code`).
    load(&dir, "load.py", "perl.pth");
    let ev = alert_for(&w, &format!("{token}/perl.pth"), Duration::from_secs(15))
        .expect("an alert after the clock change");
    assert_eq!(ev["kind"], "fresh-binary", "{ev}");
    assert!(!dir.join("marker-perl").exists());

    // A restart by SIGHUP leaves the programs and the process states pinned:
    // the next sensor takes over, and a daemon armed before it is still armed.
    load(&dir, "load.py", "restart.pth");
    Command::new("kill")
        .args(["-HUP", &w.pid().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(w);
    let w = start(&["--enforce", "--window", "300"]);
    std::fs::write(dir.join("go2"), "").unwrap();
    let ev = alert_for(&w, "marker-restart", Duration::from_secs(15))
        .expect("the daemon armed before the restart is caught after it");
    assert!(
        ev["verdict"] == "killed" || ev["verdict"] == "denied",
        "{ev}"
    );
    assert!(!dir.join("marker-restart").exists());

    // The sensor is killed by a payload: the payload is reported and killed,
    // enforcement goes on, and `--stop` reads back what was recorded.
    payloads(
        &dir,
        &[(
            "killer.pth",
            format!("import os\nos.kill({}, 9)\n", w.pid()),
        )],
    );
    let wpid = w.pid();
    let status = load(&dir, "load.py", "killer.pth");
    assert_eq!(
        status, None,
        "the payload that signals the sensor is killed"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !Path::new(&format!("/proc/{wpid}/status")).exists()
            || std::fs::read_to_string(format!("/proc/{wpid}/status"))
                .unwrap()
                .contains("zombie"),
        "the sensor was killed"
    );
    load(&dir, "load.py", "env2.pth");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !dir.join("marker-env2").exists(),
        "enforcement ended with the sensor process"
    );
    drop(w);
    let out = common::pickguard()
        .args(["watch", "--stop"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recorded: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        recorded
            .iter()
            .any(|e| e["event"] == "signal-sensor" && e["unattended"] == true && e["signal"] == 9),
        "the kill of the sensor is reported: {text}"
    );
    assert!(
        recorded
            .iter()
            .any(|e| e["event"] == "alert" && e.to_string().contains("marker-env2")),
        "the alert recorded while unattended is reported: {text}"
    );
    let pinned: Vec<String> = std::fs::read_dir("/sys/fs/bpf")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pickguard-watch"))
        .collect();
    assert!(pinned.is_empty(), "--stop left {pinned:?}");
    // After --stop nothing enforces.
    load(&dir, "load.py", "env2.pth");
    assert!(dir.join("marker-env2").exists(), "--stop did not detach");
    std::fs::remove_file(dir.join("marker-env2")).unwrap();

    // ---- The window re-arms on every model open; benign tools after the window run.
    let w = start(&["--enforce", "--window", "2"]);
    std::fs::write(
        dir.join("server.py"),
        "import os, pickle, sys, time\npickle.load(open('ok.pth', 'rb'))\ntime.sleep(3)\n\
         print(os.popen('nproc').read().strip())\npickle.load(open('late.pth', 'rb'))\n",
    )
    .unwrap();
    let out = Command::new(venv_bin("python"))
        .arg(dir.join("server.py"))
        .current_dir(&dir)
        .output()
        .unwrap();
    let nproc = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        nproc.lines().next().unwrap_or("").parse::<u32>().is_ok(),
        "a shell after the window has passed runs: {nproc:?}"
    );
    let ev = alert_for(&w, "marker-late", Duration::from_secs(15))
        .expect("a model opened after the first window re-arms");
    let late = dir.join("late.pth").display().to_string();
    assert_eq!(
        ev["model"],
        late.as_str(),
        "the alert names the latest model: {ev}"
    );
    assert!(
        !ev["models"].to_string().contains("ok.pth"),
        "a model outside the window is not named: {ev}"
    );
    assert!(!dir.join("marker-late").exists());
    // Inside the window, a notebook's os.popen('nproc') is stopped too, with an event.
    std::fs::write(
        dir.join("nb.py"),
        "import os, pickle\npickle.load(open('ok.pth', 'rb'))\nprint(repr(os.popen('nproc').read()))\n",
    )
    .unwrap();
    let out = Command::new(venv_bin("python"))
        .arg(dir.join("nb.py"))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "''");
    let ev =
        alert_for(&w, "nproc", Duration::from_secs(15)).expect("the stopped shell is reported");
    assert_eq!(
        ev["argv"],
        serde_json::json!(["/bin/sh", "-c", "nproc"]),
        "{ev}"
    );
    // A process created inside the window stays armed after it.
    load(&dir, "load.py", "daemon.pth");
    let ev = alert_for(&w, "marker-daemon", Duration::from_secs(15))
        .expect("the daemon's shell after the window is reported");
    assert!(
        ev["verdict"] == "killed" || ev["verdict"] == "denied",
        "{ev}"
    );
    assert!(
        !dir.join("marker-daemon").exists(),
        "the daemon's shell ran"
    );
    drop(w);

    // ---- --allow by origin: never by the program's name.
    let bad = common::pickguard()
        .args(["watch", "--allow", "sh"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("KEY=VALUE"));
    let w = start(&[
        "--enforce",
        "--allow",
        "cmdline=allowed-loader.py",
        "--allow",
        "cmdline=model-loader.py,model=**/trusted-*.pth",
    ]);
    std::fs::copy(dir.join("ok.pth"), dir.join("trusted-ok.pth")).unwrap();
    std::fs::write(
        dir.join("allowed-loader.py"),
        "import os, pickle, sys, time\npickle.load(open(sys.argv[1], 'rb'))\ntime.sleep(0.5)\nos.system('touch marker-allowed')\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("model-loader.py"),
        "import os, pickle, time\npickle.load(open('trusted-ok.pth', 'rb'))\ntime.sleep(0.5)\n\
         os.system('touch marker-trusted')\npickle.load(open('untrusted.pth', 'rb'))\n",
    )
    .unwrap();
    load(&dir, "allowed-loader.py", "ok.pth");
    assert!(
        dir.join("marker-allowed").exists(),
        "an allowed origin may run its shell"
    );
    load(&dir, "load.py", "evil-allow.pth");
    let ev = alert_for(&w, "marker-notallowed", Duration::from_secs(15))
        .expect("another origin is not allowed");
    assert!(
        ev["verdict"] == "killed" || ev["verdict"] == "denied",
        "{ev}"
    );
    assert!(!dir.join("marker-notallowed").exists());
    load(&dir, "load.py", "fakeorigin.pth");
    let ev = alert_for(&w, "marker-fakeorigin", Duration::from_secs(15))
        .expect("a payload's child is not a new origin");
    assert!(
        ev["verdict"] == "killed" || ev["verdict"] == "denied",
        "{ev}"
    );
    assert!(
        !dir.join("marker-fakeorigin").exists(),
        "an allowance was borrowed"
    );
    load(&dir, "model-loader.py", "");
    assert!(
        dir.join("marker-trusted").exists(),
        "allowed while its model is trusted"
    );
    let ev = alert_for(&w, "marker-untrusted", Duration::from_secs(15))
        .expect("the allowance ends when an untrusted model is opened");
    assert!(
        ev["verdict"] == "killed" || ev["verdict"] == "denied",
        "{ev}"
    );
    assert!(!dir.join("marker-untrusted").exists());
    drop(w);
}

/// The next `distributed-exposure` alert for one of `pids` within `wait`
/// (others are shown when the test fails).
fn next_exposure(w: &Watcher, wait: Duration, pids: &[u32]) -> Option<Value> {
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match w.events.recv_timeout(left) {
            Ok(ev)
                if ev["kind"] == "distributed-exposure" && pids.iter().any(|p| ev["pid"] == *p) =>
            {
                return Some(ev);
            }
            Ok(other) => eprintln!("(skipped while looking for an exposure) {other}"),
            Err(_) => return None,
        }
    }
    None
}

/// A TCP port nothing listens on now (on any address).
fn free_port() -> u16 {
    std::net::TcpListener::bind("[::]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Python that opens a torch.distributed (or other) listener, prints
/// `ready PID` and waits for `done` (at most 120 s).
struct Listener {
    child: Child,
    pid: u32,
}

fn listener(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Listener {
    let mut c = Command::new(venv_bin("python"));
    c.arg(dir.join("listen.py"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("listen.py {args:?} did not start: {line:?}"));
    assert_eq!(pid, child.id());
    Listener { child, pid }
}

/// The process's TCP listeners in its own network namespace (address as
/// /proc prints it, port), for the sockets it holds.
fn listening(pid: u32) -> Vec<(String, u16)> {
    let mut inodes = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(t) = std::fs::read_link(fd.path()) {
            let t = t.to_string_lossy().into_owned();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
                inodes.push(n.to_owned());
            }
        }
    }
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let (a, p) = f[1].split_once(':').unwrap();
                out.push((a.to_owned(), u16::from_str_radix(p, 16).unwrap()));
            }
        }
    }
    out
}

/// `listen.py gloo-dev ADDR` in a network namespace of its own whose
/// loopback also holds ADDR: a gloo device (torch's listener) on ADDR.
fn gloo_in_netns(dir: &Path, addr: &str) -> Listener {
    std::fs::write(
        dir.join("netns.sh"),
        format!(
            "ip link set lo up && ip addr add {addr}/32 dev lo && exec {} {} gloo-dev {addr} 0\n",
            venv_bin("python").display(),
            dir.join("listen.py").display()
        ),
    )
    .unwrap();
    let mut child = Command::new("unshare")
        .args(["--net", "sh"])
        .arg(dir.join("netns.sh"))
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("gloo in a network namespace did not start: {line:?}"));
    assert_eq!(pid, child.id(), "unshare and sh exec the Python");
    Listener { child, pid }
}

/// An IPv4 interface other than loopback (name), if the machine has one.
fn non_loopback_v4_interface() -> Option<String> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "up"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 3 && f[1] != "lo" && !f[3].starts_with("127.")).then(|| f[1].to_owned())
    })
}

#[test]
fn watch_reports_exposed_torch_distributed_listeners() {
    let _turn = one_sensor_at_a_time();
    let d = tempfile::Builder::new()
        .prefix("pgexpose")
        .tempdir_in("/var/tmp")
        .unwrap();
    let dir = d.path().canonicalize().unwrap();
    std::fs::write(
        dir.join("listen.py"),
        "import os, sys, time\n\
         mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])\n\
         import torch.distributed as dist\n\
         if mode == 'store':\n\
         \x20   s = dist.TCPStore(host, port, 1, True, wait_for_workers=False)\n\
         \x20   s.set('k', 'v')\n\
         elif mode == 'store-twice':\n\
         \x20   s = dist.TCPStore(host, port, 1, True, wait_for_workers=False)\n\
         \x20   del s\n\
         \x20   time.sleep(0.5)\n\
         \x20   s = dist.TCPStore(host, port, 1, True, wait_for_workers=False)\n\
         \x20   s.set('k', 'v')\n\
         elif mode == 'gloo':\n\
         \x20   dist.init_process_group('gloo', init_method='file://' + os.path.abspath(f'rdv-{port}'), rank=0, world_size=1)\n\
         elif mode == 'gloo-dev':\n\
         \x20   dev = dist.ProcessGroupGloo.create_device(hostname=host)\n\
         elif mode == 'http':\n\
         \x20   import http.server, threading\n\
         \x20   srv = http.server.HTTPServer((host, port), http.server.SimpleHTTPRequestHandler)\n\
         \x20   threading.Thread(target=srv.serve_forever, daemon=True).start()\n\
         print('ready', os.getpid(), flush=True)\n\
         t = time.time()\n\
         while not os.path.exists('done') and time.time() - t < 120: time.sleep(0.05)\n",
    )
    .unwrap();
    let st = common::pickguard()
        .args(["watch", "--stop"])
        .status()
        .unwrap();
    assert!(st.success());

    // Enforcing: the alert never stops a trainer (each exits 0 below).
    let w = start(&["--enforce"]);
    let mut seen: Vec<Value> = Vec::new();

    // Not torch's listener: an inference server in a process that has
    // imported torch (and with it torch.distributed), on 0.0.0.0.
    let http_port = free_port();
    let http = listener(&dir, &["http", "0.0.0.0", &http_port.to_string()], &[]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http_port)).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    assert!(
        listening(http.pid).contains(&("00000000".into(), http_port)),
        "the HTTP server listens on 0.0.0.0: {:?}",
        listening(http.pid)
    );

    // torch's own listener, on loopback: gloo bound to lo.
    let gloo_lo = listener(&dir, &["gloo", "-", "1"], &[("GLOO_SOCKET_IFNAME", "lo")]);
    let gl = listening(gloo_lo.pid);
    assert!(
        !gl.is_empty() && gl.iter().all(|(a, _)| a == "0100007F"),
        "gloo listens on 127.0.0.1 only: {gl:?}"
    );

    // TCPStore on 0.0.0.0, closed and opened again on the same port by the
    // same process: one alert for (pid, address, port).
    let p1 = free_port();
    let store = listener(&dir, &["store-twice", "0.0.0.0", &p1.to_string()], &[]);
    let mine = [http.pid, gloo_lo.pid, store.pid];
    let ev = next_exposure(&w, Duration::from_secs(30), &mine)
        .expect("an alert for TCPStore on 0.0.0.0");
    seen.push(ev.clone());
    assert_eq!(ev["event"], "alert", "{ev}");
    assert_eq!(
        ev["pid"], store.pid,
        "the first exposure is the TCPStore's: {ev}"
    );
    assert_eq!(ev["port"], p1, "{ev}");
    // The TCPStore server binds the wildcard of both families (::).
    assert_eq!(ev["address"], "::", "{ev}");
    assert_eq!(ev["family"], "ipv6", "{ev}");
    assert_eq!(ev["reachable_beyond_host"], true, "{ev}");
    assert!(ev["public"].is_boolean(), "{ev}");
    assert_eq!(ev["verdict"], "detected", "{ev}");
    assert_eq!(ev["component"], "TCPStore", "{ev}");
    assert!(
        ev["caller"]
            .as_str()
            .unwrap()
            .contains("/torch/lib/libtorch"),
        "{ev}"
    );
    assert!(
        ev["process"]["cmdline"]
            .as_str()
            .unwrap()
            .contains("listen.py store-twice"),
        "{ev}"
    );
    assert!(
        ev["process"]["exe"].as_str().unwrap().contains("python"),
        "{ev}"
    );
    assert!(
        ev["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("pt_tcpstore")),
        "{ev}"
    );

    // TCPStore given 127.0.0.1: its server still listens on :: (torch
    // binds the wildcard whatever host it is given), so it is exposed.
    let p2 = free_port();
    let store_lo = listener(&dir, &["store", "127.0.0.1", &p2.to_string()], &[]);
    assert!(
        listening(store_lo.pid).contains(&("0".repeat(32), p2)),
        "TCPStore('127.0.0.1') listens on ::: {:?}",
        listening(store_lo.pid)
    );
    let mine = [http.pid, gloo_lo.pid, store.pid, store_lo.pid];
    let ev = next_exposure(&w, Duration::from_secs(30), &mine)
        .expect("an alert for TCPStore given 127.0.0.1 (listening on ::)");
    seen.push(ev.clone());
    assert_eq!(ev["pid"], store_lo.pid, "{ev}");
    assert_eq!(ev["port"], p2, "{ev}");
    assert_eq!(ev["address"], "::", "{ev}");

    // gloo on a real interface: torch's listener on a non-loopback address.
    let mut others = vec![http, gloo_lo, store, store_lo];
    if let Some(ifname) = non_loopback_v4_interface() {
        let gloo = listener(
            &dir,
            &["gloo", "-", "2"],
            &[("GLOO_SOCKET_IFNAME", &ifname)],
        );
        let mut mine: Vec<u32> = others.iter().map(|l| l.pid).collect();
        mine.push(gloo.pid);
        let ev = next_exposure(&w, Duration::from_secs(30), &mine)
            .unwrap_or_else(|| panic!("an alert for gloo on {ifname}"));
        seen.push(ev.clone());
        assert_eq!(ev["pid"], gloo.pid, "{ev}");
        assert_eq!(ev["family"], "ipv4", "{ev}");
        assert_eq!(ev["component"], "torch.distributed", "{ev}");
        let (a, p) = listening(gloo.pid)[0].clone();
        assert_eq!(ev["port"], p, "{ev}");
        assert_ne!(a, "0100007F", "{ev}");
        assert_ne!(ev["address"], "127.0.0.1", "{ev}");
        others.push(gloo);
    } else {
        eprintln!("no non-loopback IPv4 interface: gloo's exposed case skipped");
    }

    // torch's listener on a private address (in a network namespace of its
    // own, read through /proc/PID/net): reported, as not public.
    let private = gloo_in_netns(&dir, "10.213.0.1");
    let mut mine: Vec<u32> = others.iter().map(|l| l.pid).collect();
    mine.push(private.pid);
    let ev = next_exposure(&w, Duration::from_secs(30), &mine)
        .expect("an alert for gloo on a private address");
    seen.push(ev.clone());
    assert_eq!(ev["pid"], private.pid, "{ev}");
    assert_eq!(ev["address"], "10.213.0.1", "{ev}");
    assert_eq!(ev["public"], false, "{ev}");
    assert_eq!(ev["reachable_beyond_host"], true, "{ev}");
    others.push(private);

    // Events are judged in order: everything before the last alert has been
    // judged. The HTTP server and loopback gloo gave nothing; the TCPStore
    // that listened twice gave one alert.
    let pids = |p: u32| seen.iter().filter(|e| e["pid"] == p).count();
    assert_eq!(pids(others[0].pid), 0, "the HTTP server alerted: {seen:?}");
    assert_eq!(pids(others[1].pid), 0, "loopback gloo alerted: {seen:?}");
    assert_eq!(pids(others[2].pid), 1, "{seen:?}");
    std::fs::write(dir.join("done"), "").unwrap();
    for mut l in others {
        let st = l.child.wait().unwrap();
        assert!(
            st.success(),
            "pid {} ended with {st}: stopped by --enforce?",
            l.pid
        );
    }
    std::fs::remove_file(dir.join("done")).unwrap();
    drop(w);

    // --public-only: the private address gives nothing; a public one (in its
    // own network namespace too) is reported.
    let w = start(&["--public-only"]);
    let private = gloo_in_netns(&dir, "10.213.0.1");
    let public = gloo_in_netns(&dir, "203.0.113.7");
    let ev = next_exposure(&w, Duration::from_secs(30), &[private.pid, public.pid])
        .expect("an alert for gloo on a public address under --public-only");
    assert_eq!(
        ev["pid"], public.pid,
        "--public-only reported a private address: {ev}"
    );
    assert_eq!(ev["address"], "203.0.113.7", "{ev}");
    assert_eq!(ev["public"], true, "{ev}");
    std::fs::write(dir.join("done"), "").unwrap();
    for mut l in [private, public] {
        assert!(l.child.wait().unwrap().success());
    }
    std::fs::remove_file(dir.join("done")).unwrap();
    drop(w);

    // The check turned off in the rule file: no alert.
    std::fs::write(dir.join("off.toml"), "distributed_exposure = false\n").unwrap();
    let rules = dir.join("off.toml").display().to_string();
    let w = start(&["--rules", &rules]);
    let p3 = free_port();
    let mut store = listener(&dir, &["store", "0.0.0.0", &p3.to_string()], &[]);
    assert!(
        next_exposure(&w, Duration::from_secs(3), &[store.pid]).is_none(),
        "distributed_exposure = false still alerted"
    );
    std::fs::write(dir.join("done"), "").unwrap();
    assert!(store.child.wait().unwrap().success());
    drop(w);
    let st = common::pickguard()
        .args(["watch", "--stop"])
        .status()
        .unwrap();
    assert!(st.success());
}
