//! Shared helpers: run the real binary, find the corpus.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The fixture directory: the committed corpus, or `PICKGUARD_FIXTURES`.
pub fn corpus() -> PathBuf {
    std::env::var_os("PICKGUARD_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("fixtures/corpus"))
}

pub fn pickguard() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pickguard"));
    c.env_remove("NO_COLOR").stdin(Stdio::null());
    c
}

/// Run a command and check how it ended, printing its output when it did
/// not end as expected (the one place tests say "run, assert, show stderr").
pub trait Run {
    /// Exit status 0.
    fn ok(&mut self) -> Output;
    /// Any failing exit status.
    fn fails(&mut self) -> Output;
    /// Exactly exit status `code`.
    fn code(&mut self, code: i32) -> Output;
}

fn ended(c: &mut Command, want: &dyn Fn(&std::process::ExitStatus) -> bool, what: &str) -> Output {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{:?}: {e}", c.get_program()));
    assert!(
        want(&out.status),
        "{:?} {:?}: expected {what}, got {}\n--- stdout\n{}\n--- stderr\n{}",
        c.get_program(),
        c.get_args().collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Run for Command {
    fn ok(&mut self) -> Output {
        ended(self, &|s| s.success(), "success")
    }
    fn fails(&mut self) -> Output {
        ended(self, &|s| !s.success(), "failure")
    }
    fn code(&mut self, code: i32) -> Output {
        ended(self, &|s| s.code() == Some(code), &format!("exit {code}"))
    }
}

pub fn run(args: &[&str]) -> Output {
    pickguard().args(args).output().expect("run pickguard")
}

/// `scan --format json` on paths; the document and the exit code.
pub fn scan_json(paths: &[&Path]) -> (Value, i32) {
    let mut c = pickguard();
    c.args(["scan", "--format", "json", "--no-progress"]);
    for p in paths {
        c.arg(p);
    }
    let out = c.output().expect("run pickguard");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (doc, out.status.code().unwrap_or(-1))
}

#[derive(Debug)]
pub struct Fixture {
    pub name: String,
    pub expect: String,
    pub rules: Vec<String>,
    pub load: String,
    pub marker: bool,
    pub raises: bool,
    /// Loaders under which the payload must not run (it hides from them).
    pub inert: Vec<String>,
    /// The payload is in a part pickguard knowingly does not read (the
    /// verdict must be inconclusive, never clean).
    pub unread: bool,
}

pub fn manifest(dir: &Path) -> Vec<Fixture> {
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest.json");
    let v: Value = serde_json::from_str(&text).expect("manifest JSON");
    v["fixtures"]
        .as_array()
        .expect("fixtures array")
        .iter()
        .map(|f| Fixture {
            name: f["name"].as_str().unwrap().to_owned(),
            expect: f["expect"].as_str().unwrap().to_owned(),
            rules: f["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect(),
            load: f["load"].as_str().unwrap().to_owned(),
            marker: f["marker"].as_bool().unwrap(),
            raises: f["raises"].as_bool().unwrap_or(false),
            unread: f["unread"].as_bool().unwrap_or(false),
            inert: f["inert"]
                .as_array()
                .map(|a| a.iter().map(|l| l.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default(),
        })
        .collect()
}

/// Check every manifest entry against one JSON scan of `dir`; returns mismatches.
pub fn check_corpus(dir: &Path) -> Vec<String> {
    let fixtures = manifest(dir);
    let (doc, _) = scan_json(&[dir]);
    let files = doc["files"].as_array().expect("files");
    let mut bad = Vec::new();
    for f in &fixtures {
        let Some(r) = files.iter().find(|r| {
            Path::new(r["path"].as_str().unwrap()).file_name().unwrap() == f.name.as_str()
        }) else {
            bad.push(format!("{}: not in the report", f.name));
            continue;
        };
        let verdict = r["verdict"].as_str().unwrap();
        let rules: Vec<&str> = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["rule"].as_str().unwrap())
            .collect();
        if verdict != f.expect {
            bad.push(format!(
                "{}: verdict {verdict}, expected {} (findings {rules:?})",
                f.name, f.expect
            ));
        }
        for want in &f.rules {
            if !rules.contains(&want.as_str()) {
                bad.push(format!(
                    "{}: rule {want} missing (findings {rules:?})",
                    f.name
                ));
            }
        }
    }
    bad
}

/// A tool in the test venv (`python`, `pip`, `uv`, `poetry`...).
pub fn venv_bin(tool: &str) -> PathBuf {
    let py = PathBuf::from(
        std::env::var("PICKGUARD_PYTHON").expect("PICKGUARD_PYTHON: run scripts/test.sh"),
    );
    py.parent().unwrap().join(tool)
}

/// A child process killed when dropped.
pub struct Proc(pub std::process::Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serve a fake index tree (fixtures/gen/serve_index.py) on a free loopback port.
pub fn spawn_index(root: &Path, log: &Path) -> (Proc, u16) {
    spawn_index_env(root, log, &[])
}

/// As `spawn_index`, with `env` set for the server.
pub fn spawn_index_env(root: &Path, log: &Path, env: &[(&str, &str)]) -> (Proc, u16) {
    use std::io::BufRead;
    let mut c = Command::new(venv_bin("python"))
        .arg(root_dir().join("fixtures/gen/serve_index.py"))
        .arg(root)
        .arg("0")
        .arg(log)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Proc(c), line.trim().parse().expect("port"))
}

fn root_dir() -> PathBuf {
    root()
}

/// A PostgreSQL server of the Debian package, on a free loopback port, in a
/// temporary directory; stopped (immediately) when dropped. As root the
/// server runs as the package's `postgres` user (it refuses to run as root).
pub struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    pub port: u16,
    as_user: Option<String>,
}

impl Postgres {
    fn bin(tool: &str) -> PathBuf {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed (scripts/setup-test-env.sh installs the Debian package)")
            .flatten()
            .map(|e| e.path().join("bin").join(tool))
            .filter(|p| p.exists())
            .collect();
        found.sort();
        found
            .pop()
            .unwrap_or_else(|| panic!("no {tool} under /usr/lib/postgresql"))
    }

    /// A client tool of the package (`psql`).
    pub fn bin_path(&self, tool: &str) -> PathBuf {
        Self::bin(tool)
    }

    /// Run one SQL command with psql (fails the test if psql does).
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(Self::bin("psql"))
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "pickguard",
                "postgres",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's processes: the postmaster and its children.
    pub fn pids(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).unwrap_or_default();
        let Some(main) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
        else {
            return Vec::new();
        };
        let out = Command::new("pgrep")
            .args(["-P", &main.to_string()])
            .output()
            .unwrap();
        let mut pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        pids.push(main);
        pids
    }

    fn cmd(&self, tool: &str) -> Command {
        match &self.as_user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(Self::bin(tool));
                c
            }
            None => Command::new(Self::bin(tool)),
        }
    }

    pub fn start() -> Postgres {
        Postgres::start_with(None, None)
    }

    /// A server that also speaks TLS, with `cert` and `key` (PEM files) as
    /// its certificate and key.
    pub fn start_tls(cert: &Path, key: &Path) -> Postgres {
        Postgres::start_with(Some((cert, key)), None)
    }

    /// As `start_tls`, and TCP clients must present a certificate from
    /// `client_ca` whose CN is their user name (`hostssl … cert`); the
    /// local socket stays open for pg_ctl.
    pub fn start_tls_clients(cert: &Path, key: &Path, client_ca: &Path) -> Postgres {
        Postgres::start_with(Some((cert, key)), Some(client_ca))
    }

    fn start_with(tls: Option<(&Path, &Path)>, client_ca: Option<&Path>) -> Postgres {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let data = dir.path().join("pg");
        std::fs::create_dir(&data).unwrap();
        let root = String::from_utf8_lossy(&Command::new("id").arg("-u").output().unwrap().stdout)
            .trim()
            == "0";
        let as_user = root.then(|| "postgres".to_owned());
        let mut owner = None;
        if root {
            let out = Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .unwrap();
            let uid: u32 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("a postgres user");
            let out = Command::new("id")
                .args(["-g", "postgres"])
                .output()
                .unwrap();
            let gid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
            owner = Some((uid, gid));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Postgres {
            _dir: dir,
            data,
            port,
            as_user,
        };
        let out = pg
            .cmd("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "pickguard",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&pg.data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some((cert, key)) = tls {
            // The key must belong to the server's user and be private.
            for (src, name) in [(cert, "server.crt"), (key, "server.key")] {
                let dst = pg.data.join(name);
                std::fs::copy(src, &dst).unwrap();
                std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::chown(&dst, Some(uid), Some(gid)).unwrap();
                }
            }
            let conf = pg.data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).unwrap();
            text.push_str(
                "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            );
            std::fs::write(&conf, text).unwrap();
        }
        if let Some(ca) = client_ca {
            let dst = pg.data.join("clients.crt");
            std::fs::copy(ca, &dst).unwrap();
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&dst, Some(uid), Some(gid)).unwrap();
            }
            let conf = pg.data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).unwrap();
            text.push_str("\nssl_ca_file = 'clients.crt'\n");
            std::fs::write(&conf, text).unwrap();
            std::fs::write(
                pg.data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 cert\nhostssl all all ::1/128 cert\n",
            )
            .unwrap();
        }
        pg.up();
        pg
    }

    /// postgres://pickguard@127.0.0.1:PORT/postgres
    pub fn url(&self) -> String {
        format!("postgres://pickguard@127.0.0.1:{}/postgres", self.port)
    }

    /// Start (again).
    pub fn up(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            self.port,
            self.data.display()
        );
        let out = self
            .cmd("pg_ctl")
            .args(["-w", "-t", "60", "-l"])
            .arg(self.data.join("server.log"))
            .args(["-o", &opts, "-D"])
            .arg(&self.data)
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
        );
    }

    /// Stop now (connections are cut).
    pub fn down(&self) {
        let _ = self
            .cmd("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.down();
    }
}

