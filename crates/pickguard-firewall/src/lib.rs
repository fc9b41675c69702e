/*!
A PyPI-compatible repository firewall.

Clients use `http://HOST:PORT/simple/` as their only index. For each
project the firewall decides, on the PEP 503-normalised name and before any
public request, whether the name is private (claimed by a pattern, the
registry, or a private upstream that serves it). Private names are served
from private upstreams only, never asked of a public one, and never fall
back to public when a private upstream fails. Public names pass quarantine
(cooldown, cutoff, version outliers, admin blocks). Every file URL is
rewritten through the firewall; downloads are verified against the
upstream's sha256 before they are served or cached. Every decision is
written to an append-only audit log.
*/

mod auth;
pub mod config;
mod console;
pub mod db;
pub mod feed;
mod fill;
mod hosted;
mod objects;
mod resolve;
mod server;
pub mod state;
mod upstream;

pub use auth::hash_secret;
pub use config::Config;
pub use objects::{Migrated, migrate_into as migrate_files_into_objects};
pub use pickguard_index::normalize;
pub use server::{router, serve};

use resolve::FileRef;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::Instant;

type ResponseKey = (String, &'static str);
/// A rendered project page and the decision that produced it.
#[derive(Clone)]
struct CachedResponse {
    at: Instant,
    /// The registry generation it was decided under.
    generation: i64,
    decision: String,
    upstream: Option<String>,
    claimed: bool,
    hidden: usize,
    body: bytes::Bytes,
}

/// Generation reads waiting on a shared registry (`current_generation`).
#[derive(Default)]
struct GenReads {
    running: bool,
    /// Callers the read now running answers (they arrived before it began).
    current: Vec<tokio::sync::oneshot::Sender<Option<i64>>>,
    /// Callers that arrived after it began: the next read answers them.
    next: Vec<tokio::sync::oneshot::Sender<Option<i64>>>,
}

/// Read the generation for `current`, then for `next`, until nobody waits.
fn read_generations(db: &state::Db, reads: &Mutex<GenReads>) {
    // Should the read panic, the waiters are let go (they see no generation
    // and are served nothing cached) and the next caller starts a new read;
    // otherwise every later request would wait on a read nobody runs.
    struct Release<'a>(&'a Mutex<GenReads>);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let mut r = self.0.lock().unwrap_or_else(|e| e.into_inner());
                r.running = false;
                r.current.clear();
                r.next.clear();
            }
        }
    }
    let _release = Release(reads);
    loop {
        let v = db.generation().ok();
        let Ok(mut r) = reads.lock() else {
            return;
        };
        for w in r.current.drain(..) {
            let _ = w.send(v);
        }
        if r.next.is_empty() {
            r.running = false;
            return;
        }
        r.current = std::mem::take(&mut r.next);
    }
}

/// Everything a request handler needs.
pub struct AppState {
    pub cfg: Config,
    pub db: std::sync::Arc<state::Db>,
    pub audit: state::AuditLog,
    pub metrics: state::Metrics,
    /// One HTTP client per upstream: its redirect policy enforces that
    /// upstream's host allowlist, and its timeouts are the upstream's.
    clients: HashMap<String, reqwest::Client>,
    claim_globs: globset::GlobSet,
    /// Upstream answers by (upstream, name), with the instant they expire;
    /// failures too, for `error_ttl_secs` (or the upstream's Retry-After).
    page_cache: Mutex<HashMap<(String, String), (Instant, upstream::Fetch)>>,
    /// Shared-registry generation reads in flight.
    gen_reads: std::sync::Arc<Mutex<GenReads>>,
    /// Rendered project pages by (name, format).
    response_cache: Mutex<HashMap<ResponseKey, CachedResponse>>,
    /// Files listed recently: (upstream, sha256) -> where to fetch them.
    files: RwLock<HashMap<(String, String), FileRef>>,
    cache_dir: PathBuf,
    /// The object store replicas share (`[storage] objects`), if any.
    pub(crate) objects: Option<objects::Objects>,
    /// Downloads in progress, by target path (concurrent misses wait on one).
    fills: Mutex<HashMap<PathBuf, tokio::sync::watch::Receiver<fill::Outcome>>>,
    /// Bytes held by `response_cache`.
    resp_bytes: std::sync::atomic::AtomicU64,
    /// Estimated bytes held by `page_cache`.
    cache_bytes: std::sync::atomic::AtomicU64,
    /// Page cache hits since start (one in SAMPLE is written to the audit log).
    page_hits: std::sync::atomic::AtomicU64,
    auth: auth::Auth,
    /// Per-project upload locks: the existence check, link and record of one
    /// filename happen under it.
    upload_locks: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    /// The hosted index, as an upstream.
    hosted: config::Upstream,
    /// The last scheduled feed import.
    feed_status: Mutex<Option<feed::Status>>,
    /// Web console sessions.
    console: console::Sessions,
    /// `trusted_proxies`, parsed.
    proxies: Vec<ipnet::IpNet>,
}

