//! The audit's predictions against what real pip, uv and poetry install
//! from fake private and public indexes on loopback (feature `live`).
#![cfg(feature = "live")]

use crate::common;

use common::venv_bin;
use std::path::Path;
use std::process::Command;

struct Case {
    name: &'static str,
    /// Files of the project; `{PRIV}` and `{PUB}` become the index URLs.
    files: &'static [(&'static str, &'static str)],
    /// How the client really installs or locks (run in the project dir).
    run: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "pip extra index",
        files: &[(
            "install.sh",
            "pip install -i {PRIV} --extra-index-url {PUB} acme-internal\n",
        )],
        run: "pip",
    },
    Case {
        name: "pip private only",
        files: &[("install.sh", "pip install -i {PRIV} acme-internal\n")],
        run: "pip",
    },
    Case {
        name: "uv pip-style flags",
        files: &[(
            "install.sh",
            "uv pip install --index-url {PRIV} --extra-index-url {PUB} acme-internal\n",
        )],
        run: "uv",
    },
    Case {
        name: "uv default + index",
        files: &[(
            "install.sh",
            "uv pip install --default-index {PUB} --index {PRIV} acme-internal\n",
        )],
        run: "uv",
    },
    Case {
        name: "poetry public primary, private supplemental",
        files: &[(
            "pyproject.toml",
            "[project]\nname = \"demo\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\ndependencies = [\"acme-internal\"]\n\n[[tool.poetry.source]]\nname = \"pub\"\nurl = \"{PUB}\"\npriority = \"primary\"\n\n[[tool.poetry.source]]\nname = \"acme\"\nurl = \"{PRIV}\"\npriority = \"supplemental\"\n",
        )],
        run: "poetry",
    },
    Case {
        name: "poetry private primary, public supplemental",
        files: &[(
            "pyproject.toml",
            "[project]\nname = \"demo\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\ndependencies = [\"acme-internal\"]\n\n[[tool.poetry.source]]\nname = \"acme\"\nurl = \"{PRIV}\"\npriority = \"primary\"\n\n[[tool.poetry.source]]\nname = \"pub\"\nurl = \"{PUB}\"\npriority = \"supplemental\"\n",
        )],
        run: "poetry",
    },
];

/// The fixture indexes (fixtures/gen/index_fixture.py), private and public,
/// served on loopback: (their directory, the servers, private URL, public URL).
fn fixture_indexes() -> (tempfile::TempDir, [common::Proc; 2], String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = tmp.path().join("indexes");
    assert!(
        Command::new(venv_bin("python"))
            .arg(common::root().join("fixtures/gen/index_fixture.py"))
            .arg(&fixture)
            .status()
            .unwrap()
            .success()
    );
    let (p1, pr) = common::spawn_index(&fixture.join("private"), &tmp.path().join("private.log"));
    let (p2, pu) = common::spawn_index(&fixture.join("public"), &tmp.path().join("public.log"));
    (
        tmp,
        [p1, p2],
        format!("http://127.0.0.1:{pr}/simple/"),
        format!("http://127.0.0.1:{pu}/simple/"),
    )
}

