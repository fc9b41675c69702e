//! Persistent state (SQLite: claims, versions seen, admin overrides), the
//! audit log (JSON lines, one `write` per decision, so a kill -9 loses
//! nothing written), and metrics.

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// SQLite-backed registry.
pub struct Db {
    conn: Mutex<rusqlite::Connection>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Claim {
    pub name: String,
    pub source: String,
    pub created: String,
}

impl Db {
    pub fn open(path: &Path) -> anyhow::Result<Db> {
        let conn = rusqlite::Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS claims (name TEXT PRIMARY KEY, source TEXT NOT NULL, created TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS seen (project TEXT NOT NULL, upstream TEXT NOT NULL, version TEXT NOT NULL,
                 first_seen TEXT NOT NULL, PRIMARY KEY (project, upstream, version));
             CREATE TABLE IF NOT EXISTS overrides (project TEXT NOT NULL, version TEXT NOT NULL, action TEXT NOT NULL,
                 created TEXT NOT NULL, PRIMARY KEY (project, version));",
        )?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> anyhow::Result<T> {
        let c = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("database lock poisoned"))?;
        Ok(f(&c)?)
    }

    /// Claim a name (idempotent; the first source is kept). Returns true when new.
    pub fn claim(&self, name: &str, source: &str) -> anyhow::Result<bool> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO claims (name, source, created) VALUES (?1, ?2, ?3)",
                (name, source, now_rfc3339()),
            )
            .map(|n| n > 0)
        })
    }

    pub fn unclaim(&self, name: &str) -> anyhow::Result<bool> {
        self.with(|c| {
            c.execute("DELETE FROM claims WHERE name = ?1", [name])
                .map(|n| n > 0)
        })
    }

    pub fn claimed(&self, name: &str) -> anyhow::Result<Option<Claim>> {
        self.with(|c| {
            let mut st =
                c.prepare_cached("SELECT name, source, created FROM claims WHERE name = ?1")?;
            let mut rows = st.query([name])?;
            Ok(match rows.next()? {
                Some(r) => Some(Claim {
                    name: r.get(0)?,
                    source: r.get(1)?,
                    created: r.get(2)?,
                }),
                None => None,
            })
        })
    }

    pub fn claims(&self) -> anyhow::Result<Vec<Claim>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT name, source, created FROM claims ORDER BY name")?;
            let rows = st.query_map([], |r| {
                Ok(Claim {
                    name: r.get(0)?,
                    source: r.get(1)?,
                    created: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Record versions seen from an upstream; returns the versions seen
    /// *before* this call (the history the outlier rule compares against).
    pub fn record_versions(
        &self,
        project: &str,
        upstream: &str,
        versions: &[String],
    ) -> anyhow::Result<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare_cached("SELECT version FROM seen WHERE project = ?1")?;
            let before: Vec<String> = st.query_map([project], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            let now = now_rfc3339();
            let mut ins = c.prepare_cached("INSERT OR IGNORE INTO seen (project, upstream, version, first_seen) VALUES (?1, ?2, ?3, ?4)")?;
            for v in versions {
                ins.execute((project, upstream, v, &now))?;
            }
            Ok(before)
        })
    }

    /// Versions of a project seen (and served) before.
    pub fn seen_versions(&self, project: &str) -> anyhow::Result<Vec<String>> {
        self.with(|c| {
            let mut st =
                c.prepare_cached("SELECT DISTINCT version FROM seen WHERE project = ?1")?;
            st.query_map([project], |r| r.get(0))?.collect()
        })
    }

    pub fn set_override(&self, project: &str, version: &str, action: &str) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO overrides (project, version, action, created) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (project, version) DO UPDATE SET action = excluded.action, created = excluded.created",
                (project, version, action, now_rfc3339()),
            )
            .map(|_| ())
        })
    }

    /// Overrides of a project: version (or `*`) -> `allow` | `block`.
    pub fn overrides(&self, project: &str) -> anyhow::Result<BTreeMap<String, String>> {
        self.with(|c| {
            let mut st =
                c.prepare_cached("SELECT version, action FROM overrides WHERE project = ?1")?;
            let rows = st.query_map([project], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }
}

/// One decision, as logged.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    pub ts: String,
    pub client: String,
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub decision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    pub claimed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub status: u16,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<String>,
    pub dry_run: bool,
}

/// Append-only JSON-lines audit log plus the recent tail in memory.
pub struct AuditLog {
    file: Mutex<File>,
    recent: Mutex<VecDeque<Decision>>,
}

impl AuditLog {
    pub fn open(path: &Path) -> anyhow::Result<AuditLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(AuditLog {
            file: Mutex::new(file),
            recent: Mutex::new(VecDeque::new()),
        })
    }

    pub fn record(&self, d: Decision) {
        let mut line = serde_json::to_vec(&d).unwrap_or_default();
        line.push(b'\n');
        if let Ok(mut f) = self.file.lock() {
            // One write of a whole line: O_APPEND keeps lines whole, and the
            // kernel has it once write returns, whatever happens to us.
            if let Err(e) = f.write_all(&line) {
                tracing::error!(error = %e, "audit log write failed");
            }
        }
        if let Ok(mut r) = self.recent.lock() {
            if r.len() == 10_000 {
                r.pop_front();
            }
            r.push_back(d);
        }
    }

    pub fn recent(&self, limit: usize, project: Option<&str>) -> Vec<Decision> {
        let r = self.recent.lock().map(|r| {
            r.iter()
                .rev()
                .filter(|d| project.is_none_or(|p| d.project.as_deref() == Some(p)))
                .take(limit)
                .cloned()
                .collect()
        });
        r.unwrap_or_default()
    }
}

/// Prometheus counters.
#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub served: AtomicU64,
    pub blocked: AtomicU64,
    pub not_found: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub page_cache_hits: AtomicU64,
    pub file_cache_hits: AtomicU64,
    pub file_downloads: AtomicU64,
    pub hash_mismatches: AtomicU64,
    pub hidden_files: AtomicU64,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let rows = [
            (
                "pickguard_requests_total",
                "Requests received.",
                &self.requests,
            ),
            (
                "pickguard_served_total",
                "Requests answered with content.",
                &self.served,
            ),
            (
                "pickguard_blocked_total",
                "Requests refused by policy (403) or for safety (5xx).",
                &self.blocked,
            ),
            (
                "pickguard_not_found_total",
                "Projects or files no upstream has.",
                &self.not_found,
            ),
            (
                "pickguard_upstream_errors_total",
                "Failed upstream requests.",
                &self.upstream_errors,
            ),
            (
                "pickguard_page_cache_hits_total",
                "Project pages answered from cache.",
                &self.page_cache_hits,
            ),
            (
                "pickguard_file_cache_hits_total",
                "Files served from the local cache.",
                &self.file_cache_hits,
            ),
            (
                "pickguard_file_downloads_total",
                "Files fetched from upstreams.",
                &self.file_downloads,
            ),
            (
                "pickguard_hash_mismatches_total",
                "Downloads whose sha256 differed from the upstream index.",
                &self.hash_mismatches,
            ),
            (
                "pickguard_hidden_files_total",
                "Files hidden from indexes by quarantine.",
                &self.hidden_files,
            ),
        ];
        let mut out = String::new();
        for (name, help, v) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }
}
