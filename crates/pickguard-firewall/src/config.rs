//! `firewall.toml`. Every key is documented in docs/firewall.md.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Where state (SQLite), cached files and the audit log live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Upstream indexes, consulted in this order.
    #[serde(default = "default_upstreams", rename = "upstream")]
    pub upstreams: Vec<Upstream>,
    #[serde(default)]
    pub claims: Claims,
    /// Per-project routing: normalised name -> route.
    #[serde(default)]
    pub routes: BTreeMap<String, Route>,
    #[serde(default)]
    pub quarantine: Quarantine,
    /// Known-malicious packages from OSV advisories.
    #[serde(default)]
    pub feed: Feed,
    /// Log what quarantine would hide, hide nothing; claims and files an
    /// OSV advisory lists are enforced all the same.
    #[serde(default)]
    pub dry_run: bool,
    /// Bearer token for /admin (also PICKGUARD_ADMIN_TOKEN). No token: admin API off.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Legacy shared password for uploads (HTTP Basic, any user name; also
    /// PICKGUARD_UPLOAD_TOKEN): may publish any name. Prefer `[[token]]`.
    #[serde(default)]
    pub upload_token: Option<String>,
    /// Credentials per person or team, stored as SHA-256 hashes.
    #[serde(default, rename = "token")]
    pub tokens: Vec<Token>,
    /// Require a valid token (any role) to read /simple/ and /files/.
    #[serde(default)]
    pub require_read_token: bool,
    /// Memory the page caches may hold (estimated), in bytes.
    #[serde(default = "default_cache_max")]
    pub cache_max_bytes: u64,
    /// Largest distribution file downloaded from an upstream, in bytes (a
    /// file whose index lists a size is also held to that size).
    #[serde(default = "default_max_file")]
    pub max_file_bytes: u64,
    /// The audit log is rotated when it passes this many bytes.
    #[serde(default = "default_audit_max")]
    pub audit_max_bytes: u64,
    /// Rotated audit logs kept (`audit.jsonl.1` ... `.N`).
    #[serde(default = "default_audit_keep")]
    pub audit_keep: u32,
    /// Largest upload accepted, in bytes (streamed to disk, never held in memory).
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// When a private upstream fails and a name is not known to be private:
    /// "fail" (default: 502, the safe choice) or "public".
    #[serde(default = "default_on_private_error")]
    pub on_private_error: String,
    /// Seconds an upstream project page is reused before asking again.
    #[serde(default = "default_page_ttl")]
    pub page_ttl_secs: u64,
    /// Seconds an upstream failure is remembered (answered again without
    /// asking): clients retrying a failing upstream get the reason at once.
    #[serde(default = "default_error_ttl")]
    pub error_ttl_secs: u64,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` names the
    /// client in the audit log; from anyone else the header is ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Where the registry and the files live: the embedded default, or
    /// PostgreSQL and a shared directory for replicas.
    #[serde(default)]
    pub storage: Storage,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// `postgres://USER@HOST:PORT/DB` (PICKGUARD_DATABASE_URL wins, so a
    /// password need not be in this file). Unset: SQLite in `data_dir`.
    #[serde(default)]
    pub database: Option<String>,
    /// Connections a replica opens to PostgreSQL at most (default 8).
    #[serde(default)]
    pub database_pool: Option<usize>,
    /// Days the shared decision log (PostgreSQL) keeps a decision; 0: all.
    #[serde(default = "default_decisions_keep")]
    pub decisions_keep_days: u64,
    /// PEM file of the authorities the PostgreSQL server's certificate must
    /// chain to, with `sslmode=require` in the URL (default: public roots).
    #[serde(default)]
    pub database_ca: Option<PathBuf>,
    /// PEM certificate (chain) this replica presents to a PostgreSQL server
    /// that authenticates clients by certificate (`hostssl … cert`); with
    /// `database_key`, and `sslmode=require` in the URL.
    #[serde(default)]
    pub database_cert: Option<PathBuf>,
    /// PEM private key of `database_cert` (keep it readable by the firewall only).
    #[serde(default)]
    pub database_key: Option<PathBuf>,
    /// Directory for cached and hosted files, shared by every replica
    /// (a network file system that keeps `link` and `rename` atomic). Unset:
    /// `data_dir`.
    #[serde(default)]
    pub files_dir: Option<PathBuf>,
    /// `s3://BUCKET[/PREFIX]`: an S3-compatible object store every replica
    /// shares for cached files and uploads (src/objects.rs). Each replica
    /// still serves from its own files directory; what one replica
    /// downloaded or received, the others read from here, verified.
    #[serde(default)]
    pub objects: Option<String>,
    /// object_store's S3 options (`endpoint`, `region`, `allow_http`...)
    /// over the `AWS_*` environment; an unknown option is an error.
    #[serde(default)]
    pub objects_options: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: String,
    /// Simple API root, e.g. `https://pypi.org/simple/`.
    pub url: String,
    /// Every project this upstream serves is claimed: never resolved elsewhere.
    #[serde(default)]
    pub private: bool,
    /// Seconds to wait for a page (headers and body) and, for files, between
    /// two reads. Shorter than pip's 15 s, so clients see the firewall's reason.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Seconds to wait for a TCP/TLS connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Largest project page read from this upstream; a larger one is a failure.
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: u64,
    /// Hosts (`host` or `host:port`) this upstream's file URLs and redirects
    /// may point to, besides its own. Default for pypi.org: files.pythonhosted.org.
    #[serde(default)]
    pub file_hosts: Vec<String>,
    /// For a private upstream: treat a well-formed project page that lists no
    /// files as "this index does not have the project" (the name may then be
    /// resolved publicly). Off by default: an empty answer fails closed.
    #[serde(default)]
    pub empty_page_is_absent: bool,
}

