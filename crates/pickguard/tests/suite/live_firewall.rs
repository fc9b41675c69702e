//! The firewall end to end: real pip, uv and poetry against fake private and
//! public indexes served on loopback (feature `live`).
#![cfg(feature = "live")]

use crate::common;

use common::Run;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, venv_bin};

fn upstream(root: &Path, log: &Path) -> (Proc, u16) {
    common::spawn_index(root, log)
}

/// Minimal HTTP/1.1 GET/HEAD: (status, headers lower-cased, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http_body(port, method, path, headers, b"")
}

/// A project's PEP 691 page through the firewall.
fn json_page(port: u16, name: &str) -> serde_json::Value {
    let (_, _, body) = http(
        port,
        "GET",
        &format!("/simple/{name}/"),
        &[("Accept", "application/vnd.pypi.simple.v1+json")],
    );
    serde_json::from_slice(&body).unwrap()
}

fn header<'a>(h: &'a [(String, String)], k: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// `pickguard firewall serve --config CFG`, once it answers /healthz:
/// (process, port). Its operational log goes to `ops` (drained, so a full
/// pipe never blocks the firewall).
fn spawn_firewall(cfg: &Path, ops: PathBuf) -> (Proc, u16) {
    let mut fw = common::pickguard()
        .args(["firewall", "serve", "--config"])
        .arg(cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(fw.stderr.take().unwrap());
    let mut line = String::new();
    let mut seen = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "firewall exited: {seen}"
        );
        seen.push_str(&line);
    }
    std::thread::spawn(move || {
        let mut out = std::fs::File::create(ops).unwrap();
        let _ = std::io::copy(&mut err, &mut out);
    });
    let port: u16 = line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while http(port, "GET", "/healthz", &[]).0 != 200 {
        assert!(Instant::now() < deadline, "firewall did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Proc(fw), port)
}

struct World {
    dir: tempfile::TempDir,
    fixture: PathBuf,
    private: Option<Proc>,
    _public: Proc,
    _public2: Proc,
    firewall: Option<Proc>,
    port: u16,
}

impl World {
    fn log(&self, tree: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{tree}.log"))).unwrap_or_default()
    }

    fn start() -> World {
        World::start_with("")
    }

    /// Started with `extra` appended to firewall.toml.
    fn start_with(extra: &str) -> World {
        World::start_full("", extra)
    }

    /// Started with `top` (top-level keys) at the head of firewall.toml and
    /// `extra` at its end.
    fn start_full(top: &str, extra: &str) -> World {
        World::start_env(top, extra, &[])
    }

    /// As `start_full`, with `public_env` in the public index server's
    /// environment (`SERVE_INDEX_BYTES_PER_SEC`: slow downloads).
    fn start_env(top: &str, extra: &str, public_env: &[(&str, &str)]) -> World {
        let dir = tempfile::tempdir().unwrap();
        let fixture = dir.path().join("indexes");
        let st = Command::new(venv_bin("python"))
            .arg(common::root().join("fixtures/gen/index_fixture.py"))
            .arg(&fixture)
            .status()
            .unwrap();
        assert!(st.success());
        let (private, pr) = upstream(&fixture.join("private"), &dir.path().join("private.log"));
        let (public, pu) = common::spawn_index_env(
            &fixture.join("public"),
            &dir.path().join("public.log"),
            public_env,
        );
        let (public2, p2) = upstream(&fixture.join("public2"), &dir.path().join("public2.log"));
        let cfg = dir.path().join("firewall.toml");
        // A test may set its own page_ttl_secs in `top`.
        let ttl = if top.contains("page_ttl_secs") {
            ""
        } else {
            "page_ttl_secs = 0\n"
        };
        std::fs::write(
            &cfg,
            format!(
                "{top}listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{ttl}error_ttl_secs = 0\nadmin_token = \"s3cret\"\nupload_token = \"up\"\n\
                 [[upstream]]\nname = \"internal\"\nurl = \"http://127.0.0.1:{pr}/simple/\"\nprivate = true\n\
                 [[upstream]]\nname = \"pypi\"\nurl = \"http://127.0.0.1:{pu}/simple/\"\n\
                 [[upstream]]\nname = \"mirror\"\nurl = \"http://127.0.0.1:{p2}/simple/\"\n\
                 [claims]\npatterns = [\"acme-*\"]\n[routes.mergepkg]\nupstreams = [\"internal\", \"pypi\"]\nmerge = true\n[quarantine]\ncooldown_hours = 48\noutlier_major_jump = 2\n{extra}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let (fw, port) = spawn_firewall(&cfg, dir.path().join("firewall.log"));
        World {
            dir,
            fixture,
            private: Some(private),
            _public: public,
            _public2: public2,
            firewall: Some(fw),
            port,
        }
    }

    /// A release added to the public index now (uploaded long ago).
    fn add_public_release(&self, name: &str, version: &str) {
        let st = Command::new(venv_bin("python"))
            .arg(common::root().join("fixtures/gen/index_fixture.py"))
            .args(["add-release"])
            .arg(self.fixture.join("public"))
            .args([name, version])
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn index(&self) -> String {
        format!("http://127.0.0.1:{}/simple/", self.port)
    }

    /// A clean environment for a client: no user config, a sentinel path.
    fn client(&self, tool: &str) -> Command {
        let mut c = Command::new(venv_bin(tool));
        c.env("PIP_CONFIG_FILE", "/dev/null")
            .env("UV_NO_CONFIG", "1")
            .env("UV_CACHE_DIR", self.dir.path().join("uv-cache"))
            .env("POETRY_CACHE_DIR", self.dir.path().join("poetry-cache"))
            .env("PICKGUARD_SENTINEL", self.dir.path().join("PWNED"))
            .env_remove("PIP_INDEX_URL")
            .env_remove("PIP_EXTRA_INDEX_URL")
            .env_remove("UV_INDEX_URL")
            .env_remove("UV_DEFAULT_INDEX")
            .env_remove("UV_EXTRA_INDEX_URL");
        c
    }

    fn venv(&self, name: &str) -> PathBuf {
        let v = self.dir.path().join(name);
        assert!(
            Command::new(venv_bin("python"))
                .args(["-m", "venv", "--without-pip"])
                .arg(&v)
                .status()
                .unwrap()
                .success()
        );
        v
    }

    /// (installed version, ORIGIN) of a package in a venv.
    fn installed(&self, venv: &Path, dist: &str, module: &str) -> Option<(String, String)> {
        let code = format!(
            "import importlib.metadata as md, {module} as m; print(md.version('{dist}'), m.ORIGIN)"
        );
        let out = Command::new(venv.join("bin/python"))
            .args(["-c", &code])
            .env("PICKGUARD_SENTINEL", self.dir.path().join("PWNED"))
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        t.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned()))
    }
}

/// A failing test shows the end of every firewall's log.
impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(rd) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("firewall") && name.ends_with(".log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                eprintln!("--- {name} (last lines) ---");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

fn public_hits(w: &World, needle: &str) -> usize {
    w.log("public")
        .lines()
        .chain(w.log("public2").lines())
        .filter(|l| l.contains(needle))
        .count()
}

/// The fail-open shapes of issue 11 with real clients: the private index
/// answers 200 with something that is not an index page for a name the
/// firewall has never seen, and the public index has the malicious package.
#[test]
fn private_answers_that_are_not_pages_fail_closed_with_real_clients() {
    let w = World::start();
    let idx = w.index();
    for name in ["torchtriton", "tritonjson"] {
        let v = w.venv(&format!("pip-{name}"));
        let out = w
            .client("pip")
            .args(["--python"])
            .arg(v.join("bin/python"))
            .args([
                "install",
                "--no-cache-dir",
                "--retries",
                "0",
                "-i",
                &idx,
                name,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "pip installed {name}");
        assert!(w.installed(&v, name, name).is_none());
        let v2 = w.venv(&format!("uv-{name}"));
        let out = w
            .client("uv")
            .args([
                "pip",
                "install",
                "--no-cache",
                "--default-index",
                &idx,
                name,
            ])
            .env("VIRTUAL_ENV", &v2)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "uv installed {name}: {err}");
        assert!(err.contains("502"), "uv shows the firewall's status: {err}");
        assert!(w.installed(&v2, name, name).is_none());
        assert_eq!(
            public_hits(&w, &format!("/simple/{name}/")),
            0,
            "public asked for {name}"
        );
    }
    assert!(
        !w.dir.path().join("PWNED").exists(),
        "the public payload ran"
    );
    // The operator sees why, in the audit log.
    let audit = std::fs::read_to_string(w.dir.path().join("data/audit.jsonl")).unwrap();
    let refused: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"private-upstream-error\"") && l.contains("torchtriton"))
        .collect();
    assert!(!refused.is_empty(), "{audit}");
    assert!(
        refused[0].contains("not a simple-API project page"),
        "{}",
        refused[0]
    );
    // The name behaves again once the private index answers properly (404).
    std::fs::remove_dir_all(w.fixture.join("private/simple/torchtriton")).unwrap();
    let (status, _, _) = http(
        w.port,
        "GET",
        "/simple/torchtriton/",
        &[("Accept", "text/html")],
    );
    assert_eq!(status, 200);
}

#[test]
fn torchtriton_scenario_and_protocol() {
    let w = World::start();
    let idx = w.index();
    // pip: the claimed name comes from the private upstream.
    let v = w.venv("pip-env");
    w.client("pip")
        .args(["--python"])
        .arg(v.join("bin/python"))
        .args(["install", "--no-cache-dir", "-i", &idx, "Acme_Internal"])
        .ok();
    assert_eq!(
        w.installed(&v, "acme-internal", "acme_internal"),
        Some(("1.0.0".into(), "PRIVATE".into()))
    );
    // uv, with another spelling, including PEP 658 metadata whose hash it checks.
    let v2 = w.venv("uv-env");
    w.client("uv")
        .args([
            "pip",
            "install",
            "--no-cache",
            "--default-index",
            &idx,
            "ACME.internal",
        ])
        .env("VIRTUAL_ENV", &v2)
        .ok();
    assert_eq!(
        w.installed(&v2, "acme-internal", "acme_internal"),
        Some(("1.0.0".into(), "PRIVATE".into()))
    );
    // uv's pip-like pooling strategy cannot bring the public copy back.
    let v3 = w.venv("uv-best");
    w.client("uv")
        .args([
            "pip",
            "install",
            "--no-cache",
            "--index-strategy",
            "unsafe-best-match",
            "--default-index",
            &idx,
            "acme-internal",
        ])
        .env("VIRTUAL_ENV", &v3)
        .ok();
    assert_eq!(
        w.installed(&v3, "acme-internal", "acme_internal"),
        Some(("1.0.0".into(), "PRIVATE".into()))
    );
    // poetry resolves the private version.
    let proj = w.dir.path().join("poetry-proj");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(
        proj.join("pyproject.toml"),
        format!("[project]\nname = \"demo\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\ndependencies = [\"acme-internal\"]\n\n[[tool.poetry.source]]\nname = \"fw\"\nurl = \"{idx}\"\npriority = \"primary\"\n"),
    )
    .unwrap();
    w.client("poetry")
        .args(["lock", "-n"])
        .current_dir(&proj)
        .ok();
    let lock = std::fs::read_to_string(proj.join("poetry.lock")).unwrap();
    let entry = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"acme-internal\""))
        .expect("acme-internal locked");
    assert!(entry.contains("version = \"1.0.0\""), "{entry}");
    // The public indexes never heard the private name; the payload never ran.
    assert_eq!(
        public_hits(&w, "acme-internal"),
        0,
        "public log:\n{}",
        w.log("public")
    );
    assert_eq!(public_hits(&w, "acme_internal"), 0);
    assert!(!w.dir.path().join("PWNED").exists());
    // publicdep, a public dependency, did come from the public index.
    assert!(public_hits(&w, "/simple/publicdep/") > 0);
    // The served wheel is the private file, byte for byte.
    let private = std::fs::read(
        w.fixture
            .join("private/files/acme_internal-1.0.0-py3-none-any.whl"),
    )
    .unwrap();
    let page = json_page(w.port, "acme-internal");
    let url = page["files"][0]["url"].as_str().unwrap().to_owned();
    let (st, h, body) = http(w.port, "GET", &url, &[]);
    assert_eq!(st, 200);
    assert_eq!(body, private);
    assert_eq!(header(&h, "content-type"), Some("application/octet-stream"));
    // Range and HEAD on files.
    let (st, h, body) = http(w.port, "GET", &url, &[("Range", "bytes=0-3")]);
    assert_eq!((st, body.as_slice()), (206, &private[..4]));
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes 0-3/{}", private.len()).as_str())
    );
    let (st, h, body) = http(w.port, "HEAD", &url, &[]);
    assert_eq!((st, body.len()), (200, 0));
    assert_eq!(
        header(&h, "content-length"),
        Some(private.len().to_string().as_str())
    );
    // PEP 658: the advertised hash is the hash of the served metadata.
    let md_hash = page["files"][0]["core-metadata"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, _, md) = http(w.port, "GET", &format!("{url}.metadata"), &[]);
    assert_eq!(st, 200);
    let mut hasher = <sha2_shim::Sha256 as sha2_shim::Digest>::new();
    sha2_shim::Digest::update(&mut hasher, &md);
    assert_eq!(hex(&sha2_shim::Digest::finalize(hasher)), md_hash);
    // A deliberate merge (a vendor index plus the public one) lists both and says so (PEP 708).
    let merged_files = || {
        let (st, h, body) = http(
            w.port,
            "GET",
            "/simple/mergepkg/",
            &[("Accept", "application/vnd.pypi.simple.v1+json")],
        );
        assert_eq!(st, 200);
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let names: Vec<String> = doc["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["filename"].as_str().unwrap().to_owned())
            .collect();
        let hidden = header(&h, "x-pickguard-hidden").map(str::to_owned);
        (names, hidden, doc)
    };
    let (names, _, doc) = merged_files();
    assert_eq!(
        names,
        [
            "mergepkg-2.0.0+vendor-py3-none-any.whl",
            "mergepkg-1.0.0-py3-none-any.whl"
        ]
    );
    assert_eq!(doc["meta"]["tracks"].as_array().unwrap().len(), 2, "{doc}");
    let (_, _, html) = http(
        w.port,
        "GET",
        "/simple/mergepkg/",
        &[("Accept", "text/html")],
    );
    assert!(String::from_utf8_lossy(&html).contains("pypi:tracks"));
    // mergepkg is also private: a public version published after that (the
    // registry's date) is held, with why, until an admin releases it.
    let st = Command::new(venv_bin("python"))
        .arg(common::root().join("fixtures/gen/index_fixture.py"))
        .args(["add-release"])
        .arg(w.fixture.join("public"))
        .args(["mergepkg", "3.0.0", "now"])
        .status()
        .unwrap();
    assert!(st.success());
    let (names, hidden, _) = merged_files();
    assert!(!names.iter().any(|n| n.contains("3.0.0")), "{names:?}");
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(hidden.as_deref(), Some("1"));
    let (st, _, body) = http(
        w.port,
        "GET",
        "/admin/quarantine",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(st, 200);
    let queue = String::from_utf8_lossy(&body);
    assert!(
        queue.contains("mergepkg-3.0.0") && queue.contains("after mergepkg became private here"),
        "{queue}"
    );
    let st = post(
        w.port,
        "/admin/quarantine/release",
        r#"{"project": "mergepkg", "version": "3.0.0"}"#,
        ("Authorization", "Bearer s3cret"),
    );
    assert_eq!(st, 200);
    let (names, _, _) = merged_files();
    assert!(
        names.iter().any(|n| n.contains("3.0.0")),
        "released: {names:?}"
    );
    // Content negotiation.
    let (st, h, body) = http(
        w.port,
        "GET",
        "/simple/publicdep/",
        &[("Accept", "text/html")],
    );
    assert_eq!((st, header(&h, "content-type")), (200, Some("text/html")));
    assert_eq!(header(&h, "vary"), Some("Accept"));
    assert!(String::from_utf8_lossy(&body).contains("#sha256="));
    let (_, h, _) = http(
        w.port,
        "GET",
        "/simple/publicdep/",
        &[(
            "Accept",
            "application/vnd.pypi.simple.v1+html;q=0.9, application/vnd.pypi.simple.v1+json;q=0.5",
        )],
    );
    assert_eq!(
        header(&h, "content-type"),
        Some("application/vnd.pypi.simple.v1+html")
    );
    let (st, _, _) = http(
        w.port,
        "GET",
        "/simple/publicdep/",
        &[("Accept", "image/png")],
    );
    assert_eq!(st, 406);
    let (st, h, _) = http(w.port, "GET", "/simple/PublicDep/", &[]);
    assert_eq!(
        (st, header(&h, "location")),
        (301, Some("/simple/publicdep/"))
    );
    let (st, h, _) = http(w.port, "GET", "/simple/publicdep", &[]);
    assert_eq!(
        (st, header(&h, "location")),
        (301, Some("/simple/publicdep/"))
    );
}

#[test]
fn claims_quarantine_outages_and_audit() {
    let mut w = World::start();
    let idx = w.index();
    // A pattern-claimed name with no private release: an explained 403, never asked publicly.
    let (st, h, body) = http(w.port, "GET", "/simple/acme-other/", &[]);
    assert_eq!(st, 403);
    assert!(
        header(&h, "x-pickguard-reason")
            .unwrap()
            .contains("claimed"),
        "{h:?}"
    );
    assert!(String::from_utf8_lossy(&body).contains("never resolved from public"));
    assert_eq!(public_hits(&w, "acme-other"), 0);
    // Cooldown: a release uploaded minutes ago is held back, with the reason.
    let (st, h, body) = http(
        w.port,
        "GET",
        "/simple/freshpkg/",
        &[("Accept", "application/vnd.pypi.simple.v1+json")],
    );
    assert_eq!(st, 403);
    assert!(
        header(&h, "x-pickguard-reason")
            .unwrap()
            .contains("cooldown")
    );
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["project-status"]["status"], "quarantined");
    let v = w.venv("fresh");
    let out = w
        .client("pip")
        .args(["--python"])
        .arg(v.join("bin/python"))
        .args(["install", "--no-cache-dir", "-i", &idx, "freshpkg"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Version outlier: history 1.0.0/1.1.0, then a public 9.0.0 appears.
    assert_eq!(http(w.port, "GET", "/simple/steady/", &[]).0, 200);
    w.add_public_release("steady", "9.0.0");
    let (st, h, body) = http(
        w.port,
        "GET",
        "/simple/steady/",
        &[("Accept", "application/vnd.pypi.simple.v1+json")],
    );
    assert_eq!(st, 200);
    assert_eq!(header(&h, "x-pickguard-hidden"), Some("1"));
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let files: Vec<&str> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "steady-1.0.0-py3-none-any.whl",
            "steady-1.1.0-py3-none-any.whl"
        ]
    );
    // A direct request for the hidden file is refused with the reason.
    let v9 = w.venv("steady");
    w.client("uv")
        .args([
            "pip",
            "install",
            "--no-cache",
            "--default-index",
            &idx,
            "steady",
        ])
        .env("VIRTUAL_ENV", &v9)
        .ok();
    assert_eq!(w.installed(&v9, "steady", "steady").unwrap().0, "1.1.0");
    // Admin: release the outlier, then claim a name; both take effect at once.
    let auth = ("Authorization", "Bearer s3cret");
    let st = post(
        w.port,
        "/admin/quarantine/release",
        r#"{"project": "steady", "version": "9.0.0"}"#,
        auth,
    );
    assert_eq!(st, 200);
    let (_, _, body) = http(
        w.port,
        "GET",
        "/simple/steady/",
        &[("Accept", "application/vnd.pypi.simple.v1+json")],
    );
    assert!(String::from_utf8_lossy(&body).contains("steady-9.0.0"));
    assert_eq!(
        post(
            w.port,
            "/admin/claims",
            r#"{"names": ["Publicdep"], "source": "manifest"}"#,
            auth
        ),
        200
    );
    assert_eq!(http(w.port, "GET", "/simple/publicdep/", &[]).0, 403);
    assert_eq!(http(w.port, "GET", "/admin/claims", &[]).0, 401);
    let (st, _, body) = http(w.port, "GET", "/admin/decisions?limit=5", &[auth]);
    assert_eq!(st, 200);
    assert!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["decisions"]
            .as_array()
            .unwrap()
            .len()
            == 5
    );
    // Private upstream down: claimed and unknown names fail closed, never public.
    drop(w.private.take());
    let before = public_hits(&w, "acme-tools");
    let (st, h, _) = http(w.port, "GET", "/simple/acme-tools/", &[]);
    assert_eq!(st, 502, "{h:?}");
    let (st, _, _) = http(w.port, "GET", "/simple/brand-new-name/", &[]);
    assert_eq!(st, 502);
    assert_eq!(public_hits(&w, "acme-tools"), before);
    assert_eq!(public_hits(&w, "brand-new-name"), 0);
    // Metrics and health.
    let (st, _, body) = http(w.port, "GET", "/metrics", &[]);
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&body).contains("pickguard_hidden_files_total"));
    // Readiness: ready while storage takes files; 503 with why when the
    // file store cannot (its directory replaced by a plain file); ready again.
    let (st, h, body) = http(w.port, "GET", "/readyz", &[]);
    assert_eq!((st, String::from_utf8_lossy(&body).trim()), (200, "ready"));
    assert_eq!(header(&h, "cache-control"), Some("no-store"));
    let files = w.dir.path().join("data/files");
    let moved = w.dir.path().join("data/files.moved");
    std::fs::rename(&files, &moved).unwrap();
    std::fs::write(&files, b"not a directory").unwrap();
    let (st, _, body) = http(w.port, "GET", "/readyz", &[]);
    let said = String::from_utf8_lossy(&body);
    assert_eq!(st, 503, "{said}");
    assert!(said.contains("not ready: storage"), "{said}");
    assert_eq!(
        http(w.port, "GET", "/healthz", &[]).0,
        200,
        "alive all the same"
    );
    std::fs::remove_file(&files).unwrap();
    std::fs::rename(&moved, &files).unwrap();
    assert_eq!(http(w.port, "GET", "/readyz", &[]).0, 200);
    // The audit log survives kill -9: every line is whole JSON.
    let mut fw = w.firewall.take().unwrap();
    let _ = fw.0.kill();
    let _ = fw.0.wait();
    let log = std::fs::read_to_string(w.dir.path().join("data/audit.jsonl")).unwrap();
    let decisions: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("whole JSON line"))
        .collect();
    assert!(
        decisions
            .iter()
            .any(|d| d["decision"] == "blocked-claimed" && d["project"] == "acme-other")
    );
    assert!(
        decisions
            .iter()
            .any(|d| d["decision"] == "quarantined" && d["project"] == "freshpkg")
    );
    assert!(
        decisions
            .iter()
            .any(|d| d["decision"] == "private-upstream-error")
    );
    drop(fw);
}