#[test]
fn predictions_match_real_clients() {
    let (tmp, _servers, privu, pubu) = fixture_indexes();
    let mut bad = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let proj = tmp.path().join(format!("p{i}"));
        std::fs::create_dir_all(&proj).unwrap();
        for (f, content) in case.files {
            std::fs::write(
                proj.join(f),
                content.replace("{PRIV}", &privu).replace("{PUB}", &pubu),
            )
            .unwrap();
        }
        // What the audit predicts.
        let out = common::pickguard()
            .arg("audit")
            .arg(&proj)
            .args([
                "--private",
                "acme-*",
                "--public-index",
                &pubu,
                "--format",
                "json",
            ])
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let predicted = doc["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["package"] == "acme-internal")
            .map(|p| p["resolves_from"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{}: no prediction in {doc}", case.name));
        // What the client does.
        let env = |c: &mut Command| {
            c.env("PIP_CONFIG_FILE", "/dev/null")
                .env("UV_NO_CONFIG", "1")
                .env("UV_CACHE_DIR", tmp.path().join("uvc"))
                .env("POETRY_CACHE_DIR", tmp.path().join("pc"))
                .env("PICKGUARD_SENTINEL", tmp.path().join("sentinel"))
                .current_dir(&proj);
        };
        let actual = match case.run {
            "pip" | "uv" => {
                let venv = proj.join("venv");
                assert!(
                    Command::new(venv_bin("python"))
                        .args(["-m", "venv", "--without-pip"])
                        .arg(&venv)
                        .status()
                        .unwrap()
                        .success()
                );
                let line = std::fs::read_to_string(proj.join("install.sh")).unwrap();
                let args: Vec<&str> = line.split_whitespace().collect();
                let mut c = if case.run == "pip" {
                    let mut c = Command::new(venv_bin("pip"));
                    c.arg("--python")
                        .arg(venv.join("bin/python"))
                        .args(&args[1..])
                        .args(["--no-cache-dir", "--no-deps"]);
                    c
                } else {
                    let mut c = Command::new(venv_bin("uv"));
                    c.args(&args[1..])
                        .args(["--no-cache", "--no-deps"])
                        .env("VIRTUAL_ENV", &venv);
                    c
                };
                env(&mut c);
                let out = c.output().unwrap();
                assert!(
                    out.status.success(),
                    "{}: {}",
                    case.name,
                    String::from_utf8_lossy(&out.stderr)
                );
                let o = Command::new(venv.join("bin/python"))
                    .args(["-c", "import acme_internal as m; print(m.ORIGIN)"])
                    .env("PICKGUARD_SENTINEL", tmp.path().join("sentinel"))
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&o.stdout).contains("PRIVATE") {
                    "private"
                } else {
                    "public"
                }
                .to_owned()
            }
            _ => {
                let mut c = Command::new(venv_bin("poetry"));
                c.args(["lock", "-n"]);
                env(&mut c);
                let out = c.output().unwrap();
                assert!(
                    out.status.success(),
                    "{}: {}",
                    case.name,
                    String::from_utf8_lossy(&out.stderr)
                );
                let lock = std::fs::read_to_string(proj.join("poetry.lock")).unwrap();
                let entry = lock
                    .split("[[package]]")
                    .find(|p| p.contains("name = \"acme-internal\""))
                    .unwrap()
                    .to_owned();
                // And the audit of the lockfile poetry wrote agrees.
                let out = common::pickguard()
                    .arg("audit")
                    .arg(&proj)
                    .args([
                        "--private",
                        "acme-*",
                        "--public-index",
                        &pubu,
                        "--format",
                        "json",
                    ])
                    .output()
                    .unwrap();
                let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let lock_flagged = doc["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["rule"] == "AUD006-lockfile-public-source");
                let from_public = entry.contains("99.0.0");
                if lock_flagged != from_public {
                    bad.push(format!(
                        "{}: lockfile from public = {from_public}, AUD006 = {lock_flagged}",
                        case.name
                    ));
                }
                if from_public { "public" } else { "private" }.to_owned()
            }
        };
        if predicted != actual {
            bad.push(format!(
                "{}: audit predicted {predicted}, the client took {actual}",
                case.name
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let _ = Path::new("");
}

/// What AUD105 and the distributed fixes rest on, with the venv's real torch:
/// a TCPStore master given 127.0.0.1 still listens on every interface, and
/// only `master_listen_fd` (the fix the rule suggests) keeps it on loopback.
/// Then the audit of the two shapes: the first is a finding, the fix is not.
#[test]
fn tcpstore_master_listens_everywhere_unless_given_a_socket() {
    let script = r#"
import socket, sys, torch.distributed as dist
def listening(port):
    out = []
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(f).readlines()[1:]:
            p = line.split()
            addr, hexport = p[1].rsplit(":", 1)
            if int(hexport, 16) == port and p[3] == "0A":
                out.append(addr)
    return out
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
a = free()
plain = dist.TCPStore("127.0.0.1", a, 1, True, wait_for_workers=False)
print("plain", ",".join(listening(a)))
b = free()
sock = socket.create_server(("127.0.0.1", b))
fd = dist.TCPStore("127.0.0.1", b, 1, True, wait_for_workers=False, master_listen_fd=sock.fileno())
fd.set("k", "v"); assert fd.get("k") == b"v"
print("fd", ",".join(listening(b)))
"#;
    let out = Command::new(venv_bin("python"))
        .args(["-c", script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} ")))
            .unwrap_or_default()
            .to_owned()
    };
    // [::] (tcp6 all zeros) or 0.0.0.0: every interface.
    let plain = line("plain");
    assert!(
        plain
            .split(',')
            .any(|a| a.chars().all(|c| c == '0') && !a.is_empty()),
        "a TCPStore master for 127.0.0.1 was expected on every interface: {plain}"
    );
    let fd = line("fd");
    assert_eq!(fd, "0100007F", "master_listen_fd keeps it on 127.0.0.1");
    // The audit: the plain shape is AUD105, the fixed shape is clean.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("store.py"),
        "import torch.distributed as dist\nstore = dist.TCPStore(\"127.0.0.1\", 29500, 2, True)\n",
    )
    .unwrap();
    let o = common::pickguard()
        .args(["audit", "--check", "distributed", "--format", "json"])
        .arg(d.path())
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        doc["findings"][0]["rule"], "AUD105-tcpstore-listens-everywhere",
        "{doc}"
    );
    std::fs::write(
        d.path().join("store.py"),
        "import socket, torch.distributed as dist\ns = socket.create_server((\"127.0.0.1\", 29500))\nstore = dist.TCPStore(\"127.0.0.1\", 29500, 2, True, master_listen_fd=s.fileno())\n",
    )
    .unwrap();
    let o = common::pickguard()
        .args(["audit", "--check", "distributed"])
        .arg(d.path())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// `--online` (issue 15 item 2): the private index says which names it
/// serves, and the public index whether each exists: taken (AUD013, with
/// versions and first upload), or unclaimed (AUD014). A public index that
/// cannot be asked leaves the audit incomplete (exit 2), never clean.
#[test]
fn online_asks_the_private_and_public_indexes() {
    let (tmp, _servers, privu, pubu) = fixture_indexes();
    let proj = tmp.path().join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(
        proj.join("requirements.txt"),
        format!("--index-url {privu}\nacme-tools\n"),
    )
    .unwrap();
    let audit = |public: &str| {
        common::pickguard()
            .arg("audit")
            .arg(&proj)
            .args([
                "--private-index",
                &privu,
                "--online",
                "--online-index",
                public,
                "--format",
                "json",
            ])
            .output()
            .unwrap()
    };
    let out = audit(&pubu);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = doc["private_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for n in ["acme-internal", "acme-tools", "mergepkg"] {
        assert!(
            names.contains(&n),
            "{n} not learnt from the private index: {names:?}"
        );
    }
    let rule_of = |pkg: &str| -> Vec<(String, String)> {
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                f["packages"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == pkg))
            })
            .map(|f| {
                (
                    f["rule"].as_str().unwrap().to_owned(),
                    f["message"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let internal = rule_of("acme-internal");
    assert!(
        internal.iter().any(|(r, m)| r.starts_with("AUD013")
            && m.contains("99.0.0")
            && m.contains("2024-01-15")),
        "{internal:?}"
    );
    assert!(
        rule_of("mergepkg")
            .iter()
            .any(|(r, _)| r.starts_with("AUD013"))
    );
    let tools = rule_of("acme-tools");
    assert!(
        tools.iter().any(|(r, _)| r.starts_with("AUD014")),
        "{tools:?}"
    );
    assert!(
        !tools.iter().any(|(r, _)| r.starts_with("AUD013")),
        "{tools:?}"
    );
    // The public index asked once per name, on loopback only.
    let log = std::fs::read_to_string(tmp.path().join("public.log")).unwrap();
    assert!(log.contains("GET /simple/acme-tools/"), "{log}");

    // Credentials in an index URL never reach the output.
    let with_creds = privu.replace("http://", "http://alice:s3cretpw@");
    let out = common::pickguard()
        .arg("audit")
        .arg(&proj)
        .args([
            "--private-index",
            &with_creds,
            "--online",
            "--online-index",
            &pubu,
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("s3cretpw") && !all.contains("alice"), "{all}");

    // Answers that are not what they should be say nothing: a private index
    // that serves a login page or lists nothing (a firewall without its
    // admin token), a public index that answers with a maintenance page.
    let odd = tmp.path().join("odd");
    for (path, body) in [
        (
            "login/simple/index.html",
            "<html><body><a href=\"/help\">Help</a> Sign in to continue</body></html>",
        ),
        (
            "empty/simple/index.html",
            "<!DOCTYPE html><html><body></body></html>",
        ),
        (
            "down/simple/acme-tools/index.html",
            "<html><body>Down for maintenance</body></html>",
        ),
    ] {
        let p = odd.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    for (private_tree, public) in [
        ("login", pubu.clone()),
        ("empty", pubu.clone()),
        ("", String::new()),
    ] {
        let (_srv, priv_url) = if private_tree.is_empty() {
            (None, privu.clone())
        } else {
            let (p, port) =
                common::spawn_index(&odd.join(private_tree), &tmp.path().join("odd.log"));
            (Some(p), format!("http://127.0.0.1:{port}/simple/"))
        };
        let (_down, public) = if public.is_empty() {
            let (p, port) = common::spawn_index(&odd.join("down"), &tmp.path().join("down.log"));
            (Some(p), format!("http://127.0.0.1:{port}/simple/"))
        } else {
            (None, public)
        };
        let out = common::pickguard()
            .arg("audit")
            .arg(&proj)
            .args([
                "--private-index",
                &priv_url,
                "--online",
                "--online-index",
                &public,
            ])
            .output()
            .unwrap();
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_ne!(out.status.code(), Some(0), "{private_tree:?}: {so}{se}");
        assert!(se.contains("not checked online"), "{private_tree:?}: {se}");
        assert!(
            !so.contains("no dependency-confusion exposure"),
            "{private_tree:?}: {so}"
        );
        assert!(
            !so.contains("AUD013"),
            "{private_tree:?}: a page that is not a project's read as taken: {so}"
        );
    }

    // A public index nobody answers for: incomplete, said so, exit 2.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!(
        "http://127.0.0.1:{}/simple/",
        dead.local_addr().unwrap().port()
    );
    drop(dead);
    let proj2 = tmp.path().join("proj2");
    std::fs::create_dir_all(&proj2).unwrap();
    std::fs::write(
        proj2.join("requirements.txt"),
        format!("--index-url {privu}\nacme-tools\n"),
    )
    .unwrap();
    let out = common::pickguard()
        .arg("audit")
        .arg(&proj2)
        .args([
            "--private-index",
            "http://127.0.0.1:9/simple/",
            "--online",
            "--online-index",
            &dead_url,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("not checked online"), "{err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("no dependency-confusion exposure"),
        "claimed clean"
    );
}
