//! The registry (`crate::db`, re-exported here), the
//! audit log (JSON lines, one `write` per decision, so a kill -9 loses
//! nothing written), and metrics.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::db::{Claim, Db, now_rfc3339};

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
    /// On a shared registry: every decision is also appended there (by a
    /// writer thread, in batches), and the admin views read it back, so any
    /// replica shows what every replica decided.
    shared: Option<Shared>,
}

struct Shared {
    db: std::sync::Arc<Db>,
    tx: std::sync::mpsc::SyncSender<(String, Option<String>, String)>,
}

/// Decisions waiting for the shared log at most; past it they are counted
/// as dropped there (the local file still has every one).
const SHARED_BACKLOG: usize = 100_000;

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
            shared: None,
        };
        log.read_back();
        Ok(log)
    }

    /// Also append every decision to the shared registry `db`, and read
    /// the admin views from it.
    pub fn share(&mut self, db: std::sync::Arc<Db>) {
        let (tx, rx) =
            std::sync::mpsc::sync_channel::<(String, Option<String>, String)>(SHARED_BACKLOG);
        let writer = db.clone();
        std::thread::Builder::new()
            .name("pickguard-audit-db".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < 1000 {
                        match rx.try_recv() {
                            Ok(x) => batch.push(x),
                            Err(_) => break,
                        }
                    }
                    // Kept until the registry takes it (the database may be
                    // restarting); the local file already has every line.
                    let mut tries = 0u32;
                    while let Err(e) = writer.append_decisions(&batch) {
                        tries += 1;
                        if tries == 1 || tries.is_multiple_of(60) {
                            tracing::error!(event = "audit-db-write-failed", error = %e, lines = batch.len(), "decisions not yet in the shared log; retrying");
                        }
                        if tries >= 600 {
                            tracing::error!(event = "audit-db-lines-dropped", lines = batch.len(), "decisions left out of the shared log after 10 minutes of retries (they are in the local file)");
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
            })
            .ok();
        self.shared = Some(Shared { db, tx });
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
        if let Some(sh) = &self.shared {
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            if sh
                .tx
                .try_send((d.ts.clone(), d.project.clone(), text))
                .is_err()
            {
                tracing::error!(
                    event = "audit-db-backlog-full",
                    "the shared decision log is behind; a line was left out of it (it is in the local file)"
                );
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
        if let Some(sh) = &self.shared {
            match sh.db.recent_decisions(limit, project) {
                Ok(lines) => {
                    return lines
                        .iter()
                        .filter_map(|l| serde_json::from_str(l).ok())
                        .collect();
                }
                Err(e) => {
                    tracing::warn!(event = "audit-db-read-failed", error = %e, "showing this replica's decisions only");
                }
            }
        }
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
    /// Files read (verified) from the shared object store.
    pub object_hits: AtomicU64,
    /// Object store failures and objects refused for wrong bytes.
    pub object_errors: AtomicU64,
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
    /// Time an upstream took to answer a file request (to its headers).
    pub upstream_file_latency: Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
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
                "pickguard_object_store_hits_total",
                "Files read from the shared object store, verified.",
                &self.object_hits,
            ),
            (
                "pickguard_object_store_errors_total",
                "Object store failures, and objects refused for holding other bytes than their key names.",
                &self.object_errors,
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
        for (metric, help, map) in [
            (
                "pickguard_upstream_duration_seconds",
                "Time an upstream took to answer a project page.",
                &self.upstream_latency,
            ),
            (
                "pickguard_upstream_file_duration_seconds",
                "Time an upstream took to answer a file request (to its headers).",
                &self.upstream_file_latency,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {metric} {help}\n# TYPE {metric} histogram\n"
            ));
            if let Ok(m) = map.lock() {
                for (u, h) in m.iter() {
                    h.render(metric, &format!("upstream=\"{u}\","), &mut out);
                }
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
        Self::observe_in(&self.upstream_latency, upstream, d);
    }

    pub fn observe_upstream_file(&self, upstream: &str, d: std::time::Duration) {
        Self::observe_in(&self.upstream_file_latency, upstream, d);
    }

    fn observe_in(
        map: &Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
        upstream: &str,
        d: std::time::Duration,
    ) {
        let h = map.lock().ok().map(|mut m| {
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