/// The HTTP client for one upstream. Redirects are followed only to the
/// upstream's own host and its `file_hosts` (never to anywhere an upstream
/// page points: that would let upstream content aim the firewall's requests).
fn upstream_client(up: &config::Upstream) -> anyhow::Result<reqwest::Client> {
    let allowed = up.allowed_hosts();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            attempt.error("too many redirects")
        } else if upstream::host_allowed(attempt.url(), &allowed) {
            attempt.follow()
        } else {
            attempt.error("redirect to a host that is not allowed")
        }
    });
    Ok(reqwest::Client::builder()
        .user_agent(concat!("pickguard-firewall/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(up.connect_timeout_secs))
        .read_timeout(std::time::Duration::from_secs(up.timeout_secs))
        .redirect(policy)
        .build()?)
}

/// Delete `.part` files a crash or an aborted download left in the cache.
/// Only those nobody wrote to for ten minutes: another replica sharing the
/// directory may be filling the others now (a live download writes at least
/// every upstream read timeout).
fn remove_partial_files(dir: &std::path::Path) {
    for e in walk(dir) {
        let stale = std::fs::metadata(&e)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(600));
        if stale
            && e.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".part"))
        {
            match std::fs::remove_file(&e) {
                Ok(()) => {
                    tracing::info!(event = "partial-removed", path = %e.display(), "removed a partial download")
                }
                Err(err) => {
                    tracing::warn!(event = "partial-remove-failed", path = %e.display(), error = %err, "could not remove a partial download")
                }
            }
        }
    }
}

/// Files under `dir`, three levels deep at most (upstream/sha256/file).
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() && depth < 3 => stack.push((p, depth + 1)),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}