impl Upstream {
    /// Every host its pages, files and redirects may come from.
    pub fn allowed_hosts(&self) -> Vec<String> {
        let mut hosts = self.file_hosts.clone();
        if let Ok(u) = reqwest::Url::parse(&self.url) {
            if let Some(o) = crate::upstream::origin_of(&u) {
                hosts.push(o);
            }
            if self.file_hosts.is_empty() && u.host_str() == Some("pypi.org") {
                hosts.push("files.pythonhosted.org".into());
            }
        }
        hosts
    }

    /// An upstream with every optional key at its default.
    pub fn new(name: &str, url: &str, private: bool) -> Upstream {
        Upstream {
            name: name.into(),
            url: url.into(),
            private,
            timeout_secs: default_timeout(),
            connect_timeout_secs: default_connect_timeout(),
            max_page_bytes: default_max_page_bytes(),
            file_hosts: Vec::new(),
            empty_page_is_absent: false,
        }
    }
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: the admin API, publishing any name, reading.
    Admin,
    /// Publish names matching the token's `publish` patterns; read.
    Publish,
    /// Read /simple/ and /files/ where `require_read_token` is set.
    Read,
}

/// One credential.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Who holds it (person or team): recorded in the audit log.
    pub name: String,
    /// SHA-256 of the secret, hex (`pickguard firewall hash-token` prints it).
    pub sha256: String,
    pub role: Role,
    /// Globs over normalised names this token may publish (role `publish`).
    #[serde(default)]
    pub publish: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Glob patterns over normalised names (`acme-*`): claimed even with no private release.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Names claimed explicitly.
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Upstreams allowed for this project, in order.
    pub upstreams: Vec<String>,
    /// Merge all of them (emitting PEP 708 `tracks`) instead of the first that has the project.
    #[serde(default)]
    pub merge: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quarantine {
    /// Hide public files uploaded less than this many hours ago (PEP 700 upload-time). 0: off.
    #[serde(default)]
    pub cooldown_hours: u64,
    /// Hide public files uploaded after this instant (RFC 3339).
    #[serde(default)]
    pub cutoff: Option<String>,
    /// Names (or `name==version`) exempt from quarantine (break glass).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Hide a public release whose major version exceeds the highest seen
    /// before by at least this much (the torchtriton 3.0.0 pattern). 0: off.
    #[serde(default = "default_outlier")]
    pub outlier_major_jump: u64,
    /// With a cooldown, hide files whose upstream gives no upload-time.
    #[serde(default)]
    pub require_upload_time: bool,
    /// Hide a public project whose name is nearly a claimed private name
    /// (`torchtriton` beside a claimed `pytorch-triton`: separators, a `py`/
    /// `python` prefix or suffix, or one edit apart).
    #[serde(default = "default_true")]
    pub similar_to_claimed: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    /// OSV sources imported at start and every `refresh_minutes`: files,
    /// directories (recursively: `.json` records and `.zip` archives such as
    /// OSV's `PyPI/all.zip`) and http(s) URLs of either.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Minutes between re-imports of `sources`; 0: only at start.
    #[serde(default = "default_refresh")]
    pub refresh_minutes: u64,
    /// Import only `MAL-` records (malicious packages), not vulnerabilities.
    #[serde(default)]
    pub malicious_only: bool,
    /// Advisory ids not enforced (break glass; logged at start).
    #[serde(default)]
    pub ignore: Vec<String>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            sources: Vec::new(),
            refresh_minutes: default_refresh(),
            malicious_only: false,
            ignore: Vec::new(),
        }
    }
}

