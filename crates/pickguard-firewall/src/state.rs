//! Persistent state (SQLite: claims, versions seen, admin overrides), the
//! audit log (JSON lines, one `write` per decision, so a kill -9 loses
//! nothing written), and metrics.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// SQLite-backed registry.
pub struct Db {
    conn: Mutex<rusqlite::Connection>,
    /// The last `PRAGMA data_version` seen (i64::MIN: never read).
    data_version: AtomicI64,
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
                 created TEXT NOT NULL, PRIMARY KEY (project, version));
             CREATE TABLE IF NOT EXISTS files_seen (upstream TEXT NOT NULL, filename TEXT NOT NULL, sha256 TEXT NOT NULL,
                 first_seen TEXT NOT NULL, PRIMARY KEY (upstream, filename));
             CREATE TABLE IF NOT EXISTS advisories (id TEXT NOT NULL, project TEXT NOT NULL, modified TEXT NOT NULL,
                 withdrawn TEXT, summary TEXT NOT NULL, spec TEXT NOT NULL, source TEXT NOT NULL, imported TEXT NOT NULL,
                 PRIMARY KEY (id, project));
             CREATE INDEX IF NOT EXISTS advisories_project ON advisories (project);",
        )?;
        Ok(Db {
            conn: Mutex::new(conn),
            data_version: AtomicI64::new(i64::MIN),
        })
    }

    /// True once after another connection (another process: `feed import`,
    /// a second firewall on the same file) changed the database since the
    /// last call; the caller then drops what it derived from it.
    pub fn changed_elsewhere(&self) -> bool {
        let Ok(v) = self.with(|c| c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)))
        else {
            return true;
        };
        let old = self.data_version.swap(v, Ordering::Relaxed);
        old != i64::MIN && old != v
    }

    /// Store advisories: a record replaces what is stored under its id only
    /// when its `modified` is later, and only for the projects it names: a
    /// later record under the same id that no longer names a project (a
    /// correction, or another source reusing the id) does not lift that
    /// project's block; it is kept and reported. Returns (stored rows,
    /// unchanged rows, kept rows in words).
    pub fn store_advisories(
        &self,
        rows: &[crate::feed::Advisory],
    ) -> anyhow::Result<(u64, u64, Vec<String>)> {
        let mut by_id: BTreeMap<&str, Vec<&crate::feed::Advisory>> = BTreeMap::new();
        for r in rows {
            by_id.entry(r.id.as_str()).or_default().push(r);
        }
        let newer = |a: &str, b: &str| -> bool {
            let p = |t: &str| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            };
            // Imports refuse unreadable dates; one stored before that rule
            // loses to any readable one and never beats one.
            match (p(a), p(b)) {
                (Some(x), Some(y)) => x > y,
                (Some(_), None) => true,
                _ => false,
            }
        };
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let (mut stored, mut unchanged, mut kept) = (0, 0, Vec::new());
            {
                let mut get = tx.prepare_cached("SELECT project, modified FROM advisories WHERE id = ?1")?;
                let mut ins = tx.prepare_cached(
                    "INSERT OR REPLACE INTO advisories (id, project, modified, withdrawn, summary, spec, source, imported)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                let now = now_rfc3339();
                for (id, group) in by_id {
                    // The latest version of the record in this batch wins.
                    let latest = group
                        .iter()
                        .map(|r| r.modified.as_str())
                        .fold("", |m, x| if m.is_empty() || newer(x, m) { x } else { m });
                    let group: Vec<_> = group.into_iter().filter(|r| r.modified == latest).collect();
                    let old: Vec<(String, String)> = get
                        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<_, _>>()?;
                    let old_latest = old
                        .iter()
                        .map(|(_, m)| m.as_str())
                        .fold(None, |m: Option<&str>, x| match m {
                            Some(m) if !newer(x, m) => Some(m),
                            _ => Some(x),
                        });
                    if old_latest.is_some_and(|o| !newer(latest, o)) {
                        unchanged += group.len() as u64;
                        continue;
                    }
                    for (project, _) in &old {
                        if !group.iter().any(|r| &r.project == project) {
                            kept.push(format!(
                                "{id}: a later version of the record no longer names {project}; \
                                 its block is kept (list {id} in [feed] ignore to lift it)"
                            ));
                        }
                    }
                    for r in group {
                        let spec = serde_json::to_string(&r.spec).unwrap_or_default();
                        ins.execute((
                            &r.id, &r.project, &r.modified, &r.withdrawn, &r.summary, spec, &r.source, &now,
                        ))?;
                        stored += 1;
                    }
                }
            }
            tx.commit()?;
            Ok((stored, unchanged, kept))
        })
    }

    /// Advisories stored for a project (withdrawn ones included: the caller
    /// skips them). A row whose spec cannot be read covers every version.
    pub fn advisories(&self, project: &str) -> anyhow::Result<Vec<crate::feed::Advisory>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, project, modified, withdrawn, summary, spec, source FROM advisories WHERE project = ?1 ORDER BY id",
            )?;
            let rows = st.query_map([project], |r| {
                let spec: String = r.get(5)?;
                Ok(crate::feed::Advisory {
                    id: r.get(0)?,
                    project: r.get(1)?,
                    modified: r.get(2)?,
                    withdrawn: r.get(3)?,
                    summary: r.get(4)?,
                    spec: serde_json::from_str(&spec).unwrap_or_else(|_| crate::feed::Spec {
                        all: true,
                        note: Some("stored spec unreadable: every version treated as affected".into()),
                        ..Default::default()
                    }),
                    source: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }

    /// (advisories, projects, withdrawn rows, last import time).
    pub fn feed_counts(&self) -> anyhow::Result<(u64, u64, u64, Option<String>)> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(DISTINCT id), COUNT(DISTINCT project), COUNT(withdrawn), MAX(imported) FROM advisories",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
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

    /// Can the database be read now (for `/readyz`)?
    pub fn ping(&self) -> anyhow::Result<()> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM claims", [], |r| r.get::<_, i64>(0))
                .map(|_| ())
        })
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

    /// Remember the sha256 each upstream lists for each filename; return the
    /// files whose sha256 differs from the one first seen, with the old hash.
    /// (Distribution files are immutable: new bytes under an old name are an
    /// upstream compromise or a replaced private file.)
    pub fn check_files(
        &self,
        upstream: &str,
        files: &[(String, String)],
    ) -> anyhow::Result<Vec<(String, String)>> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let mut changed = Vec::new();
            {
                let mut get = tx.prepare_cached(
                    "SELECT sha256 FROM files_seen WHERE upstream = ?1 AND filename = ?2",
                )?;
                let mut ins = tx.prepare_cached(
                    "INSERT OR IGNORE INTO files_seen (upstream, filename, sha256, first_seen) VALUES (?1, ?2, ?3, ?4)",
                )?;
                let now = now_rfc3339();
                for (f, sha) in files {
                    let old: Option<String> = get
                        .query_row((upstream, f), |r| r.get(0))
                        .map(Some)
                        .or_else(|e| match e {
                            rusqlite::Error::QueryReturnedNoRows => Ok(None),
                            e => Err(e),
                        })?;
                    match old {
                        Some(o) if !o.eq_ignore_ascii_case(sha) => changed.push((f.clone(), o)),
                        Some(_) => {}
                        None => {
                            ins.execute((upstream, f, sha, &now))?;
                        }
                    }
                }
            }
            tx.commit()?;
            Ok(changed)
        })
    }

    /// Forget a file's recorded hash (an admin accepted the new bytes).
    pub fn forget_file(&self, upstream: &str, filename: &str) -> anyhow::Result<bool> {
        self.with(|c| {
            c.execute(
                "DELETE FROM files_seen WHERE upstream = ?1 AND filename = ?2",
                (upstream, filename),
            )
            .map(|n| n > 0)
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

    /// Every override: (project, version, action), by project.
    pub fn all_overrides(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT project, version, action FROM overrides ORDER BY project, version",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<String>,
    pub dry_run: bool,
    /// Set on a line that stands for this many similar answers (cache hits
    /// are counted in the metrics and only sampled here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_of: Option<u64>,
}

/// Append-only JSON-lines audit log plus the recent tail in memory.
///
/// Rotation: when the file passes `max_bytes`, it is renamed to
/// `audit.jsonl.1` (older ones shift up to `.keep`; the oldest is deleted)
/// and a new file is started. At start the recent tail is read back from
/// the files on disk, so the admin views survive a restart.
pub struct AuditLog {
    path: std::path::PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Mutex<(File, u64)>,
    recent: Mutex<VecDeque<Decision>>,
}

const RECENT: usize = 10_000;

impl AuditLog {
    pub fn open(path: &Path) -> anyhow::Result<AuditLog> {
        Self::open_with(path, 100 << 20, 5)
    }

    pub fn open_with(path: &Path, max_bytes: u64, keep: u32) -> anyhow::Result<AuditLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let len = file.metadata()?.len();
        let log = AuditLog {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            file: Mutex::new((file, len)),
            recent: Mutex::new(VecDeque::new()),
        };
        log.read_back();
        Ok(log)
    }

    /// Fill the in-memory tail from the newest lines on disk.
    fn read_back(&self) {
        let mut lines: Vec<Decision> = Vec::new();
        let mut files = vec![self.path.clone()];
        files.extend((1..=self.keep).map(|i| self.rotated(i)));
        for f in files {
            if lines.len() >= RECENT {
                break;
            }
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            let mut these: Vec<Decision> = text
                .lines()
                .rev()
                .filter_map(|l| serde_json::from_str(l).ok())
                .take(RECENT - lines.len())
                .collect();
            lines.append(&mut these);
        }
        if let Ok(mut r) = self.recent.lock() {
            r.extend(lines.into_iter().rev());
        }
    }

    fn rotated(&self, i: u32) -> std::path::PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{i}"));
        p.into()
    }

    fn rotate(&self, slot: &mut (File, u64)) -> std::io::Result<()> {
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for i in (1..self.keep).rev() {
            let _ = std::fs::rename(self.rotated(i), self.rotated(i + 1));
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        *slot = (f, 0);
        Ok(())
    }

    pub fn record(&self, d: Decision) {
        let mut line = serde_json::to_vec(&d).unwrap_or_default();
        line.push(b'\n');
        if let Ok(mut slot) = self.file.lock() {
            if self.keep > 0
                && slot.1 + line.len() as u64 > self.max_bytes
                && slot.1 > 0
                && let Err(e) = self.rotate(&mut slot)
            {
                tracing::error!(event = "audit-rotate-failed", error = %e, "audit log rotation failed");
            }
            // One write of a whole line: O_APPEND keeps lines whole, and the
            // kernel has it once write returns, whatever happens to us.
            match slot.0.write_all(&line) {
                Ok(()) => slot.1 += line.len() as u64,
                Err(e) => {
                    tracing::error!(event = "audit-write-failed", error = %e, "audit log write failed")
                }
            }
        }
        if let Ok(mut r) = self.recent.lock() {
            if r.len() == RECENT {
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

/// Fixed-bucket latency histogram (seconds), Prometheus style.
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        use std::fmt::Write as _;
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum{{{}}} {}",
            labels.trim_end_matches(','),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{}}} {n}", labels.trim_end_matches(','));
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
    pub changed_files: AtomicU64,
    pub coalesced_fills: AtomicU64,
    pub feed_blocked: AtomicU64,
    pub feed_import_errors: AtomicU64,
    /// Request latency by route: simple, files, upload, admin.
    pub route_latency: [Histogram; 4],
    /// Upstream page latency, by upstream name.
    pub upstream_latency: Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
}

/// Routes the latency histograms distinguish.
pub const ROUTES: [&str; 4] = ["simple", "files", "upload", "admin"];

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
            (
                "pickguard_changed_files_total",
                "Listed files whose sha256 differs from the one first seen under that name (refused).",
                &self.changed_files,
            ),
            (
                "pickguard_feed_blocked_files_total",
                "Listed files left out because an OSV advisory covers them.",
                &self.feed_blocked,
            ),
            (
                "pickguard_feed_import_errors_total",
                "Feed imports (scheduled) that could not read a source or document.",
                &self.feed_import_errors,
            ),
            (
                "pickguard_coalesced_fills_total",
                "File requests that waited for a download already in progress instead of starting one.",
                &self.coalesced_fills,
            ),
        ];
        let mut out = String::new();
        for (name, help, v) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out.push_str("# HELP pickguard_request_duration_seconds Time to answer, by route.\n# TYPE pickguard_request_duration_seconds histogram\n");
        for (i, r) in ROUTES.iter().enumerate() {
            self.route_latency[i].render(
                "pickguard_request_duration_seconds",
                &format!("route=\"{r}\","),
                &mut out,
            );
        }
        out.push_str("# HELP pickguard_upstream_duration_seconds Time an upstream took to answer a project page.\n# TYPE pickguard_upstream_duration_seconds histogram\n");
        if let Ok(m) = self.upstream_latency.lock() {
            for (u, h) in m.iter() {
                h.render(
                    "pickguard_upstream_duration_seconds",
                    &format!("upstream=\"{u}\","),
                    &mut out,
                );
            }
        }
        out
    }

    pub fn observe_route(&self, route: &str, d: std::time::Duration) {
        if let Some(i) = ROUTES.iter().position(|r| *r == route) {
            self.route_latency[i].observe(d);
        }
    }

    pub fn observe_upstream(&self, upstream: &str, d: std::time::Duration) {
        let h = self.upstream_latency.lock().ok().map(|mut m| {
            m.entry(upstream.to_owned())
                .or_insert_with(Default::default)
                .clone()
        });
        if let Some(h) = h {
            h.observe(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{Advisory, Spec};

    fn adv(id: &str, project: &str, modified: &str, all: bool) -> Advisory {
        Advisory {
            id: id.into(),
            project: project.into(),
            modified: modified.into(),
            withdrawn: None,
            summary: String::new(),
            spec: Spec {
                all,
                versions: vec!["1.0".into()],
                ..Spec::default()
            },
            source: "t".into(),
        }
    }

    #[test]
    fn advisories_are_replaced_only_by_later_records() {
        let d = tempfile::tempdir().unwrap();
        let db = Db::open(&d.path().join("s.sqlite")).unwrap();
        assert_eq!(
            db.store_advisories(&[adv("MAL-1", "x", "2026-01-02T00:00:00Z", false)])
                .unwrap(),
            (1, 0, vec![])
        );
        // Older: ignored. Same: unchanged. Later (other offset spelling): replaces.
        assert_eq!(
            db.store_advisories(&[adv("MAL-1", "x", "2026-01-01T00:00:00Z", true)])
                .unwrap(),
            (0, 1, vec![])
        );
        assert!(!db.advisories("x").unwrap()[0].spec.all);
        assert_eq!(
            db.store_advisories(&[adv("MAL-1", "y", "2026-01-02T01:00:00+01:00", true)])
                .unwrap(),
            (0, 1, vec![]),
            "the same instant is not later"
        );
        let (stored, unchanged, kept) = db
            .store_advisories(&[adv("MAL-1", "y", "2026-01-03T00:00:00Z", true)])
            .unwrap();
        assert_eq!((stored, unchanged), (1, 0));
        // The later record names project y only: x's block is kept (a
        // record reusing the id must not lift it), and that is reported.
        assert!(
            kept.len() == 1 && kept[0].contains("no longer names x"),
            "{kept:?}"
        );
        assert!(!db.advisories("x").unwrap().is_empty());
        assert!(db.advisories("y").unwrap()[0].spec.all);
        // Its later version replaces x's row too, once it names x again;
        // the id's latest date is the newest of its rows.
        assert_eq!(
            db.store_advisories(&[adv("MAL-1", "x", "2026-01-02T12:00:00Z", true)])
                .unwrap()
                .1,
            1,
            "older than the newest row of the id"
        );
        let (stored, _, kept) = db
            .store_advisories(&[
                adv("MAL-1", "x", "2026-01-04T00:00:00Z", true),
                adv("MAL-1", "y", "2026-01-04T00:00:00Z", false),
            ])
            .unwrap();
        assert_eq!((stored, kept.len()), (2, 0));
        assert!(db.advisories("x").unwrap()[0].spec.all);
        assert!(!db.advisories("y").unwrap()[0].spec.all);
    }

    #[test]
    fn another_connection_changing_the_database_is_noticed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.sqlite");
        let server = Db::open(&p).unwrap();
        let cli = Db::open(&p).unwrap();
        assert!(!server.changed_elsewhere(), "first look");
        assert!(!server.changed_elsewhere());
        server.claim("a", "t").unwrap();
        assert!(
            !server.changed_elsewhere(),
            "its own writes are not elsewhere"
        );
        cli.store_advisories(&[adv("MAL-2", "z", "2026-01-01T00:00:00Z", true)])
            .unwrap();
        assert!(server.changed_elsewhere());
        assert!(!server.changed_elsewhere(), "once");
    }
}