impl AppState {
    /// The registry's generation, read after this call began (`None`: the
    /// registry cannot be read; nothing cached may be served then). When
    /// another process moved it (a `feed import`, another replica's claim),
    /// the rendered pages are dropped; each also carries the generation it
    /// was made under and is served only under that one, so a page rendered
    /// while a claim committed is never served after it.
    ///
    /// On a shared registry one read is in flight at a time, and each caller
    /// waits for a read that started after it arrived: under load one query
    /// answers every request that came in while the previous one ran, and
    /// still none is answered from before its own arrival.
    async fn current_generation(&self) -> Option<i64> {
        let g = if self.db.is_shared() {
            let rx = {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let mut r = self.gen_reads.lock().ok()?;
                if r.running {
                    r.next.push(tx);
                } else {
                    r.running = true;
                    r.current.push(tx);
                    let (db, reads) = (self.db.clone(), self.gen_reads.clone());
                    tokio::task::spawn_blocking(move || read_generations(&db, &reads));
                }
                rx
            };
            rx.await.ok().flatten()
        } else {
            self.db.generation().ok()
        };
        if g.is_none_or(|g| self.db.observe(g))
            && let Ok(mut c) = self.response_cache.lock()
        {
            c.clear();
            self.resp_bytes
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
        g
    }

    /// Drop shared decisions older than `storage.decisions_keep_days` (0:
    /// keep all). Each replica's local audit.jsonl is not touched.
    fn prune_decisions(&self) {
        let days = self.cfg.storage.decisions_keep_days;
        if days == 0 {
            return;
        }
        let before = time::OffsetDateTime::now_utc() - time::Duration::days(days as i64);
        let Ok(before) = before.format(&time::format_description::well_known::Rfc3339) else {
            return;
        };
        match self.db.prune_decisions(&before) {
            Ok(n) if n > 0 => {
                tracing::info!(event = "decisions-pruned", rows = n, before = %before, "old shared decisions removed")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(event = "decisions-prune-failed", error = %e, "could not remove old shared decisions")
            }
        }
    }

    /// Import the configured feed sources once (blocking).
    fn import_feed(&self) -> feed::ImportReport {
        let r = feed::import(
            &self.db,
            &self.cfg.feed.sources,
            self.cfg.feed.malicious_only,
        );
        for e in &r.errors {
            state::Metrics::inc(&self.metrics.feed_import_errors);
            tracing::warn!(event = "feed-import-error", error = %e, "a feed source could not be read");
        }
        for n in &r.notes {
            tracing::warn!(event = "feed-import-note", note = %n, "feed import");
        }
        tracing::info!(
            event = "feed-imported",
            records = r.records,
            stored = r.stored,
            unchanged = r.unchanged,
            errors = r.errors.len(),
            "feed imported"
        );
        if let Ok(mut c) = self.response_cache.lock() {
            c.clear();
            self.resp_bytes
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
        if let Ok(mut s) = self.feed_status.lock() {
            *s = Some(feed::Status {
                finished: state::now_rfc3339(),
                report: r.clone(),
            });
        }
        r
    }

    /// The client for an upstream by name.
    fn client(&self, upstream: &str) -> Option<&reqwest::Client> {
        self.clients.get(upstream)
    }

    /// Readiness: the database answers and every directory files are written
    /// to takes a file now. `Err` says which part cannot, for `/readyz`.
    pub fn ready(&self) -> Result<(), String> {
        self.db.ping().map_err(|e| format!("database: {e}"))?;
        for dir in [self.cache_dir.clone(), self.cfg.files_root().join("hosted")] {
            if !dir.exists() && dir.ends_with("hosted") {
                // Made on the first upload; its parent must take it then.
                continue;
            }
            let probe = dir.join(format!(".readyz-{}", std::process::id()));
            let wrote = std::fs::write(&probe, b"ready")
                .and_then(|_| std::fs::read(&probe))
                .map(|b| b == b"ready");
            let _ = std::fs::remove_file(&probe);
            match wrote {
                Ok(true) => {}
                Ok(false) => {
                    return Err(format!(
                        "storage {}: a probe file read back wrong",
                        dir.display()
                    ));
                }
                Err(e) => return Err(format!("storage {}: {e}", dir.display())),
            }
        }
        Ok(())
    }

    /// The configuration of an upstream by name.
    fn upstream(&self, name: &str) -> Option<&config::Upstream> {
        self.cfg.upstreams.iter().find(|u| u.name == name)
    }

    pub fn new(cfg: Config) -> anyhow::Result<AppState> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.data_dir)?;
        let cache_dir = cfg.files_root().join("files");
        std::fs::create_dir_all(&cache_dir)?;
        let db = cfg.open_db()?;
        let objects = cfg
            .storage
            .objects
            .as_deref()
            .map(|u| objects::Objects::open(u, &cfg.storage.objects_options))
            .transpose()?;
        if db.is_shared() && cfg.storage.files_dir.is_none() && objects.is_none() {
            tracing::warn!(
                event = "files-not-shared",
                "storage.database is shared but neither storage.files_dir nor storage.objects is set: uploads and cached files stay in this replica's data_dir"
            );
        }
        let mut audit = state::AuditLog::open_with(
            &cfg.data_dir.join("audit.jsonl"),
            cfg.audit_max_bytes,
            cfg.audit_keep,
        )?;
        let db = std::sync::Arc::new(db);
        if db.is_shared() {
            audit.share(db.clone());
        }
        let mut globs = globset::GlobSetBuilder::new();
        for p in &cfg.claims.patterns {
            globs.add(globset::Glob::new(&pickguard_index::normalize(p))?);
        }
        let mut clients = HashMap::new();
        for up in &cfg.upstreams {
            clients.insert(up.name.clone(), upstream_client(up)?);
        }
        if cfg.on_private_error == "public" {
            tracing::warn!(
                event = "fail-open-configured",
                "on_private_error = \"public\": names not yet claimed are resolved publicly when a private upstream fails"
            );
        }
        let cfg_upload_token = cfg
            .upload_token
            .clone()
            .or_else(|| std::env::var("PICKGUARD_UPLOAD_TOKEN").ok())
            .filter(|t| !t.is_empty());
        let admin_token = cfg
            .admin_token
            .clone()
            .or_else(|| std::env::var("PICKGUARD_ADMIN_TOKEN").ok())
            .filter(|t| !t.is_empty());
        let auth = auth::Auth::new(&cfg.tokens, admin_token, cfg_upload_token)?;
        let cfg_proxies = cfg.proxy_nets()?;
        hosted::recover(&cfg.files_root().join("hosted"));
        remove_partial_files(&cache_dir);
        Ok(AppState {
            claim_globs: globs.build()?,
            cfg,
            db,
            audit,
            metrics: state::Metrics::default(),
            clients,
            page_cache: Mutex::new(HashMap::new()),
            response_cache: Mutex::new(HashMap::new()),
            gen_reads: Default::default(),
            files: RwLock::new(HashMap::new()),
            cache_dir,
            objects,
            fills: Mutex::new(HashMap::new()),
            page_hits: std::sync::atomic::AtomicU64::new(0),
            cache_bytes: std::sync::atomic::AtomicU64::new(0),
            resp_bytes: std::sync::atomic::AtomicU64::new(0),
            auth,
            upload_locks: Mutex::new(HashMap::new()),
            hosted: config::Upstream::new("hosted", "", true),
            feed_status: Mutex::new(None),
            console: console::Sessions,
            proxies: cfg_proxies,
        })
    }
}