fn post(port: u16, path: &str, body: &str, auth: (&str, &str)) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        auth.0,
        auth.1,
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf.split(' ').nth(1).unwrap().parse().unwrap()
}

/// A wheel of `name` `version` built by the fixture code (origin HOSTED),
/// without its .metadata file.
fn fixture_wheel(w: &World, name: &str, version: &str) -> PathBuf {
    let wheels = w.dir.path().join("wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    let code = "import sys; sys.path.insert(0, sys.argv[1]); import index_fixture as f; print(f.make_wheel(sys.argv[2], sys.argv[3], sys.argv[4], origin='HOSTED'))";
    let out = Command::new(venv_bin("python"))
        .args(["-c", code])
        .arg(common::root().join("fixtures/gen"))
        .arg(&wheels)
        .args([name, version])
        .ok();
    let wheel = wheels.join(String::from_utf8_lossy(&out.stdout).trim());
    std::fs::remove_file(wheel.with_extension("whl.metadata")).ok();
    wheel
}

/// A fixture wheel of `name` `version` published with `uv publish` through
/// the firewall on `port`, which must accept it.
fn publish(w: &World, port: u16, name: &str, version: &str) -> PathBuf {
    let wheel = fixture_wheel(w, name, version);
    let out = uv_publish(w, port, &wheel, "up");
    assert!(
        out.status.success(),
        "uv publish {name} {version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wheel
}

/// `uv publish` of `wheel` to the firewall on `port` with the upload password.
fn uv_publish(w: &World, port: u16, wheel: &Path, password: &str) -> std::process::Output {
    w.client("uv")
        .args([
            "publish",
            "--publish-url",
            &format!("http://127.0.0.1:{port}/legacy/"),
        ])
        .args(["--username", "__token__", "--password", password])
        .arg(wheel)
        .output()
        .unwrap()
}

/// pip installs `dist` through the firewall on `port` into a new venv, and
/// what it installed is the hosted upload.
fn installs_hosted(w: &World, port: u16, venv: &str, dist: &str, module: &str) {
    let v = w.venv(venv);
    let out = pip_install_at(w, port, &v, dist);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        w.installed(&v, dist, module).map(|x| x.1),
        Some("HOSTED".into())
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 for the test, from the sign crate's dependency.
mod sha2_shim {
    pub use sha2::{Digest, Sha256};
}

#[test]
fn uploads_claim_their_name_atomically() {
    let w = World::start();
    let idx = w.index();
    // A wheel for a new private package, built by the fixture code.
    let wheel = fixture_wheel(&w, "uploaded-pkg", "2.0.0");
    let publish = |password: &str| uv_publish(&w, w.port, &wheel, password);
    assert!(!publish("wrong").status.success(), "a bad token is refused");
    let out = publish("up");
    assert!(
        out.status.success(),
        "uv publish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Publishing a new name asked the public indexes once whether it exists
    // there (a name on a public index is not published without an admin claim).
    let checked = public_hits(&w, "/simple/uploaded-pkg/");
    assert!(
        checked >= 1,
        "the takeover check did not ask the public index"
    );
    // Claimed by the upload; installable; not asked of the public indexes again.
    let (_, _, body) = http(
        w.port,
        "GET",
        "/admin/claims",
        &[("Authorization", "Bearer s3cret")],
    );
    assert!(String::from_utf8_lossy(&body).contains("\"uploaded-pkg\""));
    let v = w.venv("up-env");
    w.client("pip")
        .args(["--python"])
        .arg(v.join("bin/python"))
        .args(["install", "--no-cache-dir", "-i", &idx, "uploaded_pkg"])
        .ok();
    assert_eq!(
        w.installed(&v, "uploaded-pkg", "uploaded_pkg"),
        Some(("2.0.0".into(), "HOSTED".into()))
    );
    assert_eq!(public_hits(&w, "uploaded"), checked);
    // Uploads never replace a file: the second one is refused and logged.
    let _ = publish("up");
    let (_, _, body) = http(
        w.port,
        "GET",
        "/admin/decisions?project=uploaded-pkg&limit=50",
        &[("Authorization", "Bearer s3cret")],
    );
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let refused = doc["decisions"].as_array().unwrap().iter().any(|d| {
        d["decision"] == "upload-refused"
            && d["reason"]
                .as_str()
                .unwrap_or("")
                .contains("already exists")
    });
    assert!(refused, "{doc}");
}

fn pip_install(w: &World, venv: &Path, req: &str) -> std::process::Output {
    pip_install_at(w, w.port, venv, req)
}

/// pip through the firewall listening on `port`.
fn pip_install_at(w: &World, port: u16, venv: &Path, req: &str) -> std::process::Output {
    w.client("pip")
        .args(["--python"])
        .arg(venv.join("bin/python"))
        .args([
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--retries",
            "0",
            "-i",
        ])
        .arg(format!("http://127.0.0.1:{port}/simple/"))
        .arg(req)
        .output()
        .unwrap()
}

/// The offline OSV feed of fixtures/gen/osv_feed.py, in a fresh directory.
fn osv_feed() -> tempfile::TempDir {
    let feed = tempfile::tempdir().unwrap();
    assert!(
        Command::new(venv_bin("python"))
            .arg(common::root().join("fixtures/gen/osv_feed.py"))
            .arg(feed.path())
            .status()
            .unwrap()
            .success()
    );
    feed
}

/// Issue 19 item 3: an OSV feed (the malicious-packages layout, read at
/// start from [feed] sources, and an all.zip imported by the CLI into the
/// running firewall) blocks what it lists, with the advisory id where the
/// person installing and the operator look; near-names of private projects
/// are quarantined.
#[test]
fn osv_feed_blocks_what_it_lists_and_near_names_are_quarantined() {
    let feed = osv_feed();
    let mal_dir = feed.path().join("malicious-packages/osv/malicious");
    let w = World::start_with(&format!(
        "[feed]\nsources = [\"{}\"]\nrefresh_minutes = 0\n",
        mal_dir.display()
    ));
    let cfg = w.dir.path().join("firewall.toml");
    let v = w.venv("feedvenv");
    // MAL-2099-0001 lists colorfulx 2.0.0 only: pip gets 1.0.0.
    let out = pip_install(&w, &v, "colorfulx");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        w.installed(&v, "colorfulx", "colorfulx")
            .map(|x| x.0)
            .as_deref(),
        Some("1.0.0")
    );
    let out = pip_install(&w, &v, "colorfulx==2.0.0");
    assert!(!out.status.success(), "installed the listed version");
    colorfulx_listed_without_2_0_0(w.port);

    // steady is clean until the zip is imported into the running firewall.
    let page = json_page(w.port, "steady");
    let file_url = page["files"][0]["url"].as_str().unwrap().to_owned();
    let out = common::pickguard()
        .args(["firewall", "feed", "import", "-c"])
        .arg(&cfg)
        .arg(feed.path().join("all.zip"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("2 PyPI record(s); stored 2 row(s)"), "{said}");
    let out = pip_install(&w, &v, "steady");
    assert!(
        !out.status.success(),
        "steady installed despite MAL-2099-0002"
    );
    // pip prints why an index page was refused only with -vv (its debug
    // log): the status line carries the advisory.
    let out = w
        .client("pip")
        .args(["--python"])
        .arg(v.join("bin/python"))
        .args([
            "install",
            "-vv",
            "--no-cache-dir",
            "--retries",
            "0",
            "-i",
            &w.index(),
            "steady",
        ])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(said.contains("403 Client Error: Forbidden (pickguard: every file of steady is quarantined; first: MAL-2099-0002"), "pip -v shows the advisory: {said}");
    let out = w
        .client("uv")
        .args(["pip", "install", "--no-cache", "--python"])
        .arg(v.join("bin/python"))
        .args(["--default-index", &w.index(), "steady"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "uv installed steady");
    // uv prints the status, not the reason phrase or body.
    assert!(err.contains("403 Forbidden"), "uv shows the refusal: {err}");
    // A file URL obtained before the import is refused too.
    let path = &file_url[file_url
        .find("/files/")
        .unwrap_or_else(|| panic!("{file_url}"))..];
    let (st, h, _) = http(w.port, "GET", path, &[]);
    assert_eq!(st, 403);
    assert!(
        header(&h, "x-pickguard-reason")
            .unwrap()
            .contains("MAL-2099-0002")
    );
    // Withdrawn: not enforced.
    let out = pip_install(&w, &v, "publicdep");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Importing again, from a URL, changes nothing; a URL that answers 404
    // is an error (exit 2); status names the advisory.
    let (_srv, feed_port) = upstream(feed.path(), &w.dir.path().join("feed.log"));
    let out = common::pickguard()
        .args(["firewall", "feed", "import", "-c"])
        .arg(&cfg)
        .arg(format!("http://127.0.0.1:{feed_port}/all.zip"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("stored 0 row(s), 2 unchanged"));
    let out = common::pickguard()
        .args(["firewall", "feed", "import", "-c"])
        .arg(&cfg)
        .arg(format!("http://127.0.0.1:{feed_port}/gone.zip"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("answered 404"));
    let out = common::pickguard()
        .args(["firewall", "feed", "status", "-c"])
        .arg(&cfg)
        .args(["--project", "Steady"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("MAL-2099-0002 steady (enforced): every version"),
        "{said}"
    );
    let (st, _, body) = http(
        w.port,
        "GET",
        "/admin/feed",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(st, 200);
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["advisories"], 4, "{status}");
    assert_eq!(
        status["last_import"]["report"]["other_ecosystems"], 1,
        "{status}"
    );
    // The operator's audit log carries the advisory id.
    let audit = std::fs::read_to_string(w.dir.path().join("data/audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"quarantined\"") && l.contains("MAL-2099-0002")),
        "{audit}"
    );

    // acme-* is a claims pattern: the public python-acme-extras is nearly inside
    // it. mergepkg is private through a route (so in the claims registry):
    // the public merge-pkgs is one letter from it.
    assert_eq!(http(w.port, "GET", "/simple/mergepkg/", &[]).0, 200);
    for (name, why) in [
        (
            "python-acme-extras",
            "nearly inside the private namespace acme-*",
        ),
        ("merge-pkgs", "nearly the private name mergepkg"),
    ] {
        let out = pip_install(&w, &v, name);
        assert!(!out.status.success(), "{name} installed");
        let (st, h, _) = http(w.port, "GET", &format!("/simple/{name}/"), &[]);
        assert_eq!(st, 403);
        assert!(
            header(&h, "x-pickguard-reason").unwrap().contains(why),
            "{h:?}"
        );
    }
    assert!(!w.dir.path().join("PWNED").exists(), "a public payload ran");
}

/// The colorfulx page serves 1.0.0 and leaves out 2.0.0 (MAL-2099-0001).
fn colorfulx_listed_without_2_0_0(port: u16) {
    let (st, h, body) = http(
        port,
        "GET",
        "/simple/colorfulx/",
        &[("Accept", "application/vnd.pypi.simple.v1+json")],
    );
    assert_eq!(st, 200);
    let page = String::from_utf8_lossy(&body);
    assert!(
        page.contains("colorfulx-1.0.0") && !page.contains("colorfulx-2.0.0"),
        "{page}"
    );
    assert_eq!(header(&h, "x-pickguard-hidden"), Some("1"));
}

/// `dry_run` shows what quarantine would hide and hides nothing, except
/// files an advisory lists: a known-malicious release is never a trial.
#[test]
fn dry_run_still_enforces_advisories() {
    let feed = osv_feed();
    let w = World::start_full(
        "dry_run = true\n",
        &format!(
            "[feed]\nsources = [\"{}\"]\nrefresh_minutes = 0\n",
            feed.path()
                .join("malicious-packages/osv/malicious")
                .display()
        ),
    );
    let v = w.venv("dryvenv");
    let out = pip_install(&w, &v, "colorfulx==2.0.0");
    assert!(!out.status.success(), "dry run served a listed version");
    colorfulx_listed_without_2_0_0(w.port);
    // freshpkg is inside the cooldown: recorded, served.
    let (st, h, body) = http(
        w.port,
        "GET",
        "/simple/freshpkg/",
        &[("Accept", "application/vnd.pypi.simple.v1+json")],
    );
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&body).contains("freshpkg-1.0.0"));
    assert_eq!(header(&h, "x-pickguard-hidden"), Some("1"));
    // The audit log is written by its own task: wait (bounded) for both.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut audit = String::new();
    while Instant::now() < deadline {
        audit = std::fs::read_to_string(w.dir.path().join("data/audit.jsonl")).unwrap_or_default();
        if audit.contains("/simple/freshpkg/") && audit.contains("/simple/colorfulx/") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let decision = |name: &str| {
        audit
            .lines()
            .rev()
            .filter(|l| l.contains(&format!("\"/simple/{name}/\"")))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|d| d["decision"].as_str().map(str::to_owned))
    };
    assert_eq!(
        decision("freshpkg").as_deref(),
        Some("serve-public-dry-run"),
        "{audit}"
    );
    assert_eq!(
        decision("colorfulx").as_deref(),
        Some("serve-public-filtered"),
        "{audit}"
    );
}

/// A firewall told to enforce a feed it cannot read, with nothing stored
/// from before, does not start.
#[test]
fn a_feed_that_cannot_be_read_stops_the_firewall_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("firewall.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[feed]\nsources = [\"{}\"]\n",
            dir.path().join("data").display(),
            dir.path().join("missing").display()
        ),
    )
    .unwrap();
    let out = common::pickguard()
        .args(["firewall", "serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("advisory feed could not be read"), "{err}");
    // And `feed import` of it says so with exit 2.
    let out = common::pickguard()
        .args(["firewall", "feed", "import", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
}

/// A minimal W3C WebDriver client over ChromeDriver (Debian's chromium and
/// chromium-driver, installed by scripts/setup-test-env.sh).
struct Browser {
    driver: Proc,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

fn wd(port: u16, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    // ChromeDriver may keep the connection open: read by Content-Length.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let (split, head) = loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "chromedriver closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break (i, String::from_utf8_lossy(&buf[..i]).to_lowercase());
        }
    };
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match len {
        Some(len) => {
            while buf.len() < split + 4 + len {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "chromedriver closed the connection early");
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            let _ = s.read_to_end(&mut buf);
        }
    }
    let mut body = buf[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        body = out;
    }
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)))
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Proc(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver (scripts/setup-test-env.sh installs chromium-driver)"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000", format!("--user-data-dir={}", profile.path().display()),
            ]}
        }}});
        let r = wd(port, "POST", "/session", Some(caps));
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_owned();
        let b = Browser {
            driver,
            port,
            session,
            _profile: profile,
        };
        // Elements are waited for (a form post answers after a navigation).
        b.call(
            "POST",
            "/timeouts",
            Some(serde_json::json!({"implicit": 10000})),
        );
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let r = wd(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        );
        assert!(r["value"].get("error").is_none(), "{method} {path}: {r}");
        r["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(serde_json::json!({"url": url})));
    }

    /// Wait (10 s at most) for the page at a URL ending with `suffix`.
    fn wait_url(&self, suffix: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let u = self.url();
            if u.ends_with(suffix) {
                return;
            }
            assert!(Instant::now() < deadline, "still at {u}, not ...{suffix}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap().to_owned()
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(serde_json::json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &format!("/element/{e}/clear"),
            Some(serde_json::json!({})),
        );
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(serde_json::json!({"text": text})),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &format!("/element/{e}/click"),
            Some(serde_json::json!({})),
        );
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn screenshot(&self, name: &str) {
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().unwrap());
        let dir = common::root().join("target/console-screens");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    fn cookie(&self, name: &str) -> String {
        self.call("GET", &format!("/cookie/{name}"), None)["value"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            wd(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            )
        });
        let _ = &self.driver;
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        acc = (acc << 6) | A.iter().position(|x| *x == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Issue 19 item 4: the web console in headless Chromium. Anonymous
/// visitors see only the login form; an admin logs in, filters decisions,
/// releases a quarantined version (and pip then installs it) and claims a
/// name (and it is then refused publicly); a form without the session's
/// CSRF token is refused. Screenshots go to target/console-screens/.
#[test]
fn web_console_in_headless_chromium() {
    let w = World::start();
    let base = format!("http://127.0.0.1:{}", w.port);
    // Decisions to look at: a quarantined project (48 h cooldown), a
    // private one, a public one.
    assert_eq!(http(w.port, "GET", "/simple/freshpkg/", &[]).0, 403);
    assert_eq!(http(w.port, "GET", "/simple/acme-internal/", &[]).0, 200);
    assert_eq!(http(w.port, "GET", "/simple/steady/", &[]).0, 200);
    // Anonymous: redirected to the login form, no names.
    for p in [
        "/console/",
        "/console/claims",
        "/console/quarantine",
        "/console/feed",
    ] {
        let (st, h, body) = http(w.port, "GET", p, &[]);
        assert_eq!(st, 303, "{p}");
        assert_eq!(header(&h, "location"), Some("/console/login"));
        assert!(!String::from_utf8_lossy(&body).contains("acme"));
    }

    let b = Browser::start();
    b.go(&format!("{base}/console/"));
    assert!(b.url().ends_with("/console/login"), "{}", b.url());
    b.type_in("#token", "not-the-token");
    b.click("#login");
    let e = b.text("#error");
    assert!(e.contains("not a token of this firewall"), "{e}");
    b.type_in("#token", "s3cret");
    b.click("#login");
    b.wait_url("/console/");
    let table = b.text("#decisions");
    assert!(
        table.contains("freshpkg") && table.contains("serve-private"),
        "{table}"
    );
    b.screenshot("decisions");
    // Filter: quarantined only.
    b.go(&format!("{base}/console/?kind=quarantined"));
    let table = b.text("#decisions");
    assert!(table.contains("freshpkg"), "{table}");
    assert!(
        !table.contains("steady") && !table.contains("acme-internal"),
        "{table}"
    );
    b.type_in("#project", "Steady");
    b.click("#apply");
    b.wait_url("kind=quarantined&project=Steady&minutes=");
    let table = b.text("#decisions");
    assert!(
        !table.contains("freshpkg") && !table.contains("steady"),
        "{table}"
    );
    b.go(&format!("{base}/console/?kind=all&project=Steady"));
    let table = b.text("#decisions");
    assert!(
        table.contains("steady") && !table.contains("freshpkg"),
        "{table}"
    );

    // Release the quarantined version from the queue.
    b.go(&format!("{base}/console/quarantine"));
    let queue = b.text("#queue");
    assert!(
        queue.contains("freshpkg") && queue.contains("cooldown"),
        "{queue}"
    );
    b.screenshot("quarantine");
    b.click("#queue tr.queued button.release");
    assert!(b.text("#flash").contains("freshpkg 1.0.0 released"));
    assert!(b.text("#overrides").contains("allow"));
    let v = w.venv("consolevenv");
    let out = pip_install(&w, &v, "freshpkg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Claim a public name: it is refused publicly from the next request on.
    b.go(&format!("{base}/console/claims"));
    b.type_in("#claim-name", "Steady");
    b.type_in("#claim-why", "internal fork");
    b.click("#claim");
    assert!(b.text("#flash").contains("steady is claimed"));
    assert!(
        b.text("#claims")
            .contains("console: admin_token: internal fork")
    );
    b.screenshot("claims");
    let (st, h, _) = http(w.port, "GET", "/simple/steady/", &[]);
    assert_eq!(st, 403);
    assert!(
        header(&h, "x-pickguard-reason")
            .unwrap()
            .contains("claimed")
    );

    // The session cookie is HttpOnly and strict; a form without this
    // session's CSRF token, or posted from another origin, is refused.
    let sid = b.cookie("pickguard_console");
    let cookie = format!("pickguard_console={sid}");
    let post = |body: &str, origin: Option<&str>| -> u16 {
        let mut s = TcpStream::connect(("127.0.0.1", w.port)).unwrap();
        let origin = origin
            .map(|o| format!("Origin: {o}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "POST /console/claims/add HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: {cookie}\r\n{origin}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            w.port,
            body.len()
        )
        .unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r.split(' ').nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(post("csrf=wrong&name=publicdep", None), 403);
    b.go(&format!("{base}/console/claims"));
    let csrf_el = b.find("#claim-form input[name=csrf]");
    let csrf = b.call("GET", &format!("/element/{csrf_el}/property/value"), None);
    let csrf = csrf.as_str().unwrap();
    assert_eq!(
        post(
            &format!("csrf={csrf}&name=publicdep"),
            Some("http://evil.example")
        ),
        403
    );
    assert_eq!(
        http(w.port, "GET", "/simple/publicdep/", &[]).0,
        200,
        "publicdep was claimed by a forged form"
    );
    assert_eq!(
        post(&format!("csrf={csrf}&name=publicdep"), Some(&base)),
        303
    );
    b.go(&format!("{base}/console/feed"));
    assert!(b.text("#feed-counts").contains("0 advisories"));
    b.screenshot("feed");
    // Logged out: the session is gone.
    b.go(&format!("{base}/console/"));
    b.click("header form button");
    b.wait_url("/console/login");
    let (st, _, _) = http(w.port, "GET", "/console/claims", &[("Cookie", &cookie)]);
    assert_eq!(st, 303, "the session outlived its logout");
    // The audit log says who did what.
    let audit = std::fs::read_to_string(w.dir.path().join("data/audit.jsonl")).unwrap();
    for d in [
        "console-login",
        "console-release",
        "console-claim",
        "console-login-refused",
    ] {
        assert!(audit.contains(&format!("\"{d}\"")), "{d} not logged");
    }
}

/// Every file under `dir` (recursively).
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// One request with a body: (status, headers lower-cased, body).
fn http_body(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let hs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    (status, hs, buf[split + 4..].to_vec())
}

const ADMIN: (&str, &str) = ("Authorization", "Bearer s3cret");

/// Issue 19 item 2: replicas on one PostgreSQL and one shared files
/// directory are one firewall. A claim, a block, an upload and a console
/// session made through one replica hold on every other at its next
/// request; two replicas filling one file store it once and verified; a
/// replica killed mid-download leaves nothing half-written visible; with the
/// database down every replica fails closed, and recovers when it is back.
#[test]
fn replicas_on_postgres_are_one_firewall() {
    let pg = common::Postgres::start();
    let shared = tempfile::tempdir().unwrap();
    let storage = format!(
        "[storage]\ndatabase = \"{}\"\ndatabase_pool = 4\nfiles_dir = \"{}\"\n",
        pg.url(),
        shared.path().display()
    );
    // Pages are kept for five minutes: a replica must drop what it rendered
    // when another changes the registry, not when its cache expires. The
    // public index sends files at ~400 KB/s (bigpkg takes five seconds).
    let w = World::start_env(
        "page_ttl_secs = 300\n",
        &storage,
        &[
            ("SERVE_INDEX_BYTES_PER_SEC", "400000"),
            ("SERVE_INDEX_SLOW_PAGES", "colorfulx"),
        ],
    );
    let mut replicas = vec![(None, w.port)];
    for i in 2..=3 {
        let (p, port) = replica(&w, i);
        replicas.push((Some(p), port));
    }
    let ports: Vec<u16> = replicas.iter().map(|r| r.1).collect();
    let (r1, r2, r3) = (ports[0], ports[1], ports[2]);
    for &p in &ports {
        let (st, _, body) = http(p, "GET", "/readyz", &[]);
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    }

    // A claim through replica 1 holds on 2 and 3 at once, though replica 2
    // rendered the public page a moment ago and keeps pages for 5 minutes.
    assert_eq!(
        json_page(r2, "publicdep")["files"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(http(r2, "GET", "/simple/publicdep/", &[]).0, 200);
    let before = public_hits(&w, "publicdep");
    assert_eq!(
        post(r1, "/admin/claims", r#"{"names": ["publicdep"]}"#, ADMIN),
        200
    );
    for &p in &[r2, r3] {
        let (st, h, _) = http(p, "GET", "/simple/publicdep/", &[]);
        assert_eq!(
            st, 403,
            "replica {p} still serves the public publicdep: {h:?}"
        );
        assert!(
            header(&h, "x-pickguard-reason")
                .unwrap()
                .contains("claimed"),
            "{h:?}"
        );
    }
    let v = w.venv("claimed");
    for &p in &[r2, r3] {
        let out = pip_install_at(&w, p, &v, "publicdep");
        assert!(
            !out.status.success(),
            "pip installed a claimed name through {p}"
        );
    }
    assert_eq!(
        public_hits(&w, "publicdep"),
        before,
        "a replica asked the public index for a claimed name"
    );
    // Released through replica 3: served again by 1.
    assert_eq!(
        http_body(r3, "DELETE", "/admin/claims/publicdep", &[ADMIN], b"").0,
        200
    );
    assert_eq!(http(r1, "GET", "/simple/publicdep/", &[]).0, 200);

    // A page decided before a claim is not served after it: a slow listing
    // of colorfulx starts on replica 1, colorfulx is claimed through replica
    // 2 meanwhile, another request makes replica 1 notice the claim, and
    // then the slow listing finishes (and is kept, under the old registry).
    let slow = std::thread::spawn(move || http(r1, "GET", "/simple/colorfulx/", &[]).0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        post(r2, "/admin/claims", r#"{"names": ["colorfulx"]}"#, ADMIN),
        200
    );
    assert_eq!(http(r1, "GET", "/simple/steady/", &[]).0, 200);
    assert_eq!(slow.join().unwrap(), 200, "decided before the claim");
    let (st, h, _) = http(r1, "GET", "/simple/colorfulx/", &[]);
    assert_eq!(
        st, 403,
        "replica 1 served a page decided before the claim: {h:?}"
    );
    assert_eq!(
        http_body(r1, "DELETE", "/admin/claims/colorfulx", &[ADMIN], b"").0,
        200
    );

    // A block through replica 2 holds on 1 and 3.
    let steady = |p: u16| -> Vec<String> {
        json_page(p, "steady")["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["filename"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(steady(r1).len(), 2);
    assert_eq!(steady(r3).len(), 2);
    assert_eq!(
        post(
            r2,
            "/admin/quarantine/block",
            r#"{"project": "steady", "version": "1.1.0"}"#,
            ADMIN
        ),
        200
    );
    assert_eq!(steady(r1), ["steady-1.0.0-py3-none-any.whl"]);
    assert_eq!(steady(r3), ["steady-1.0.0-py3-none-any.whl"]);

    // An upload through replica 3 is served by 1 (the files directory is
    // shared) and its name is claimed for 2 (the registry is).
    let wheel = fixture_wheel(&w, "replicated-pkg", "1.0.0");
    let out = uv_publish(&w, r3, &wheel, "up");
    assert!(
        out.status.success(),
        "uv publish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    installs_hosted(&w, r1, "hosted", "replicated-pkg", "replicated_pkg");
    let (_, _, claims) = http(r2, "GET", "/admin/claims", &[ADMIN]);
    assert!(String::from_utf8_lossy(&claims).contains("replicated-pkg"));

    // A second version uploaded through replica 2 (the name is claimed
    // already, so no claim is written) is listed by replica 1 at once,
    // though replica 1 keeps pages for five minutes; so is its deletion.
    let versions = |p: u16| -> usize {
        json_page(p, "replicated-pkg")["files"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(versions(r1), 1);
    let wheel2 = fixture_wheel(&w, "replicated-pkg", "2.0.0");
    let out = uv_publish(&w, r2, &wheel2, "up");
    assert!(
        out.status.success(),
        "uv publish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        versions(r1),
        2,
        "replica 1 missed an upload through replica 2"
    );
    let name = wheel2.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        http_body(
            r3,
            "DELETE",
            &format!("/admin/files/replicated-pkg/{name}"),
            &[ADMIN],
            b""
        )
        .0,
        200
    );
    assert_eq!(
        versions(r1),
        1,
        "replica 1 lists a file deleted through replica 3"
    );

    // A console session made on replica 1 is good on replica 2.
    let (st, h, _) = http_body(
        r1,
        "POST",
        "/console/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"token=s3cret",
    );
    assert_eq!(st, 303);
    let cookie = header(&h, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (st, _, body) = http(r2, "GET", "/console/claims", &[("Cookie", &cookie)]);
    assert_eq!(st, 200, "replica 2 does not know replica 1's session");
    assert!(String::from_utf8_lossy(&body).contains("replicated-pkg"));
    // The decision log is shared: replica 1 shows what replica 3 decided.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, _, body) = http(
            r1,
            "GET",
            "/admin/decisions?project=publicdep&limit=100",
            &[ADMIN],
        );
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let n = doc["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["status"] == 403)
            .count();
        // The 403s were answered by replicas 2 and 3 only.
        if n >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica 1 never showed the others' decisions: {doc}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Two replicas fill one file at once: both serve verified bytes, the
    // shared cache holds it once. Replica 2 is killed in the middle of the
    // same download; nothing it wrote is visible.
    let page = json_page(r1, "bigpkg");
    let f = &page["files"][0];
    let url = f["url"].as_str().unwrap().to_owned();
    let sha = f["hashes"]["sha256"].as_str().unwrap().to_owned();
    let path = url[url.find("/files/").expect("a /files/ URL")..].to_owned();
    let mut victim = replicas[1].0.take().unwrap();
    {
        let mut s = TcpStream::connect(("127.0.0.1", r2)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut got = vec![0u8; 64 << 10];
        s.read_exact(&mut got).unwrap();
        victim.0.kill().unwrap();
        let _ = victim.0.wait();
    }
    let finals = |dir: &Path| -> Vec<PathBuf> {
        walk_files(dir)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("bigpkg")
            })
            .collect()
    };
    assert!(
        finals(&shared.path().join("files")).is_empty(),
        "a killed download left a file under its final name"
    );
    let fetch = move |port: u16, path: String| {
        std::thread::spawn(move || {
            let (st, _, body) = http(port, "GET", &path, &[]);
            (st, body)
        })
    };
    let (a, b) = (fetch(r1, path.clone()), fetch(r3, path.clone()));
    for (st, body) in [a.join().unwrap(), b.join().unwrap()] {
        assert_eq!(st, 200);
        assert_eq!(body.len(), 2098324, "not the whole file");
        assert_eq!(
            hex(&<sha2_shim::Sha256 as sha2_shim::Digest>::digest(&body)),
            sha
        );
    }
    let stored = finals(&shared.path().join("files"));
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        hex(&<sha2_shim::Sha256 as sha2_shim::Digest>::digest(
            std::fs::read(&stored[0]).unwrap()
        )),
        sha
    );

    // The database goes away: every replica fails closed (not ready, no
    // public page, no public request), and comes back with it.
    pg.down();
    let hits = public_hits(&w, "/simple/");
    for &p in &[r1, r3] {
        assert_eq!(http(p, "GET", "/readyz", &[]).0, 503);
        let (st, h, _) = http(p, "GET", "/simple/publicdep/", &[]);
        assert!(
            st >= 403,
            "replica {p} answered {st} without its registry: {h:?}"
        );
        let (st, _, _) = http(p, "GET", "/simple/steady/", &[]);
        assert!(st >= 403, "replica {p} served steady without its registry");
    }
    let v = w.venv("down");
    assert!(!pip_install_at(&w, r1, &v, "publicdep").status.success());
    assert_eq!(
        public_hits(&w, "/simple/"),
        hits,
        "a public index was asked with the registry down"
    );
    pg.up();
    let deadline = Instant::now() + Duration::from_secs(30);
    for &p in &[r1, r3] {
        while http(p, "GET", "/readyz", &[]).0 != 200 {
            assert!(Instant::now() < deadline, "replica {p} did not recover");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let out = pip_install_at(&w, r3, &v, "publicdep");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every registry query gives the same answers on SQLite and PostgreSQL,
/// including the rules that decide: a later record replaces an advisory
/// only when it is later; a change made through another connection is
/// noticed once; sessions past the cap push out the oldest.
#[test]
fn registry_answers_alike_on_sqlite_and_postgres() {
    use pickguard_firewall::db::Db;
    use pickguard_firewall::feed::{Advisory, Spec};
    let pg = common::Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("s.sqlite").display());
    let adv = |id: &str, project: &str, modified: &str, all: bool| Advisory {
        id: id.into(),
        project: project.into(),
        modified: modified.into(),
        withdrawn: None,
        summary: "s".into(),
        spec: Spec {
            all,
            versions: vec!["1.0".into()],
            ..Spec::default()
        },
        source: "t".into(),
    };
    let transcript = |url: &str| -> Vec<String> {
        let db = Db::connect(url, 2).unwrap();
        let other = Db::connect(url, 2).unwrap();
        let mut t = Vec::new();
        let mut say = |x: String| t.push(x);
        say(format!("first look {}", db.changed_elsewhere()));
        say(format!("claim {}", db.claim("acme-x", "admin").unwrap()));
        say(format!("again {}", db.claim("acme-x", "other").unwrap()));
        say(format!("own write elsewhere {}", db.changed_elsewhere()));
        say(format!(
            "claimed {:?}",
            db.claimed("acme-x").unwrap().map(|c| c.source)
        ));
        say(format!(
            "unclaimed {:?}",
            db.claimed("nope").unwrap().map(|c| c.source)
        ));
        other.set_override("steady", "1.1.0", "block").unwrap();
        say(format!(
            "other's write elsewhere {} then {}",
            db.changed_elsewhere(),
            db.changed_elsewhere()
        ));
        other.set_override("steady", "1.1.0", "allow").unwrap();
        say(format!("overrides {:?}", db.overrides("steady").unwrap()));
        say(format!("all overrides {:?}", db.all_overrides().unwrap()));
        say(format!(
            "store {:?}",
            db.store_advisories(&[adv("MAL-1", "x", "2026-01-02T00:00:00Z", false)])
                .unwrap()
        ));
        say(format!(
            "older {:?}",
            db.store_advisories(&[adv("MAL-1", "x", "2026-01-01T00:00:00Z", true)])
                .unwrap()
        ));
        say(format!(
            "later, other project {:?}",
            db.store_advisories(&[adv("MAL-1", "y", "2026-01-03T00:00:00Z", true)])
                .unwrap()
        ));
        let a = db.advisories("x").unwrap();
        say(format!(
            "x {} {}",
            a.len(),
            a.first().map(|a| a.spec.all).unwrap_or_default()
        ));
        say(format!("counts {:?}", db.feed_counts().unwrap().0));
        say(format!(
            "seen before {:?}",
            db.record_versions("p", "pypi", &["1.0".into(), "2.0".into()])
                .unwrap()
        ));
        say(format!("seen after {:?}", {
            let mut v = db.record_versions("p", "pypi", &["2.0".into()]).unwrap();
            v.sort();
            v
        }));
        say(format!(
            "files {:?}",
            db.check_files("pypi", &[("a.whl".into(), "aa".into())])
                .unwrap()
        ));
        say(format!(
            "files changed {:?}",
            db.check_files("pypi", &[("a.whl".into(), "bb".into())])
                .unwrap()
        ));
        say(format!(
            "forget {} {}",
            db.forget_file("pypi", "a.whl").unwrap(),
            db.forget_file("pypi", "a.whl").unwrap()
        ));
        for i in 0..5 {
            db.put_session(
                &format!("k{i}"),
                "c",
                "admin",
                &format!("{:020}", 100 + i),
                &format!("{:020}", 50),
                3,
            )
            .unwrap();
        }
        say(format!(
            "sessions {:?} {:?}",
            db.session("k0").unwrap().is_some(),
            db.session("k4").unwrap().map(|s| s.1)
        ));
        db.put_session(
            "k9",
            "c",
            "admin",
            &format!("{:020}", 300),
            &format!("{:020}", 200),
            3,
        )
        .unwrap();
        say(format!(
            "expired gone {:?}",
            db.session("k4").unwrap().is_some()
        ));
        db.drop_session("k9").unwrap();
        say(format!("dropped {:?}", db.session("k9").unwrap().is_some()));
        db.append_decisions(&[
            ("t1".into(), Some("p".into()), "{\"n\":1}".into()),
            ("t2".into(), None, "{\"n\":2}".into()),
        ])
        .unwrap();
        other
            .append_decisions(&[("t3".into(), Some("p".into()), "{\"n\":3}".into())])
            .unwrap();
        say(format!(
            "recent {:?} {:?}",
            db.recent_decisions(2, None).unwrap(),
            db.recent_decisions(10, Some("p")).unwrap()
        ));
        db.append_decisions(&[("2020-01-01T00:00:00Z".into(), None, "{\"old\":1}".into())])
            .unwrap();
        say(format!(
            "pruned {} then {}",
            db.prune_decisions("2021-01-01T00:00:00Z").unwrap(),
            db.prune_decisions("2021-01-01T00:00:00Z").unwrap()
        ));
        // PostgreSQL text cannot hold NUL; upstream pages and advisories can.
        // Stored and read back as they were, and one such value never fails
        // the rest of its batch.
        say(format!(
            "nul files {:?} then {:?}",
            db.check_files(
                "pypi",
                &[
                    ("b\0.whl".into(), "cc".into()),
                    ("c\\.whl".into(), "dd".into())
                ]
            )
            .unwrap(),
            db.check_files(
                "pypi",
                &[
                    ("b\0.whl".into(), "ee".into()),
                    ("c\\.whl".into(), "dd".into())
                ]
            )
            .unwrap()
        ));
        let mut nul = adv("MAL-9", "z", "2026-01-01T00:00:00Z", true);
        nul.summary = "evil\0summary \\0 x".into();
        say(format!(
            "nul advisory {:?}",
            db.store_advisories(&[nul.clone()]).unwrap().0
        ));
        say(format!(
            "nul read back {}",
            db.advisories("z").unwrap()[0].summary == nul.summary
        ));
        say(format!(
            "nul versions {:?}",
            db.record_versions("q", "pypi", &["1\0".into()]).unwrap()
        ));
        say(format!("nul seen {:?}", db.seen_versions("q").unwrap()));
        say(format!(
            "unclaim {} {}",
            db.unclaim("acme-x").unwrap(),
            db.unclaim("acme-x").unwrap()
        ));
        say(format!("claims {}", db.claims().unwrap().len()));
        t
    };
    let a = transcript(&sqlite);
    let b = transcript(&pg.url());
    assert_eq!(a, b, "the backends disagree");
    // And the answers are the rules', not merely equal.
    let expect = [
        "first look false",
        "claim true",
        "again false",
        "own write elsewhere false",
        "claimed Some(\"admin\")",
        "other's write elsewhere true then false",
        "store (1, 0, [])",
        "older (0, 1, [])",
        "x 1 false",
        "seen before []",
        "seen after [\"1.0\", \"2.0\"]",
        "files []",
        "files changed [(\"a.whl\", \"aa\")]",
        "forget true false",
        "sessions false Some(\"admin\")",
        "expired gone false",
        "dropped false",
        "recent [\"{\\\"n\\\":3}\", \"{\\\"n\\\":2}\"] [\"{\\\"n\\\":3}\", \"{\\\"n\\\":1}\"]",
        "unclaim true false",
        "pruned 1 then 0",
        "nul files [] then [(\"b\\0.whl\", \"cc\")]",
        "nul advisory 1",
        "nul read back true",
        "nul seen [\"1\\0\"]",
    ];
    for e in expect {
        assert!(a.iter().any(|l| l == e), "missing {e:?} in {a:#?}");
    }
    assert!(
        a.iter()
            .any(|l| l.starts_with("later, other project (1, 0, [\"MAL-1: a later version")),
        "{a:#?}"
    );
}

/// `firewall migrate` moves a firewall from its SQLite file to PostgreSQL
/// and a shared files directory: what it decided before (a claim, a block,
/// an advisory, an uploaded file) holds after, on a replica that never saw
/// the old data directory. A second run refuses to merge.
#[test]
fn migrate_moves_the_registry_and_files_to_postgres() {
    let mut w = World::start();
    let feed = osv_feed();
    let cfg = w.dir.path().join("firewall.toml");
    common::pickguard()
        .args(["firewall", "feed", "import", "-c"])
        .arg(&cfg)
        .arg(feed.path())
        .ok();
    // A public download, so the cache holds a file to move.
    let v0 = w.venv("before");
    let out = pip_install(&w, &v0, "publicdep");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        post(
            w.port,
            "/admin/claims",
            r#"{"names": ["publicdep"]}"#,
            ADMIN
        ),
        200
    );
    assert_eq!(
        post(
            w.port,
            "/admin/quarantine/block",
            r#"{"project": "bigpkg", "version": "1.0.0"}"#,
            ADMIN
        ),
        200
    );
    publish(&w, w.port, "moved-pkg", "1.0.0");
    drop(w.firewall.take());

    let pg = common::Postgres::start();
    let shared = tempfile::tempdir().unwrap();
    let migrate = || {
        common::pickguard()
            .args(["firewall", "migrate", "-c"])
            .arg(&cfg)
            .args(["--to", &pg.url(), "--files-to"])
            .arg(shared.path())
            .output()
            .unwrap()
    };
    // A cached file damaged on disk is not copied (it would be served as
    // verified), and nothing is written to the target registry.
    let cached: Vec<PathBuf> = walk_files(&w.dir.path().join("data/files"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".whl"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let good = std::fs::read(&cached[0]).unwrap();
    std::fs::write(&cached[0], &good[..good.len() / 2]).unwrap();
    let out = migrate();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("damaged"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        walk_files(shared.path()).iter().all(|p| !p
            .to_string_lossy()
            .ends_with("publicdep-1.0.0-py3-none-any.whl")),
        "a damaged file was copied under its name"
    );
    // The same damaged bytes already at the target (an rsync before the
    // migration): still refused, not taken as copied.
    let rel = cached[0]
        .strip_prefix(w.dir.path().join("data"))
        .unwrap()
        .to_path_buf();
    let pre = shared.path().join(&rel);
    std::fs::create_dir_all(pre.parent().unwrap()).unwrap();
    std::fs::write(&pre, &good[..good.len() / 2]).unwrap();
    let out = migrate();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("damaged"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&pre).unwrap();
    std::fs::write(&cached[0], &good).unwrap();
    let out = migrate();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("claims 2") && said.contains("overrides 1"),
        "{said}"
    );
    assert!(shared.path().join("hosted/moved-pkg").is_dir());
    let again = migrate();
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // A replica with an empty data directory, on the migrated storage.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("data_dir = \"{}\"", w.dir.path().join("data").display()),
        &format!("data_dir = \"{}\"", w.dir.path().join("fresh").display()),
    ) + &format!(
        "[storage]\ndatabase = \"{}\"\nfiles_dir = \"{}\"\n",
        pg.url(),
        shared.path().display()
    );
    let cfg2 = w.dir.path().join("replica.toml");
    std::fs::write(&cfg2, text).unwrap();
    let (_fw, port) = spawn_firewall(&cfg2, w.dir.path().join("firewall-replica.log"));
    assert_eq!(
        http(port, "GET", "/simple/publicdep/", &[]).0,
        403,
        "the claim was lost"
    );
    let (st, h, _) = http(port, "GET", "/simple/bigpkg/", &[]);
    assert_eq!(st, 403, "the block was lost: {h:?}");
    let (st, h, _) = http(port, "GET", "/simple/steady/", &[]);
    assert_eq!(st, 403, "the advisory was lost: {h:?}");
    assert!(
        header(&h, "x-pickguard-reason")
            .unwrap()
            .contains("MAL-2099-0002"),
        "{h:?}"
    );
    colorfulx_listed_without_2_0_0(port);
    installs_hosted(&w, port, "moved", "moved-pkg", "moved_pkg");
}

/// A database that stalls rather than stops (a table locked by a
/// `VACUUM FULL` or an `ALTER`, a server paused): requests fail closed
/// within seconds, never serve what the locked rule would hide, the replica
/// leaves the pool (/readyz 503) and stays alive (/healthz answers at once);
/// all is well again when the database is.
#[test]
fn a_stalled_registry_fails_closed_and_the_replica_stays_alive() {
    let pg = common::Postgres::start();
    let shared = tempfile::tempdir().unwrap();
    let w = World::start_full(
        "page_ttl_secs = 300\n",
        &format!(
            "[storage]\ndatabase = \"{}\"\nfiles_dir = \"{}\"\n",
            pg.url(),
            shared.path().display()
        ),
    );
    let port = w.port;
    let steady = |p: u16| -> (u16, String) {
        let (st, _, body) = http(
            p,
            "GET",
            "/simple/steady/",
            &[("Accept", "application/vnd.pypi.simple.v1+json")],
        );
        (st, String::from_utf8_lossy(&body).into_owned())
    };
    assert_eq!(steady(port).0, 200);
    // A public 9.0.0 appears: an outlier over the history 1.0.0 / 1.1.0.
    w.add_public_release("steady", "9.0.0");
    // The history and the file records are locked away.
    let mut lock = Command::new(pg.bin_path("psql"))
        .args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "pickguard",
            "postgres",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    lock.stdin
        .as_mut()
        .unwrap()
        .write_all(
            b"BEGIN; LOCK TABLE seen, files_seen IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120);\n",
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let page = std::thread::spawn(move || steady(port));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(http(port, "GET", "/healthz", &[]).0, 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "/healthz waited {:?} behind the database",
        t.elapsed()
    );
    let t = Instant::now();
    assert_eq!(
        http(port, "GET", "/readyz", &[]).0,
        503,
        "ready with a table locked away"
    );
    assert!(
        t.elapsed() < Duration::from_secs(12),
        "/readyz took {:?}",
        t.elapsed()
    );
    let (st, body) = page.join().unwrap();
    assert!(
        !body.contains("steady-9.0.0"),
        "served the outlier with its history locked away ({st}): {body}"
    );
    let _ = lock.kill();
    let _ = lock.wait();
    // The server keeps the session (and its lock) until told to end it.
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/readyz", &[]).0 != 200 {
        assert!(Instant::now() < deadline, "did not recover after the lock");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (st, body) = steady(port);
    assert_eq!(st, 200);
    assert!(
        !body.contains("steady-9.0.0") && body.contains("steady-1.1.0"),
        "{body}"
    );

    // The server paused (every PostgreSQL process stopped, as a frozen VM
    // or a partition would): the same, then it is let go.
    let pids = pg.pids();
    assert!(pids.len() > 1, "{pids:?}");
    let signal = |sig: &str| {
        for p in &pids {
            let _ = Command::new("kill").args([sig, &p.to_string()]).status();
        }
    };
    signal("-STOP");
    // The admin API says so too: no empty claim list, no "added: []".
    let (st, _, _) = http(port, "GET", "/admin/claims", &[ADMIN]);
    assert_eq!(st, 503, "an unreadable registry listed as empty");
    assert_eq!(
        post(port, "/admin/claims", r#"{"names": ["newprivate"]}"#, ADMIN),
        503,
        "a claim that was not recorded answered as done"
    );
    let t = Instant::now();
    let (st, h, _) = http(port, "GET", "/simple/publicdep/", &[]);
    assert!(st >= 403, "answered {st} with the database paused: {h:?}");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "a request waited {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert_eq!(http(port, "GET", "/healthz", &[]).0, 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "/healthz waited {:?}",
        t.elapsed()
    );
    assert_eq!(http(port, "GET", "/readyz", &[]).0, 503);
    signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/readyz", &[]).0 != 200 {
        assert!(Instant::now() < deadline, "did not recover after the pause");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(http(port, "GET", "/simple/publicdep/", &[]).0, 200);
}

/// PostgreSQL over TLS (`sslmode=require`): the server's certificate is
/// verified against `storage.database_ca`, host name included; a server
/// whose certificate another authority signed, or one that speaks no TLS,
/// is refused (the firewall does not start); "prefer" never silently falls
/// back, and a CA without `sslmode=require` is a configuration error.
#[test]
fn postgres_over_tls_is_verified() {
    use pickguard_firewall::db::Db;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for ca in ["ca", "other"] {
        openssl_ca(d, ca);
    }
    openssl_cert(
        d,
        "server",
        "127.0.0.1",
        "ca",
        "subjectAltName=IP:127.0.0.1",
    );
    let pg = common::Postgres::start_tls(&d.join("server.pem"), &d.join("server.key"));
    let url = format!("{}?sslmode=require", pg.url());
    let db =
        Db::connect_with(&url, 2, Some(&d.join("ca.pem"))).expect("TLS with the right authority");
    db.ping().unwrap();
    let ssl = db
        .read(|t| {
            t.query(
                "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
        })
        .unwrap();
    assert_eq!(
        ssl,
        vec![vec![pickguard_firewall::db::Val::Text("true".into())]],
        "the connection is not encrypted"
    );
    // libpq's strictest spelling means the same here.
    Db::connect_with(
        &url.replace("require", "verify-full"),
        2,
        Some(&d.join("ca.pem")),
    )
    .expect("sslmode=verify-full")
    .ping()
    .unwrap();
    let err = Db::connect_with(&url, 2, Some(&d.join("other.pem")))
        .err()
        .expect("another authority must be refused");
    assert!(
        format!("{err:#}").to_lowercase().contains("certificate"),
        "{err:#}"
    );
    assert!(
        Db::connect_with(&url, 2, None).is_err(),
        "a private CA's certificate accepted against the public roots"
    );
    assert!(
        Db::connect_with(&pg.url(), 2, Some(&d.join("ca.pem"))).is_err(),
        "a CA without sslmode=require must be refused, not ignored"
    );
    for spelled in [
        format!("{}?sslmode=disable", pg.url()),
        format!("{url}&sslmode=disable"),
        format!("{}?sslmode=disable&sslmode=require", pg.url()),
    ] {
        assert!(
            Db::connect_with(&spelled, 2, Some(&d.join("ca.pem"))).is_err(),
            "{spelled}: a CA given, and yet plain text or an ambiguous mode"
        );
    }
    let plain = common::Postgres::start();
    assert!(
        Db::connect_with(
            &format!("{}?sslmode=require", plain.url()),
            2,
            Some(&d.join("ca.pem"))
        )
        .is_err(),
        "a server without TLS accepted under sslmode=require"
    );
    // The firewall on it: ready; with the wrong authority it does not start.
    let cfg = |ca: &str| {
        let p = d.join(format!("fw-{ca}.toml"));
        std::fs::write(
            &p,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[upstream]]\nname = \"pypi\"\nurl = \"http://127.0.0.1:9/simple/\"\n[storage]\ndatabase = \"{url}\"\ndatabase_ca = \"{}\"\n",
                d.join(format!("data-{ca}")).display(),
                d.join(format!("{ca}.pem")).display()
            ),
        )
        .unwrap();
        p
    };
    let (_fw, port) = spawn_firewall(&cfg("ca"), d.join("fw-ca.log"));
    assert_eq!(http(port, "GET", "/readyz", &[]).0, 200);
    let out = common::pickguard()
        .args(["firewall", "serve", "--config"])
        .arg(cfg("other"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed authority `NAME.pem`/`NAME.key` in `d`, made by openssl.
fn openssl_ca(d: &Path, name: &str) {
    Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(format!("{name}.key"))
        .arg("-out")
        .arg(format!("{name}.pem"))
        .args(["-days", "2", "-subj"])
        .arg(format!("/CN=pickguard test {name}"))
        .current_dir(d)
        .ok();
}

/// `NAME.pem`/`NAME.key` in `d`: a leaf certificate for `cn` signed by the
/// authority `ca`, with the extension line `ext` (besides CA:FALSE).
fn openssl_cert(d: &Path, name: &str, cn: &str, ca: &str, ext: &str) {
    let run = |args: &[String]| {
        Command::new("openssl").args(args).current_dir(d).ok();
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    run(&s(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &format!("{name}.key"),
        "-out",
        &format!("{name}.csr"),
        "-subj",
        &format!("/CN={cn}"),
    ]));
    std::fs::write(
        d.join(format!("{name}.cnf")),
        format!("{ext}\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    run(&s(&[
        "x509",
        "-req",
        "-in",
        &format!("{name}.csr"),
        "-CA",
        &format!("{ca}.pem"),
        "-CAkey",
        &format!("{ca}.key"),
        "-CAcreateserial",
        "-out",
        &format!("{name}.pem"),
        "-days",
        "2",
        "-extfile",
        &format!("{name}.cnf"),
    ]));
}

/// Issue 19: a PostgreSQL server that authenticates clients by certificate
/// (`hostssl … cert`): the firewall presents `database_cert`/`database_key`
/// and is let in; without them, with another authority's certificate or
/// with another user's name, it is not; half a pair is a configuration error.
#[test]
fn postgres_client_certificates_are_presented() {
    use pickguard_firewall::db::Db;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for ca in ["ca", "clients", "other"] {
        openssl_ca(d, ca);
    }
    openssl_cert(
        d,
        "server",
        "127.0.0.1",
        "ca",
        "subjectAltName=IP:127.0.0.1",
    );
    let client = "extendedKeyUsage=clientAuth";
    openssl_cert(d, "fw", "pickguard", "clients", client);
    openssl_cert(d, "stranger", "pickguard", "other", client);
    openssl_cert(d, "mallory", "mallory", "clients", client);
    let pg = common::Postgres::start_tls_clients(
        &d.join("server.pem"),
        &d.join("server.key"),
        &d.join("clients.pem"),
    );
    let url = format!("{}?sslmode=require", pg.url());
    let ca = d.join("ca.pem");
    let with = |who: &str| {
        Db::connect_tls(
            &url,
            2,
            Some(&ca),
            Some((&d.join(format!("{who}.pem")), &d.join(format!("{who}.key")))),
        )
    };
    let db = with("fw").expect("the firewall's certificate is accepted");
    let dn = db
        .read(|t| {
            t.query(
                "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
        })
        .unwrap();
    assert_eq!(
        dn,
        vec![vec![pickguard_firewall::db::Val::Text(
            "/CN=pickguard".into()
        )]]
    );
    assert!(
        Db::connect_with(&url, 2, Some(&ca)).is_err(),
        "let in without a certificate"
    );
    assert!(
        with("stranger").is_err(),
        "another authority's certificate let in"
    );
    assert!(
        with("mallory").is_err(),
        "a certificate for another user let in"
    );
    assert!(
        Db::connect_tls(
            &pg.url(),
            2,
            None,
            Some((&d.join("fw.pem"), &d.join("fw.key")))
        )
        .is_err(),
        "a client certificate without sslmode=require must be refused, not ignored"
    );
    // The firewall: ready with the pair; half a pair stops it.
    let cfg = |name: &str, keys: &str| {
        let p = d.join(format!("fw-{name}.toml"));
        std::fs::write(
            &p,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[upstream]]\nname = \"pypi\"\nurl = \"http://127.0.0.1:9/simple/\"\n[storage]\ndatabase = \"{url}\"\ndatabase_ca = \"{}\"\n{keys}",
                d.join(format!("data-{name}")).display(),
                ca.display()
            ),
        )
        .unwrap();
        p
    };
    let pair = format!(
        "database_cert = \"{}\"\ndatabase_key = \"{}\"\n",
        d.join("fw.pem").display(),
        d.join("fw.key").display()
    );
    let (_fw, port) = spawn_firewall(&cfg("pair", &pair), d.join("fw-pair.log"));
    assert_eq!(http(port, "GET", "/readyz", &[]).0, 200);
    let half = format!("database_cert = \"{}\"\n", d.join("fw.pem").display());
    let out = common::pickguard()
        .args(["firewall", "serve", "--config"])
        .arg(cfg("half", &half))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("go together"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replica `i` of the world's firewall: its configuration with its own
/// `data_dir`, started.
fn replica(w: &World, i: usize) -> (Proc, u16) {
    let cfg = std::fs::read_to_string(w.dir.path().join("firewall.toml")).unwrap();
    let c = cfg.replace(
        &format!("data_dir = \"{}\"", w.dir.path().join("data").display()),
        &format!(
            "data_dir = \"{}\"",
            w.dir.path().join(format!("data{i}")).display()
        ),
    );
    assert_ne!(c, cfg);
    let path = w.dir.path().join(format!("firewall{i}.toml"));
    std::fs::write(&path, c).unwrap();
    spawn_firewall(&path, w.dir.path().join(format!("firewall{i}.log")))
}

/// A twine-style upload of `wheel` (as `filename`) with the upload token:
/// the HTTP status.
fn upload_raw(port: u16, name: &str, version: &str, filename: &str, wheel: &[u8]) -> u16 {
    let b = "pickguardboundary7d3f";
    let mut body = Vec::new();
    for (k, v) in [
        (":action", "file_upload"),
        ("name", name),
        ("version", version),
    ] {
        body.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(wheel);
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={b}");
    http_body(
        port,
        "POST",
        "/legacy/",
        &[
            ("Content-Type", &ct),
            // __token__:up
            ("Authorization", "Basic X190b2tlbl9fOnVw"),
        ],
        &body,
    )
    .0
}

/// A wheel of `name` `version` whose module says `origin`.
fn wheel_with_origin(w: &World, name: &str, version: &str, origin: &str) -> Vec<u8> {
    let dir = w.dir.path().join(format!("wheels-{origin}"));
    std::fs::create_dir_all(&dir).unwrap();
    let code = "import sys; sys.path.insert(0, sys.argv[1]); import index_fixture as f; print(f.make_wheel(sys.argv[2], sys.argv[3], sys.argv[4], origin=sys.argv[5]))";
    let out = Command::new(venv_bin("python"))
        .args(["-c", code])
        .arg(common::root().join("fixtures/gen"))
        .arg(&dir)
        .args([name, version, origin])
        .ok();
    std::fs::read(dir.join(String::from_utf8_lossy(&out.stdout).trim())).unwrap()
}

fn sha256_hex(b: &[u8]) -> String {
    hex(&<sha2_shim::Sha256 as sha2_shim::Digest>::digest(b))
}

/// Issue 19 item 1, object storage: two replicas on one PostgreSQL and one
/// S3-compatible store (moto) share what either downloaded or received.
/// What the store holds is served only once verified: an object changed in
/// the bucket is refused (a cached file is fetched again from its
/// upstream and the object repaired; a hosted file is a 503, never the
/// changed bytes). Of two replicas recording one filename at once exactly
/// one wins. With the store gone, replicas are not ready, hosted names fail
/// closed, and public names not claimed are still served.
#[test]
fn replicas_share_files_through_an_object_store() {
    let pg = common::Postgres::start();
    let moto = common::Moto::start();
    moto.s3("s3.create_bucket(Bucket='shared')\n", &[]);
    let storage = format!(
        "[storage]\ndatabase = \"{}\"\ndatabase_pool = 4\nobjects = \"s3://shared/fw\"\n\
         [storage.objects_options]\nendpoint = \"{}\"\naccess_key_id = \"test\"\n\
         secret_access_key = \"test\"\nregion = \"us-east-1\"\nallow_http = \"true\"\n",
        pg.url(),
        moto.endpoint
    );
    let w = World::start_with(&storage);
    let (_p2, r2) = replica(&w, 2);
    let r1 = w.port;
    for p in [r1, r2] {
        let (st, _, body) = http(p, "GET", "/readyz", &[]);
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    }
    let keys = |prefix: &str| -> Vec<String> {
        moto.s3(
            "p = s3.get_paginator('list_objects_v2')\n\
             for page in p.paginate(Bucket='shared', Prefix=args[0]):\n    \
             for o in page.get('Contents', []):\n        print(o['Key'])\n",
            &[prefix],
        )
        .lines()
        .map(str::to_owned)
        .collect()
    };
    let object_sha = |key: &str| -> String {
        moto.s3(
            "import hashlib\nprint(hashlib.sha256(s3.get_object(Bucket='shared', Key=args[0])['Body'].read()).hexdigest())\n",
            &[key],
        )
        .trim()
        .to_owned()
    };
    let wait_key = |needle: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(k) = keys("fw/").into_iter().find(|k| k.contains(needle)) {
                return k;
            }
            assert!(
                Instant::now() < deadline,
                "nothing named {needle} reached the object store: {:?}",
                keys("")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let page = json_page(r1, "steady");
    let file = |i: usize| {
        let f = &page["files"][i];
        let url = f["url"].as_str().unwrap();
        (
            url[url.find("/files/").unwrap()..].to_owned(),
            f["filename"].as_str().unwrap().to_owned(),
            f["hashes"]["sha256"].as_str().unwrap().to_owned(),
        )
    };

    // Downloaded by replica 1, shared: replica 2 serves it without asking
    // the upstream.
    let (path, fname, sha) = file(0);
    let (st, _, body) = http(r1, "GET", &path, &[]);
    assert_eq!((st, sha256_hex(&body)), (200, sha.clone()));
    let key = wait_key(&sha);
    assert!(
        key.starts_with("fw/files/") && key.ends_with(&fname),
        "{key}"
    );
    let asked = public_hits(&w, &fname);
    let (st, _, body) = http(r2, "GET", &path, &[]);
    assert_eq!((st, sha256_hex(&body)), (200, sha.clone()));
    assert_eq!(
        public_hits(&w, &fname),
        asked,
        "replica 2 downloaded a file the object store had"
    );

    // An object changed in the bucket is not served: replica 2 fetches the
    // file from its upstream again, and the object is repaired.
    // (Same size as the file: only its hash tells.)
    let (path, fname, sha) = file(1);
    let (st, _, body) = http(r1, "GET", &path, &[]);
    assert_eq!(st, 200);
    let key = wait_key(&sha);
    moto.s3(
        "s3.put_object(Bucket='shared', Key=args[0], Body=(b'import os; os.system(\"id\")\\n' * 10000)[:int(args[1])])\n",
        &[&key, &body.len().to_string()],
    );
    assert_ne!(object_sha(&key), sha);
    let asked = public_hits(&w, &fname);
    let (st, _, body) = http(r2, "GET", &path, &[]);
    assert_eq!(
        (st, sha256_hex(&body)),
        (200, sha.clone()),
        "replica 2 served bytes the index does not list"
    );
    assert_eq!(public_hits(&w, &fname), asked + 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while keys(&key).is_empty() || object_sha(&key) != sha {
        assert!(
            Instant::now() < deadline,
            "the changed object was never repaired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        std::fs::read_to_string(w.dir.path().join("firewall2.log"))
            .unwrap()
            .contains("object-hash-mismatch")
    );

    // Uploaded through replica 1, installed with pip through replica 2.
    publish(&w, r1, "objstore-pkg", "1.0.0");
    installs_hosted(&w, r2, "obj-hosted", "objstore-pkg", "objstore_pkg");
    let hosted = keys("fw/hosted/objstore-pkg/");
    assert_eq!(hosted.len(), 2, "one record and one blob: {hosted:?}");

    // One filename recorded through both replicas at once, with different
    // bytes: exactly one wins, and what is served is the winner's.
    for v in ["2.0.0", "3.0.0", "4.0.0"] {
        let a = wheel_with_origin(&w, "objstore-pkg", v, "HOSTED");
        let b = wheel_with_origin(&w, "objstore-pkg", v, "RIVAL");
        assert_ne!(sha256_hex(&a), sha256_hex(&b));
        let fname = format!("objstore_pkg-{v}-py3-none-any.whl");
        let (fa, fb) = (fname.clone(), fname.clone());
        let (ba, bb) = (a.clone(), b.clone());
        let ta = std::thread::spawn(move || upload_raw(r1, "objstore-pkg", v, &fa, &ba));
        let tb = std::thread::spawn(move || upload_raw(r2, "objstore-pkg", v, &fb, &bb));
        let (sa, sb) = (ta.join().unwrap(), tb.join().unwrap());
        let mut got = [sa, sb];
        got.sort();
        assert_eq!(got, [200, 409], "{v}: {sa} through 1, {sb} through 2");
        let winner = if sa == 200 { &a } else { &b };
        let listed: Vec<String> = json_page(r2, "objstore-pkg")["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["filename"] == fname.as_str())
            .map(|f| f["hashes"]["sha256"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(listed, [sha256_hex(winner)]);
        let blobs: Vec<String> = keys("fw/hosted/objstore-pkg/")
            .into_iter()
            .filter(|k| k.ends_with(&fname))
            .collect();
        assert_eq!(blobs.len(), 1, "the loser's bytes stayed: {blobs:?}");
    }

    // A hosted file whose bytes were changed in the bucket: 503, never them
    // (here larger than the upload: its record's size tells).
    let five = wheel_with_origin(&w, "objstore-pkg", "5.0.0", "HOSTED");
    let fname = "objstore_pkg-5.0.0-py3-none-any.whl";
    assert_eq!(upload_raw(r1, "objstore-pkg", "5.0.0", fname, &five), 200);
    let sha5 = sha256_hex(&five);
    // Each upload's bytes have a key of their own: hosted/PROJECT/SHA256/NONCE/NAME.
    let blobs = keys(&format!("fw/hosted/objstore-pkg/{sha5}/"));
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    let blob = blobs[0].clone();
    assert!(blob.ends_with(&format!("/{fname}")), "{blob}");
    moto.s3(
        "s3.put_object(Bucket='shared', Key=args[0], Body=b'not the upload' * 10000)\n",
        &[&blob],
    );
    let (st, _, body) = http(
        r2,
        "GET",
        &format!("/files/hosted/objstore-pkg/{sha5}/{fname}"),
        &[],
    );
    assert_eq!(st, 503, "{}", String::from_utf8_lossy(&body));
    assert!(!body.windows(14).any(|w| w == b"not the upload"));

    // The store goes away: not ready; a hosted (claimed) name is not
    // resolved at all; an unclaimed public name still is; an upload fails
    // and nothing is recorded.
    drop(moto);
    for p in [r1, r2] {
        assert_eq!(http(p, "GET", "/readyz", &[]).0, 503);
        let (st, h, _) = http(p, "GET", "/simple/objstore-pkg/", &[]);
        assert!(
            st >= 500,
            "replica {p} answered {st} without its hosted index: {h:?}"
        );
    }
    assert_eq!(http(r2, "GET", "/simple/publicdep/", &[]).0, 200);
    let six = wheel_with_origin(&w, "objstore-pkg", "6.0.0", "HOSTED");
    let st = upload_raw(
        r1,
        "objstore-pkg",
        "6.0.0",
        "objstore_pkg-6.0.0-py3-none-any.whl",
        &six,
    );
    assert_eq!(st, 503);
    drop(pg);
}

/// `firewall migrate --objects-to` moves a firewall's cached files and
/// hosted uploads into an object store, verified: a replica on the new
/// registry and the bucket, with an empty data directory, installs the
/// upload and serves the cached file without asking the upstream. A second
/// run finds everything there; an object changed since is an error, never
/// overwritten and never passed.
#[test]
fn migrate_moves_files_into_an_object_store() {
    let mut w = World::start();
    let cfg = w.dir.path().join("firewall.toml");
    let v0 = w.venv("before");
    let out = pip_install(&w, &v0, "publicdep");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = json_page(w.port, "publicdep");
    let f = &page["files"][0];
    let url = f["url"].as_str().unwrap();
    let path = url[url.find("/files/").unwrap()..].to_owned();
    let fname = f["filename"].as_str().unwrap().to_owned();
    let sha = f["hashes"]["sha256"].as_str().unwrap().to_owned();
    publish(&w, w.port, "moved-obj-pkg", "1.0.0");
    drop(w.firewall.take());

    let moto = common::Moto::start();
    moto.s3("s3.create_bucket(Bucket='moved')\n", &[]);
    let endpoint = format!("endpoint={}", moto.endpoint);
    let migrate = |pg: &common::Postgres| {
        common::pickguard()
            .args(["firewall", "migrate", "--json", "-c"])
            .arg(&cfg)
            .args(["--to", &pg.url(), "--objects-to", "s3://moved/fw"])
            .args(["--objects-option", &endpoint])
            .args(["--objects-option", "allow_http=true"])
            .args(["--objects-option", "region=us-east-1"])
            .args(["--objects-option", "access_key_id=test"])
            .args(["--objects-option", "secret_access_key=test"])
            .output()
            .unwrap()
    };
    let migrated = |pg: &common::Postgres| -> serde_json::Value {
        let out = migrate(pg);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let pg = common::Postgres::start();
    let doc = migrated(&pg);
    assert_eq!(doc["objects"]["copied"], 2, "{doc}");

    // Again, into another empty registry: the files are there already.
    let pg2 = common::Postgres::start();
    let doc = migrated(&pg2);
    assert_eq!(
        (
            doc["objects"]["copied"].as_u64(),
            doc["objects"]["present"].as_u64()
        ),
        (Some(0), Some(2)),
        "{doc}"
    );
    drop(pg2);

    // A replica on the new registry and the bucket, nothing local.
    let storage = format!(
        "[storage]\ndatabase = \"{}\"\nobjects = \"s3://moved/fw\"\n\
         [storage.objects_options]\nendpoint = \"{}\"\naccess_key_id = \"test\"\n\
         secret_access_key = \"test\"\nregion = \"us-east-1\"\nallow_http = \"true\"\n",
        pg.url(),
        moto.endpoint
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("data_dir = \"{}\"", w.dir.path().join("data").display()),
        &format!("data_dir = \"{}\"", w.dir.path().join("fresh").display()),
    );
    let cfg2 = w.dir.path().join("after.toml");
    std::fs::write(&cfg2, format!("{text}\n{storage}")).unwrap();
    let (_fw, port) = spawn_firewall(&cfg2, w.dir.path().join("after.log"));
    installs_hosted(&w, port, "after", "moved-obj-pkg", "moved_obj_pkg");
    json_page(port, "publicdep");
    let asked = public_hits(&w, &fname);
    let (st, _, body) = http(port, "GET", &path, &[]);
    assert_eq!((st, sha256_hex(&body)), (200, sha));
    assert_eq!(
        public_hits(&w, &fname),
        asked,
        "the moved file was downloaded again"
    );

    // A cached file's object changed in the bucket since: the next run
    // stops on it. (An upload already recorded is left as it is: its
    // record names its sha256, and serving checks the bytes against it.)
    let key = moto
        .s3(
            "for o in s3.list_objects_v2(Bucket='moved', Prefix='fw/files/')['Contents']:\n    \
             print(o['Key'])\n",
            &[],
        )
        .lines()
        .find(|k| k.ends_with(".whl"))
        .unwrap()
        .to_owned();
    moto.s3(
        "s3.put_object(Bucket='moved', Key=args[0], Body=b'changed')\n",
        &[&key],
    );
    let pg3 = common::Postgres::start();
    let out = migrate(&pg3);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("other bytes") && err.contains("nothing is overwritten"),
        "{err}"
    );
    assert_eq!(
        moto.s3(
            "print(s3.get_object(Bucket='moved', Key=args[0])['Body'].read().decode())\n",
            &[&key]
        )
        .trim(),
        "changed"
    );
}

/// The attacker review of the object store, each finding as a fault a
/// proxy in front of moto injects (`fixtures/gen/s3_fault_proxy.py`): a
/// store answering 409 to one of two conditional writes in flight, an admin
/// delete racing a re-upload of the same bytes, a read returning fewer
/// bytes than the object, an unclaim while an upload is being recorded, a
/// store that lists but refuses reads. No acknowledged upload is lost, no
/// claimed name goes public, and readiness tells the truth.
#[test]
fn object_store_faults_never_lose_or_leak_an_upload() {
    let pg = common::Postgres::start();
    let moto = common::Moto::start();
    moto.s3("s3.create_bucket(Bucket='faults')\n", &[]);
    let tmp = tempfile::tempdir().unwrap();
    let rules = tmp.path().join("rules.json");
    std::fs::write(&rules, "[]").unwrap();
    let moto_port = moto.endpoint.rsplit(':').next().unwrap().to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _proxy = Proc(
        Command::new(venv_bin("python"))
            .arg(common::root().join("fixtures/gen/s3_fault_proxy.py"))
            .args([&moto_port, &port.to_string()])
            .arg(&rules)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the proxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let set = |json: &str| std::fs::write(&rules, json).unwrap();
    let storage = format!(
        "[storage]\ndatabase = \"{}\"\ndatabase_pool = 4\nobjects = \"s3://faults/fw\"\n\
         [storage.objects_options]\nendpoint = \"http://127.0.0.1:{port}\"\naccess_key_id = \"test\"\n\
         secret_access_key = \"test\"\nregion = \"us-east-1\"\nallow_http = \"true\"\n",
        pg.url()
    );
    let w = World::start_with(&storage);
    let (_p2, r2) = replica(&w, 2);
    let r1 = w.port;
    let get = |p: u16, sha: &str, name: &str| -> (u16, String) {
        let (st, _, body) = http(
            p,
            "GET",
            &format!("/files/hosted/fault-pkg/{sha}/{name}"),
            &[],
        );
        (st, sha256_hex(&body))
    };

    // One file through both replicas at once; the store answers 409 to the
    // conditional write that comes while the other is in flight.
    set(
        r#"[{"method": "PUT", "header": "If-None-Match", "contains": "pickguard.json", "action": "conflict", "secs": 2}]"#,
    );
    let one = wheel_with_origin(&w, "fault-pkg", "1.0.0", "HOSTED");
    let name1 = "fault_pkg-1.0.0-py3-none-any.whl";
    let sha1 = sha256_hex(&one);
    let (a, b) = (one.clone(), one.clone());
    let ta = std::thread::spawn(move || upload_raw(r1, "fault-pkg", "1.0.0", name1, &a));
    let tb = std::thread::spawn(move || upload_raw(r2, "fault-pkg", "1.0.0", name1, &b));
    let mut got = [ta.join().unwrap(), tb.join().unwrap()];
    got.sort();
    assert_eq!(got, [200, 409]);
    set("[]");
    for p in [r1, r2] {
        assert_eq!(
            get(p, &sha1, name1),
            (200, sha1.clone()),
            "the winner's bytes are gone"
        );
    }

    // An admin delete whose removal of the bytes is slow, and a re-upload
    // of the same file in between: the re-upload's bytes stay.
    set(&format!(
        r#"[{{"method": "DELETE", "contains": "/hosted/fault-pkg/{sha1}/", "action": "delay", "secs": 2}}]"#
    ));
    let del = std::thread::spawn(move || {
        http_body(
            r1,
            "DELETE",
            &format!("/admin/files/fault-pkg/{name1}"),
            &[ADMIN],
            b"",
        )
        .0
    });
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(upload_raw(r2, "fault-pkg", "1.0.0", name1, &one), 200);
    assert_eq!(del.join().unwrap(), 200);
    set("[]");
    assert_eq!(
        get(r1, &sha1, name1),
        (200, sha1.clone()),
        "the re-upload lost its bytes"
    );

    // A read that returns fewer bytes than the upload: 503, and the upload
    // is still whole afterwards (an upload's bytes are never deleted on a
    // bad read).
    let two = wheel_with_origin(&w, "fault-pkg", "2.0.0", "HOSTED");
    let name2 = "fault_pkg-2.0.0-py3-none-any.whl";
    let sha2 = sha256_hex(&two);
    assert_eq!(upload_raw(r1, "fault-pkg", "2.0.0", name2, &two), 200);
    set(&format!(
        r#"[{{"method": "GET", "contains": "/hosted/fault-pkg/{sha2}/", "action": "truncate", "keep": 100}}]"#
    ));
    assert_eq!(get(r2, &sha2, name2).0, 503);
    set("[]");
    assert_eq!(get(r2, &sha2, name2), (200, sha2.clone()));

    // An unclaim while an upload of that (publicly existing) name is being
    // recorded: the name is claimed again and served from the hosted index.
    assert_eq!(
        post(r1, "/admin/claims", r#"{"names": ["publicdep"]}"#, ADMIN),
        200
    );
    let pub_wheel = wheel_with_origin(&w, "publicdep", "9.0.0", "HOSTED");
    set(r#"[{"method": "PUT", "contains": "publicdep-9.0.0", "action": "delay", "secs": 2}]"#);
    let up = std::thread::spawn(move || {
        upload_raw(
            r1,
            "publicdep",
            "9.0.0",
            "publicdep-9.0.0-py3-none-any.whl",
            &pub_wheel,
        )
    });
    std::thread::sleep(Duration::from_millis(1000));
    let unclaim = http_body(r2, "DELETE", "/admin/claims/publicdep", &[ADMIN], b"").0;
    assert_eq!(up.join().unwrap(), 200);
    set("[]");
    let (_, _, claims) = http(r2, "GET", "/admin/claims", &[ADMIN]);
    assert!(
        String::from_utf8_lossy(&claims).contains("\"publicdep\""),
        "unclaim answered {unclaim}; a hosted name is left unclaimed"
    );
    for p in [r1, r2] {
        let page = json_page(p, "publicdep");
        let files = page["files"].as_array().unwrap();
        assert!(
            !files.is_empty()
                && files
                    .iter()
                    .all(|f| f["url"].as_str().unwrap().contains("/files/hosted/")),
            "replica {p} serves the public publicdep: {page}"
        );
    }

    // A store that lists but refuses reads is not ready.
    set(r#"[{"method": "GET", "contains": ".probes/ready", "action": "status", "status": 403}]"#);
    assert_eq!(http(r1, "GET", "/readyz", &[]).0, 503);
    set("[]");
    assert_eq!(http(r1, "GET", "/readyz", &[]).0, 200);
    drop(pg);
}