fn default_refresh() -> u64 {
    60
}

impl Default for Quarantine {
    fn default() -> Self {
        Quarantine {
            cooldown_hours: 0,
            cutoff: None,
            allow: Vec::new(),
            outlier_major_jump: default_outlier(),
            require_upload_time: false,
            similar_to_claimed: true,
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        toml::from_str("").expect("storage defaults")
    }
}

fn default_decisions_keep() -> u64 {
    90
}

fn default_listen() -> String {
    "127.0.0.1:3141".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./pickguard-data")
}
fn default_upstreams() -> Vec<Upstream> {
    vec![Upstream::new("pypi", "https://pypi.org/simple/", false)]
}
fn default_on_private_error() -> String {
    "fail".into()
}
fn default_page_ttl() -> u64 {
    60
}
fn default_cache_max() -> u64 {
    256 << 20
}
fn default_max_file() -> u64 {
    16 << 30
}
fn default_audit_max() -> u64 {
    100 << 20
}
fn default_audit_keep() -> u32 {
    10
}
fn default_max_upload() -> u64 {
    1 << 30
}
fn default_error_ttl() -> u64 {
    10
}
fn default_timeout() -> u64 {
    10
}
fn default_connect_timeout() -> u64 {
    3
}
fn default_max_page_bytes() -> u64 {
    32 << 20
}
fn default_outlier() -> u64 {
    2
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl Config {
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let c: Config = toml::from_str(text)?;
        c.validate()?;
        Ok(c)
    }

    /// The registry's URL: PICKGUARD_DATABASE_URL, `storage.database`, or
    /// the SQLite file in `data_dir`.
    pub fn database_url(&self) -> String {
        std::env::var("PICKGUARD_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| self.storage.database.clone())
            .unwrap_or_else(|| format!("sqlite:{}", self.data_dir.join("state.sqlite").display()))
    }

    /// Open the registry this configuration names.
    pub fn open_db(&self) -> anyhow::Result<crate::db::Db> {
        let url = self.database_url();
        if url.starts_with("sqlite:") {
            std::fs::create_dir_all(&self.data_dir)?;
        }
        crate::db::Db::connect_tls(
            &url,
            self.storage.database_pool.unwrap_or(8),
            self.storage.database_ca.as_deref(),
            self.database_client_cert()?,
        )
    }

    /// `database_cert` and `database_key`, which come together or not at all.
    pub fn database_client_cert(&self) -> anyhow::Result<Option<(&Path, &Path)>> {
        match (&self.storage.database_cert, &self.storage.database_key) {
            (Some(c), Some(k)) => Ok(Some((c.as_path(), k.as_path()))),
            (None, None) => Ok(None),
            _ => anyhow::bail!(
                "storage.database_cert and storage.database_key go together: set both or neither"
            ),
        }
    }

    /// Where `files/` (the cache) and `hosted/` (uploads) are.
    pub fn files_root(&self) -> PathBuf {
        self.storage
            .files_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.clone())
    }

    /// `trusted_proxies` as networks.
    pub fn proxy_nets(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        self.trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!("trusted_proxies: {p:?} is not an address or CIDR block")
                    })
            })
            .collect()
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.proxy_nets()?;
        let db = self.database_url();
        anyhow::ensure!(
            db.starts_with("sqlite:")
                || db.starts_with("postgres://")
                || db.starts_with("postgresql://"),
            "storage.database must be a postgres:// URL (or unset for the embedded SQLite file)"
        );
        // The bucket's hosted files are protected by the registry's claims;
        // replicas with registries of their own would not know each other's.
        anyhow::ensure!(
            self.storage.objects.is_none() || !db.starts_with("sqlite:"),
            "storage.objects needs storage.database (PostgreSQL) shared by every replica that shares the bucket: uploads are protected by the registry's claims"
        );
        anyhow::ensure!(
            self.storage
                .database_pool
                .is_none_or(|n| (1..=1000).contains(&n)),
            "storage.database_pool must be between 1 and 1000"
        );
        let mut names = std::collections::HashSet::new();
        for u in &self.upstreams {
            anyhow::ensure!(
                names.insert(&u.name),
                "upstream {:?} is defined twice",
                u.name
            );
            anyhow::ensure!(
                u.name != "hosted" && !u.name.is_empty() && !u.name.contains('/'),
                "upstream name {:?} is not allowed",
                u.name
            );
            anyhow::ensure!(
                (u.url.starts_with("http://") || u.url.starts_with("https://"))
                    && reqwest::Url::parse(&u.url).is_ok_and(|x| x.host_str().is_some()),
                "upstream {:?}: url must be an http(s) URL with a host",
                u.name
            );
            anyhow::ensure!(
                u.timeout_secs > 0 && u.connect_timeout_secs > 0,
                "upstream {:?}: timeouts must be at least 1 s",
                u.name
            );
            anyhow::ensure!(
                u.max_page_bytes >= 1024,
                "upstream {:?}: max_page_bytes must be at least 1024",
                u.name
            );
            anyhow::ensure!(
                !u.empty_page_is_absent || u.private,
                "upstream {:?}: empty_page_is_absent applies to private upstreams only",
                u.name
            );
        }
        for (p, r) in &self.routes {
            anyhow::ensure!(
                *p == pickguard_index::normalize(p),
                "route {p:?}: use the normalised name {:?}",
                pickguard_index::normalize(p)
            );
            for u in &r.upstreams {
                anyhow::ensure!(
                    names.contains(u),
                    "route {p:?} names unknown upstream {u:?}"
                );
            }
        }
        for p in &self.claims.patterns {
            globset::Glob::new(p).map_err(|e| anyhow::anyhow!("claims pattern {p:?}: {e}"))?;
        }
        anyhow::ensure!(
            matches!(self.on_private_error.as_str(), "fail" | "public"),
            "on_private_error must be \"fail\" or \"public\""
        );
        for src in &self.feed.sources {
            anyhow::ensure!(!src.trim().is_empty(), "[feed] sources: an empty source");
            if src.contains("://") {
                anyhow::ensure!(
                    (src.starts_with("http://") || src.starts_with("https://"))
                        && reqwest::Url::parse(src).is_ok(),
                    "[feed] sources: {src:?} is not an http(s) URL"
                );
            }
        }
        if let Some(c) = &self.quarantine.cutoff {
            time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339)
                .map_err(|e| anyhow::anyhow!("quarantine.cutoff: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_example_parses() {
        let c = Config::from_toml(
            r#"
listen = "127.0.0.1:3141"
data_dir = "./pickguard-data"
[[upstream]]
name = "internal"
url = "http://127.0.0.1:8081/simple/"
private = true
[[upstream]]
name = "pypi"
url = "https://public-index.example/simple/"
[claims]
patterns = ["acme-*"]
"#,
        )
        .unwrap();
        assert_eq!(c.upstreams.len(), 2);
        assert!(c.upstreams[0].private);
        let d = Config::default();
        assert_eq!(d.upstreams[0].name, "pypi");
        assert!(Config::from_toml("bogus = 1").is_err());
        assert!(Config::from_toml("[routes.Torch]\nupstreams = [\"pypi\"]").is_err());
    }
}