/// An S3-compatible server (moto's server mode, from the test venv) on
/// loopback; stopped when dropped. Buckets are made by [`Moto::s3`].
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        use std::net::{TcpListener, TcpStream};
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server from the test venv");
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..300 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Moto { child, endpoint };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("moto_server did not listen on {port} within 15 s");
    }

    /// The `AWS_*` environment of a client of this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Run Python `code` with `s3` (a boto3 client of this server) and
    /// `args` (these strings) defined; what it prints.
    pub fn s3(&self, code: &str, args: &[&str]) -> String {
        let prelude = "import sys, boto3\nargs = sys.argv[2:]\n\
            s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', \
            aws_access_key_id='test', aws_secret_access_key='test')\n";
        let out = Command::new(venv_bin("python"))
            .arg("-c")
            .arg(format!("{prelude}{code}"))
            .arg(&self.endpoint)
            .args(args)
            .ok();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Upload every file of `dir` as `prefix/<name>` into bucket `models`.
    pub fn upload(&self, dir: &Path, prefix: &str) {
        let d = dir.display().to_string();
        self.s3(
            "import os\n\
             try:\n    s3.create_bucket(Bucket='models')\n\
             except s3.exceptions.BucketAlreadyOwnedByYou:\n    pass\n\
             for n in sorted(os.listdir(args[0])):\n    \
             s3.upload_file(os.path.join(args[0], n), 'models', args[1] + '/' + n)\n",
            &[&d, prefix],
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
