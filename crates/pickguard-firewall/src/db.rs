//! The registry: claims, versions and files seen, admin overrides,
//! advisories, console sessions and (on PostgreSQL) the decision log.
//!
//! Two backends behind one set of queries: the embedded default (SQLite, a
//! file in the data directory, zero setup) and PostgreSQL for replicas
//! (`database = "postgres://…"`). Every query is written once, in the SQL
//! both understand (`$1` parameters, `ON CONFLICT`), and runs inside a
//! transaction on either backend (`Db::tx`).
//!
//! Replicas stay one firewall by reading through: nothing derived from the
//! registry is kept across requests except the rendered pages, and those are
//! dropped when the registry's `generation` moved (every write that changes
//! a decision bumps it in the same transaction). So a claim or a block made
//! through one replica is enforced by every other on its next request.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One value read back.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
}

impl Val {
    fn text(&self) -> Option<String> {
        match self {
            Val::Text(s) => Some(s.clone()),
            Val::Int(i) => Some(i.to_string()),
            Val::Null => None,
        }
    }
    fn string(&self) -> String {
        self.text().unwrap_or_default()
    }
    fn int(&self) -> i64 {
        match self {
            Val::Int(i) => *i,
            Val::Text(s) => s.parse().unwrap_or(0),
            Val::Null => 0,
        }
    }
}

pub type Row = Vec<Val>;
/// A table's rows as `dump` reads them: (table, columns, rows).
pub type TableDump = (&'static str, &'static [&'static str], Vec<Row>);
/// Parameters: every value the registry stores is text (or absent).
type Params<'a> = &'a [Option<&'a str>];

/// A transaction on either backend.
pub trait Tx {
    /// Run a statement; the number of rows it changed.
    fn exec(&mut self, sql: &str, p: Params) -> anyhow::Result<u64>;
    fn query(&mut self, sql: &str, p: Params) -> anyhow::Result<Vec<Row>>;
}

/// Schema, by version: each step runs once, in order, in one transaction
/// with the version bump. Written in the SQL both backends take.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS claims (name TEXT PRIMARY KEY, source TEXT NOT NULL, created TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS seen (project TEXT NOT NULL, upstream TEXT NOT NULL, version TEXT NOT NULL,
         first_seen TEXT NOT NULL, PRIMARY KEY (project, upstream, version));
     CREATE TABLE IF NOT EXISTS overrides (project TEXT NOT NULL, version TEXT NOT NULL, action TEXT NOT NULL,
         created TEXT NOT NULL, PRIMARY KEY (project, version));
     CREATE TABLE IF NOT EXISTS files_seen (upstream TEXT NOT NULL, filename TEXT NOT NULL, sha256 TEXT NOT NULL,
         first_seen TEXT NOT NULL, PRIMARY KEY (upstream, filename));
     CREATE TABLE IF NOT EXISTS advisories (id TEXT NOT NULL, project TEXT NOT NULL, modified TEXT NOT NULL,
         withdrawn TEXT, summary TEXT NOT NULL, spec TEXT NOT NULL, source TEXT NOT NULL, imported TEXT NOT NULL,
         PRIMARY KEY (id, project));
     CREATE INDEX IF NOT EXISTS advisories_project ON advisories (project)",
    "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, csrf TEXT NOT NULL, who TEXT NOT NULL,
         expires TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS decisions (seq BIGINT NOT NULL, ts TEXT NOT NULL, project TEXT, line TEXT NOT NULL);
     CREATE UNIQUE INDEX IF NOT EXISTS decisions_seq ON decisions (seq);
     CREATE INDEX IF NOT EXISTS decisions_project ON decisions (project, seq)",
];

#[derive(Clone, Debug, Serialize)]
pub struct Claim {
    pub name: String,
    pub source: String,
    pub created: String,
}

enum Backend {
    Sqlite(Mutex<rusqlite::Connection>),
    Postgres(Box<Pg>),
}

/// The registry.
pub struct Db {
    backend: Backend,
    /// The last `generation` this process knows of (i64::MIN: never read).
    generation: AtomicI64,
}

impl Db {
    /// The embedded registry in a SQLite file.
    pub fn open(path: &Path) -> anyhow::Result<Db> {
        let conn = rusqlite::Connection::open(path)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let db = Db {
            backend: Backend::Sqlite(Mutex::new(conn)),
            generation: AtomicI64::new(i64::MIN),
        };
        db.migrate()?;
        Ok(db)
    }

    /// The registry at `url` (`sqlite:PATH`, a path, or `postgres://…`).
    pub fn connect(url: &str, pool: usize) -> anyhow::Result<Db> {
        Db::connect_with(url, pool, None)
    }

    /// As `connect`; `ca` is the PEM file of the certificate authorities a
    /// PostgreSQL server's certificate must chain to (`sslmode=require`;
    /// without it the public web roots).
    pub fn connect_with(url: &str, pool: usize, ca: Option<&Path>) -> anyhow::Result<Db> {
        Db::connect_tls(url, pool, ca, None)
    }

    /// As `connect_with`, presenting `client` (certificate chain PEM, key
    /// PEM) to a server that authenticates clients by certificate
    /// (`hostssl … cert` in pg_hba.conf).
    pub fn connect_tls(
        url: &str,
        pool: usize,
        ca: Option<&Path>,
        client: Option<(&Path, &Path)>,
    ) -> anyhow::Result<Db> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let db = Db {
                backend: Backend::Postgres(Box::new(Pg::new(url, pool, ca, client)?)),
                generation: AtomicI64::new(i64::MIN),
            };
            db.migrate()?;
            Ok(db)
        } else {
            Db::open(Path::new(url.strip_prefix("sqlite:").unwrap_or(url)))
        }
    }

    /// Which backend, for logs and `/readyz` (never the password).
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite".into(),
            Backend::Postgres(p) => format!("postgres {}", p.target),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Run `f` in one transaction: committed when it returns `Ok`.
    pub fn tx<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T>
    where
        T: Send,
    {
        match &self.backend {
            Backend::Sqlite(m) => {
                let c = m
                    .lock()
                    .map_err(|_| anyhow::anyhow!("database lock poisoned"))?;
                let mut t = SqliteTx(c.unchecked_transaction()?);
                let out = f(&mut t)?;
                t.0.commit()?;
                Ok(out)
            }
            Backend::Postgres(p) => p.run(true, f),
        }
    }

    /// Run `f`, which only reads (one statement, or several that need not
    /// agree with each other), without a transaction's round trips.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T>
    where
        T: Send,
    {
        match &self.backend {
            Backend::Sqlite(_) => self.tx(f),
            Backend::Postgres(p) => p.run(false, f),
        }
    }

    fn migrate(&self) -> anyhow::Result<()> {
        let pg = self.is_shared();
        self.tx(|t| {
            if pg {
                // Replicas starting together: one migrates, the others wait.
                t.query("SELECT pg_advisory_xact_lock(7262001)", &[])?;
            }
            t.exec(
                "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BIGINT NOT NULL)",
                &[],
            )?;
            t.exec(
                "INSERT INTO meta (k, v) VALUES ('generation', 0), ('schema', 0) ON CONFLICT DO NOTHING",
                &[],
            )?;
            let have = t.query("SELECT v FROM meta WHERE k = 'schema'", &[])?;
            let have = have.first().map(|r| r[0].int()).unwrap_or(0);
            if have > MIGRATIONS.len() as i64 {
                anyhow::bail!(
                    "the database has schema version {have}; this pickguard knows {} (upgrade pickguard)",
                    MIGRATIONS.len()
                );
            }
            for step in &MIGRATIONS[have as usize..] {
                for stmt in step.split(';').filter(|s| !s.trim().is_empty()) {
                    t.exec(stmt, &[])?;
                }
            }
            let v = MIGRATIONS.len().to_string();
            t.exec("UPDATE meta SET v = CAST(CAST($1 AS TEXT) AS BIGINT) WHERE k = 'schema'", &[Some(&v)])?;
            Ok(())
        })
    }

    /// Bump the generation inside a writing transaction. When nothing else
    /// moved it since this process last looked, the new value is this
    /// process's own and is not "elsewhere".
    fn bump(&self, t: &mut dyn Tx) -> anyhow::Result<()> {
        let r = t.query(
            "UPDATE meta SET v = v + 1 WHERE k = 'generation' RETURNING v",
            &[],
        )?;
        if let Some(v) = r.first().map(|r| r[0].int()) {
            let _ =
                self.generation
                    .compare_exchange(v - 1, v, Ordering::Relaxed, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The registry's generation now.
    pub fn generation(&self) -> anyhow::Result<i64> {
        self.read(|t| {
            Ok(t.query("SELECT v FROM meta WHERE k = 'generation'", &[])?
                .first()
                .map(|r| r[0].int())
                .unwrap_or(0))
        })
    }

    /// Move the generation: something every replica decides on changed
    /// outside the registry (a hosted file was stored or deleted in the
    /// shared files directory).
    pub fn touch(&self) -> anyhow::Result<()> {
        self.tx(|t| self.bump(t))
    }

    /// Note a generation read from the registry: true when it moved since
    /// this process last knew it, other than by its own writes.
    pub fn observe(&self, v: i64) -> bool {
        let old = self.generation.swap(v, Ordering::Relaxed);
        old != i64::MIN && old != v
    }

    /// True once after another connection (another replica, `feed import`,
    /// a second firewall on the same file) changed a decision since the
    /// last call; the caller then drops what it derived from the registry.
    /// A registry that cannot be read counts as changed.
    pub fn changed_elsewhere(&self) -> bool {
        self.generation().map(|v| self.observe(v)).unwrap_or(true)
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
        self.tx(|t| {
            let (mut stored, mut unchanged, mut kept) = (0, 0, Vec::new());
            let now = now_rfc3339();
            for (id, group) in by_id {
                // The latest version of the record in this batch wins.
                let latest = group
                    .iter()
                    .map(|r| r.modified.as_str())
                    .fold("", |m, x| if m.is_empty() || newer(x, m) { x } else { m });
                let group: Vec<_> = group.into_iter().filter(|r| r.modified == latest).collect();
                let old: Vec<(String, String)> = t
                    .query("SELECT project, modified FROM advisories WHERE id = $1", &[Some(id)])?
                    .into_iter()
                    .map(|r| (r[0].string(), r[1].string()))
                    .collect();
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
                    t.exec(
                        "INSERT INTO advisories (id, project, modified, withdrawn, summary, spec, source, imported)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                         ON CONFLICT (id, project) DO UPDATE SET modified = excluded.modified,
                           withdrawn = excluded.withdrawn, summary = excluded.summary, spec = excluded.spec,
                           source = excluded.source, imported = excluded.imported",
                        &[
                            Some(&r.id),
                            Some(&r.project),
                            Some(&r.modified),
                            r.withdrawn.as_deref(),
                            Some(&r.summary),
                            Some(&spec),
                            Some(&r.source),
                            Some(&now),
                        ],
                    )?;
                    stored += 1;
                }
            }
            if stored > 0 {
                self.bump(t)?;
            }
            Ok((stored, unchanged, kept))
        })
    }

    /// Advisories stored for a project (withdrawn ones included: the caller
    /// skips them). A row whose spec cannot be read covers every version.
    pub fn advisories(&self, project: &str) -> anyhow::Result<Vec<crate::feed::Advisory>> {
        let rows = self.read(|t| {
            t.query(
                "SELECT id, project, modified, withdrawn, summary, spec, source FROM advisories
                 WHERE project = $1 ORDER BY id",
                &[Some(project)],
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|r| crate::feed::Advisory {
                id: r[0].string(),
                project: r[1].string(),
                modified: r[2].string(),
                withdrawn: r[3].text(),
                summary: r[4].string(),
                spec: serde_json::from_str(&r[5].string()).unwrap_or_else(|_| crate::feed::Spec {
                    all: true,
                    note: Some("stored spec unreadable: every version treated as affected".into()),
                    ..Default::default()
                }),
                source: r[6].string(),
            })
            .collect())
    }

    /// (advisories, projects, withdrawn rows, last import time).
    pub fn feed_counts(&self) -> anyhow::Result<(u64, u64, u64, Option<String>)> {
        let r = self.read(|t| {
            t.query(
                "SELECT COUNT(DISTINCT id), COUNT(DISTINCT project), COUNT(withdrawn), MAX(imported) FROM advisories",
                &[],
            )
        })?;
        let r = r.first().cloned().unwrap_or_default();
        let n = |i: usize| r.get(i).map(|v| v.int().max(0) as u64).unwrap_or(0);
        Ok((n(0), n(1), n(2), r.get(3).and_then(Val::text)))
    }

    /// Can the database be read now (for `/readyz`)?
    /// Every table: one locked away (a `VACUUM FULL`, an `ALTER`) leaves
    /// requests failing closed, and the replica should leave the pool.
    pub fn ping(&self) -> anyhow::Result<()> {
        self.read(|t| {
            for (table, _) in TABLES
                .iter()
                .chain([&("sessions", &[][..]), &("meta", &[][..])])
            {
                t.query(&format!("SELECT 1 FROM {table} LIMIT 1"), &[])?;
            }
            Ok(())
        })
    }

    /// Claim a name (idempotent; the first source is kept). Returns true when new.
    pub fn claim(&self, name: &str, source: &str) -> anyhow::Result<bool> {
        let now = now_rfc3339();
        self.tx(|t| {
            let n = t.exec(
                "INSERT INTO claims (name, source, created) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[Some(name), Some(source), Some(&now)],
            )?;
            if n > 0 {
                self.bump(t)?;
            }
            Ok(n > 0)
        })
    }

    pub fn unclaim(&self, name: &str) -> anyhow::Result<bool> {
        self.tx(|t| {
            let n = t.exec("DELETE FROM claims WHERE name = $1", &[Some(name)])?;
            if n > 0 {
                self.bump(t)?;
            }
            Ok(n > 0)
        })
    }

    pub fn claimed(&self, name: &str) -> anyhow::Result<Option<Claim>> {
        let r = self.read(|t| {
            t.query(
                "SELECT name, source, created FROM claims WHERE name = $1",
                &[Some(name)],
            )
        })?;
        Ok(r.into_iter().next().map(|r| Claim {
            name: r[0].string(),
            source: r[1].string(),
            created: r[2].string(),
        }))
    }

    pub fn claims(&self) -> anyhow::Result<Vec<Claim>> {
        let r = self.read(|t| {
            t.query(
                "SELECT name, source, created FROM claims ORDER BY name",
                &[],
            )
        })?;
        Ok(r.into_iter()
            .map(|r| Claim {
                name: r[0].string(),
                source: r[1].string(),
                created: r[2].string(),
            })
            .collect())
    }

    /// Record versions seen from an upstream; returns the versions seen
    /// *before* this call (the history the outlier rule compares against).
    pub fn record_versions(
        &self,
        project: &str,
        upstream: &str,
        versions: &[String],
    ) -> anyhow::Result<Vec<String>> {
        let now = now_rfc3339();
        self.tx(|t| {
            let before: Vec<String> = t
                .query("SELECT version FROM seen WHERE project = $1", &[Some(project)])?
                .iter()
                .map(|r| r[0].string())
                .collect();
            for v in versions {
                if before.contains(v) {
                    continue;
                }
                t.exec(
                    "INSERT INTO seen (project, upstream, version, first_seen) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[Some(project), Some(upstream), Some(v), Some(&now)],
                )?;
            }
            Ok(before)
        })
    }

    /// Versions of a project seen (and served) before.
    pub fn seen_versions(&self, project: &str) -> anyhow::Result<Vec<String>> {
        let r = self.read(|t| {
            t.query(
                "SELECT DISTINCT version FROM seen WHERE project = $1",
                &[Some(project)],
            )
        })?;
        Ok(r.iter().map(|r| r[0].string()).collect())
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
        let now = now_rfc3339();
        self.tx(|t| {
            let mut changed = Vec::new();
            for (f, sha) in files {
                // Insert first, then read what is stored: of two replicas
                // recording different bytes at once, the second reads the
                // first one's hash and refuses its own.
                t.exec(
                    "INSERT INTO files_seen (upstream, filename, sha256, first_seen) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[Some(upstream), Some(f), Some(sha), Some(&now)],
                )?;
                let stored = t.query(
                    "SELECT sha256 FROM files_seen WHERE upstream = $1 AND filename = $2",
                    &[Some(upstream), Some(f)],
                )?;
                match stored.first().map(|r| r[0].string()) {
                    Some(o) if !o.eq_ignore_ascii_case(sha) => changed.push((f.clone(), o)),
                    Some(_) => {}
                    None => anyhow::bail!("files_seen: the record of {f} was not kept"),
                }
            }
            Ok(changed)
        })
    }

    /// Forget a file's recorded hash (an admin accepted the new bytes).
    pub fn forget_file(&self, upstream: &str, filename: &str) -> anyhow::Result<bool> {
        self.tx(|t| {
            let n = t.exec(
                "DELETE FROM files_seen WHERE upstream = $1 AND filename = $2",
                &[Some(upstream), Some(filename)],
            )?;
            if n > 0 {
                self.bump(t)?;
            }
            Ok(n > 0)
        })
    }

    pub fn set_override(&self, project: &str, version: &str, action: &str) -> anyhow::Result<()> {
        let now = now_rfc3339();
        self.tx(|t| {
            t.exec(
                "INSERT INTO overrides (project, version, action, created) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (project, version) DO UPDATE SET action = excluded.action, created = excluded.created",
                &[Some(project), Some(version), Some(action), Some(&now)],
            )?;
            self.bump(t)
        })
    }

    /// Every override: (project, version, action), by project.
    pub fn all_overrides(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        let r = self.read(|t| {
            t.query(
                "SELECT project, version, action FROM overrides ORDER BY project, version",
                &[],
            )
        })?;
        Ok(r.iter()
            .map(|r| (r[0].string(), r[1].string(), r[2].string()))
            .collect())
    }

    /// Overrides of a project: version (or `*`) -> `allow` | `block`.
    pub fn overrides(&self, project: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let r = self.read(|t| {
            t.query(
                "SELECT version, action FROM overrides WHERE project = $1",
                &[Some(project)],
            )
        })?;
        Ok(r.iter().map(|r| (r[0].string(), r[1].string())).collect())
    }

    /// Store a console session (by the hash of its id), dropping expired
    /// ones and, past `max`, the oldest.
    pub fn put_session(
        &self,
        key: &str,
        csrf: &str,
        who: &str,
        expires: &str,
        now: &str,
        max: usize,
    ) -> anyhow::Result<()> {
        let max = max.saturating_sub(1).to_string();
        self.tx(|t| {
            t.exec("DELETE FROM sessions WHERE expires <= $1", &[Some(now)])?;
            let n = t
                .query("SELECT COUNT(*) FROM sessions", &[])?
                .first()
                .map(|r| r[0].int())
                .unwrap_or(0);
            let over = (n - max.parse::<i64>().unwrap_or(0)).max(0).to_string();
            t.exec(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions ORDER BY expires
                   LIMIT CAST(CAST($1 AS TEXT) AS BIGINT))",
                &[Some(&over)],
            )?;
            t.exec(
                "INSERT INTO sessions (id, csrf, who, expires) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET csrf = excluded.csrf, who = excluded.who, expires = excluded.expires",
                &[Some(key), Some(csrf), Some(who), Some(expires)],
            )
            .map(|_| ())
        })
    }

    /// (csrf, who, expires) of a session.
    pub fn session(&self, id: &str) -> anyhow::Result<Option<(String, String, String)>> {
        let r = self.read(|t| {
            t.query(
                "SELECT csrf, who, expires FROM sessions WHERE id = $1",
                &[Some(id)],
            )
        })?;
        Ok(r.first()
            .map(|r| (r[0].string(), r[1].string(), r[2].string())))
    }

    pub fn drop_session(&self, id: &str) -> anyhow::Result<()> {
        self.tx(|t| {
            t.exec("DELETE FROM sessions WHERE id = $1", &[Some(id)])
                .map(|_| ())
        })
    }

    /// Append decision lines (JSON) to the shared log, in order.
    pub fn append_decisions(
        &self,
        lines: &[(String, Option<String>, String)],
    ) -> anyhow::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.tx(|t| {
            // One writer at a time keeps `seq` gap-free and ordered.
            if matches!(self.backend, Backend::Postgres(_)) {
                t.query("SELECT pg_advisory_xact_lock(7262002)", &[])?;
            }
            let next = t
                .query("SELECT COALESCE(MAX(seq), 0) FROM decisions", &[])?
                .first()
                .map(|r| r[0].int())
                .unwrap_or(0);
            for (i, (ts, project, line)) in lines.iter().enumerate() {
                let seq = (next + 1 + i as i64).to_string();
                t.exec(
                    "INSERT INTO decisions (seq, ts, project, line) VALUES (CAST(CAST($1 AS TEXT) AS BIGINT), $2, $3, $4)",
                    &[Some(&seq), Some(ts), project.as_deref(), Some(line)],
                )?;
            }
            Ok(())
        })
    }

    /// Remove decisions logged before `before` (RFC 3339); how many.
    pub fn prune_decisions(&self, before: &str) -> anyhow::Result<u64> {
        self.tx(|t| t.exec("DELETE FROM decisions WHERE ts < $1", &[Some(before)]))
    }

    /// The newest decision lines, newest first.
    pub fn recent_decisions(
        &self,
        limit: usize,
        project: Option<&str>,
    ) -> anyhow::Result<Vec<String>> {
        let limit = limit.to_string();
        let r = self.read(|t| match project {
            Some(p) => t.query(
                "SELECT line FROM decisions WHERE project = $1 ORDER BY seq DESC LIMIT CAST(CAST($2 AS TEXT) AS BIGINT)",
                &[Some(p), Some(&limit)],
            ),
            None => t.query(
                "SELECT line FROM decisions ORDER BY seq DESC LIMIT CAST(CAST($1 AS TEXT) AS BIGINT)",
                &[Some(&limit)],
            ),
        })?;
        Ok(r.iter().map(|r| r[0].string()).collect())
    }

    /// Every row of every table, for `firewall migrate`: (table, columns, rows).
    pub fn dump(&self) -> anyhow::Result<Vec<TableDump>> {
        self.tx(|t| {
            let mut out = Vec::new();
            for (table, cols) in TABLES {
                let rows = t.query(&format!("SELECT {} FROM {table}", cols.join(", ")), &[])?;
                out.push((*table, *cols, rows));
            }
            Ok(out)
        })
    }

    /// Does this registry hold nothing a migration would merge into
    /// (sessions aside)? `Err` names the first table that holds rows.
    pub fn check_empty(&self) -> anyhow::Result<()> {
        self.read(|t| empty_or_bail(t))
    }

    /// Load a dump into this (empty) registry, in one transaction. Refuses a
    /// registry that already holds anything but sessions (`check_empty`).
    pub fn load(&self, dump: &[TableDump]) -> anyhow::Result<u64> {
        self.tx(|t| {
            empty_or_bail(t)?;
            let mut total = 0;
            for (table, cols, rows) in dump {
                let marks: Vec<String> = cols
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        if *c == "seq" {
                            format!("CAST(CAST(${} AS TEXT) AS BIGINT)", i + 1)
                        } else {
                            format!("${}", i + 1)
                        }
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
                    cols.join(", "),
                    marks.join(", ")
                );
                for r in rows {
                    let vals: Vec<Option<String>> = r.iter().map(Val::text).collect();
                    let p: Vec<Option<&str>> = vals.iter().map(|v| v.as_deref()).collect();
                    total += t.exec(&sql, &p)?;
                }
            }
            self.bump(t)?;
            Ok(total)
        })
    }
}

fn empty_or_bail(t: &mut dyn Tx) -> anyhow::Result<()> {
    for table in [
        "claims",
        "overrides",
        "advisories",
        "files_seen",
        "seen",
        "decisions",
    ] {
        let n = t
            .query(&format!("SELECT COUNT(*) FROM {table}"), &[])?
            .first()
            .map(|r| r[0].int())
            .unwrap_or(0);
        if n > 0 {
            anyhow::bail!(
                "the target database already holds {n} rows in {table}; migrate into an empty one"
            );
        }
    }
    Ok(())
}

/// What `dump` copies, column by column.
const TABLES: &[(&str, &[&str])] = &[
    ("claims", &["name", "source", "created"]),
    ("seen", &["project", "upstream", "version", "first_seen"]),
    ("overrides", &["project", "version", "action", "created"]),
    (
        "files_seen",
        &["upstream", "filename", "sha256", "first_seen"],
    ),
    (
        "advisories",
        &[
            "id",
            "project",
            "modified",
            "withdrawn",
            "summary",
            "spec",
            "source",
            "imported",
        ],
    ),
    ("decisions", &["seq", "ts", "project", "line"]),
];

// ---- SQLite ----

struct SqliteTx<'a>(rusqlite::Transaction<'a>);

/// `$1` → `?1` (SQLite reads `$1` as a named parameter).
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

impl Tx for SqliteTx<'_> {
    fn exec(&mut self, sql: &str, p: Params) -> anyhow::Result<u64> {
        let mut st = self.0.prepare_cached(&sqlite_sql(sql))?;
        Ok(st.execute(rusqlite::params_from_iter(p.iter()))? as u64)
    }

    fn query(&mut self, sql: &str, p: Params) -> anyhow::Result<Vec<Row>> {
        let mut st = self.0.prepare_cached(&sqlite_sql(sql))?;
        let n = st.column_count();
        let rows = st.query_map(rusqlite::params_from_iter(p.iter()), |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => Val::Null,
                        rusqlite::types::ValueRef::Integer(i) => Val::Int(i),
                        rusqlite::types::ValueRef::Real(f) => Val::Text(f.to_string()),
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            Val::Text(String::from_utf8_lossy(t).into_owned())
                        }
                    })
                })
                .collect::<rusqlite::Result<Row>>()
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

// ---- PostgreSQL ----

/// How long one statement (or a connection attempt) may take before the
/// caller gives up on it. The server's `statement_timeout` cannot help when
/// the server itself is stalled (paused, partitioned, swapping); this does.
const PG_TIMEOUT: Duration = Duration::from_secs(5);

/// What a caller asks of a connection's worker thread.
enum Msg {
    Begin,
    Commit,
    Rollback,
    Exec(String, Vec<Option<String>>),
    Query(String, Vec<Option<String>>),
}

enum Reply {
    Done,
    Count(u64),
    Rows(Vec<Row>),
}

/// One connection: a worker thread owns the `postgres` client and runs
/// what it is sent; the caller waits for each answer at most `PG_TIMEOUT`.
///
/// Why a thread per connection: the `postgres` client drives its socket on
/// a runtime of its own, which must not be entered from the firewall's
/// async worker threads; and a caller must be able to give up on a stalled
/// server, which a call made on its own thread cannot.
struct Conn {
    tx: std::sync::mpsc::Sender<Msg>,
    rx: std::sync::mpsc::Receiver<Result<Reply, String>>,
    alive: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A bounded pool of connections. A connection that failed or did not
/// answer in time is dropped (its thread ends when the server lets go of
/// it) and the next call connects again: while the database is down or
/// stalled every call fails within `PG_TIMEOUT`, and the firewall fails
/// closed.
struct Pg {
    config: postgres::Config,
    /// TLS (`sslmode=require`): the server's certificate verified, host
    /// name included; never a silent fall-back to plain text.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// host:port/dbname, for messages.
    target: String,
    /// (idle connections, connections handed out or idle).
    idle: Mutex<(Vec<Conn>, usize)>,
    freed: Condvar,
    max: usize,
    /// Worker threads alive, stuck ones included: bounded, so a stalled
    /// server cannot make a replica start threads without end.
    workers: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

struct PgTx<'a> {
    conn: &'a Conn,
    broken: bool,
    target: &'a str,
}

/// PostgreSQL text cannot hold NUL, which upstream pages and advisories can
/// carry; stored values are escaped (`\` as `\\`, NUL as `\0`) and read back
/// unescaped, so both backends store and compare the same strings.
fn pg_escape(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\0', '\\']) {
        s.replace('\\', "\\\\").replace('\0', "\\0").into()
    } else {
        s.into()
    }
}

fn pg_unescape(s: String) -> String {
    if !s.contains('\\') {
        return s;
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('0') => out.push('\0'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Pg {
    fn new(
        url: &str,
        max: usize,
        ca: Option<&Path>,
        client: Option<(&Path, &Path)>,
    ) -> anyhow::Result<Pg> {
        // libpq's verify-ca and verify-full are what `require` does here
        // (the certificate and host name are always verified).
        let url = url
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require");
        // Given twice, the last one would win silently: refuse instead.
        if url.matches("sslmode").count() > 1 {
            anyhow::bail!("database URL: sslmode is given more than once");
        }
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("database URL: {e}"))?;
        if ca.is_some() && config.get_ssl_mode() != postgres::config::SslMode::Require {
            anyhow::bail!(
                "storage.database_ca is set but the database URL does not say sslmode=require"
            );
        }
        if client.is_some() && config.get_ssl_mode() != postgres::config::SslMode::Require {
            anyhow::bail!(
                "storage.database_cert is set but the database URL does not say sslmode=require"
            );
        }
        let tls = match config.get_ssl_mode() {
            postgres::config::SslMode::Require => Some(pg_tls(ca, client)?),
            postgres::config::SslMode::Disable => None,
            // libpq's default, "prefer", falls back to plain text when the
            // server (or whoever answers for it) declines: an attacker on the
            // path chooses. Plain text it is, said once at start.
            _ => {
                config.ssl_mode(postgres::config::SslMode::Disable);
                if ca.is_some() {
                    anyhow::bail!(
                        "storage.database_ca is set but the database URL does not say sslmode=require"
                    );
                }
                None
            }
        };
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(PG_TIMEOUT);
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.application_name("pickguard-firewall");
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(h) => h.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let target = format!(
            "{}:{port}/{}",
            hosts.join(","),
            config.get_dbname().unwrap_or("")
        );
        let local = config.get_hostaddrs().iter().all(|a| a.is_loopback())
            && config.get_hosts().iter().all(|h| match h {
                postgres::config::Host::Tcp(h) => {
                    h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
                }
                postgres::config::Host::Unix(_) => true,
            });
        if tls.is_none() && !local {
            tracing::warn!(
                event = "database-plaintext",
                target = %target,
                "the connection to PostgreSQL is not encrypted: add sslmode=require to the URL (and storage.database_ca)"
            );
        }
        Ok(Pg {
            config,
            tls,
            target,
            idle: Mutex::new((Vec::new(), 0)),
            freed: Condvar::new(),
            max: max.max(1),
            workers: Default::default(),
        })
    }

    /// A new connection: its worker connects, then serves messages.
    fn connect(&self) -> anyhow::Result<Conn> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.workers.load(SeqCst) >= self.max * 2 {
            anyhow::bail!(
                "database {}: {} connections are stuck waiting for the server",
                self.target,
                self.workers.load(SeqCst)
            );
        }
        let (tx, wrx) = std::sync::mpsc::channel::<Msg>();
        let (wtx, rx) = std::sync::mpsc::channel();
        let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let config = self.config.clone();
        let tls = self.tls.clone();
        let (flag, workers) = (alive.clone(), self.workers.clone());
        workers.fetch_add(1, SeqCst);
        let spawned = std::thread::Builder::new()
            .name("pickguard-db".into())
            .spawn(move || {
                pg_worker(config, tls, wrx, wtx);
                flag.store(false, SeqCst);
                workers.fetch_sub(1, SeqCst);
            });
        if let Err(e) = spawned {
            self.workers.fetch_sub(1, SeqCst);
            anyhow::bail!("database {}: no thread for a connection: {e}", self.target);
        }
        let conn = Conn { tx, rx, alive };
        match conn.rx.recv_timeout(PG_TIMEOUT + Duration::from_secs(1)) {
            Ok(Ok(_)) => Ok(conn),
            Ok(Err(e)) => Err(anyhow::anyhow!("database {}: {e}", self.target)),
            Err(_) => Err(anyhow::anyhow!(
                "database {}: no connection within {} s",
                self.target,
                PG_TIMEOUT.as_secs()
            )),
        }
    }

    /// An idle live connection, or room to open one (waits up to
    /// `PG_TIMEOUT` for either).
    fn take(&self) -> anyhow::Result<Option<Conn>> {
        let mut g = self
            .idle
            .lock()
            .map_err(|_| anyhow::anyhow!("database pool poisoned"))?;
        let deadline = std::time::Instant::now() + PG_TIMEOUT;
        loop {
            while let Some(c) = g.0.pop() {
                if c.alive.load(std::sync::atomic::Ordering::SeqCst) {
                    return Ok(Some(c));
                }
                g.1 = g.1.saturating_sub(1);
            }
            if g.1 < self.max {
                g.1 += 1;
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                anyhow::bail!(
                    "database {}: all {} connections are busy",
                    self.target,
                    self.max
                );
            }
            g = self
                .freed
                .wait_timeout(g, left)
                .map_err(|_| anyhow::anyhow!("database pool poisoned"))?
                .0;
        }
    }

    /// Return a slot: the connection for reuse, or `None` when it was dropped.
    fn give_back(&self, c: Option<Conn>) {
        if let Ok(mut g) = self.idle.lock() {
            match c {
                Some(c) => g.0.push(c),
                None => g.1 = g.1.saturating_sub(1),
            }
        }
        self.freed.notify_one();
    }

    /// Run `f` in a transaction, or (`write` false: reads that need none)
    /// statement by statement. On a runtime with worker threads to spare
    /// the wait is announced to it, so a stalled database does not stall
    /// the firewall's other requests (health checks among them).
    fn run<T: Send>(
        &self,
        write: bool,
        f: impl FnOnce(&mut dyn Tx) -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi {
            tokio::task::block_in_place(|| self.run_here(write, f))
        } else {
            self.run_here(write, f)
        }
    }

    fn run_here<T>(
        &self,
        write: bool,
        f: impl FnOnce(&mut dyn Tx) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let conn = match self.take()? {
            Some(c) => c,
            None => match self.connect() {
                Ok(c) => c,
                Err(e) => {
                    self.give_back(None);
                    return Err(e);
                }
            },
        };
        let mut t = PgTx {
            conn: &conn,
            broken: false,
            target: &self.target,
        };
        let out = (|| {
            if write {
                t.call(Msg::Begin)?;
            }
            match f(&mut t) {
                Ok(v) if write => t.call(Msg::Commit).map(|_| v),
                Ok(v) => Ok(v),
                Err(e) => {
                    if write && !t.broken {
                        let _ = t.conn.tx.send(Msg::Rollback);
                    }
                    Err(e)
                }
            }
        })();
        let broken = t.broken;
        self.give_back((!broken).then_some(conn));
        out
    }
}

impl PgTx<'_> {
    fn call(&mut self, m: Msg) -> anyhow::Result<Reply> {
        if self.broken {
            anyhow::bail!("database {}: the connection was lost", self.target);
        }
        if self.conn.tx.send(m).is_err() {
            self.broken = true;
            anyhow::bail!("database {}: the connection was lost", self.target);
        }
        match self.conn.rx.recv_timeout(PG_TIMEOUT) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(anyhow::anyhow!("database {}: {e}", self.target)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                self.broken = true;
                Err(anyhow::anyhow!(
                    "database {}: no answer within {} s",
                    self.target,
                    PG_TIMEOUT.as_secs()
                ))
            }
            Err(_) => {
                self.broken = true;
                Err(anyhow::anyhow!(
                    "database {}: the connection was lost",
                    self.target
                ))
            }
        }
    }
}

fn owned(p: Params) -> Vec<Option<String>> {
    p.iter()
        .map(|v| v.map(|s| pg_escape(s).into_owned()))
        .collect()
}

impl Tx for PgTx<'_> {
    fn exec(&mut self, sql: &str, p: Params) -> anyhow::Result<u64> {
        match self.call(Msg::Exec(sql.to_owned(), owned(p)))? {
            Reply::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    fn query(&mut self, sql: &str, p: Params) -> anyhow::Result<Vec<Row>> {
        match self.call(Msg::Query(sql.to_owned(), owned(p)))? {
            Reply::Rows(r) => Ok(r),
            _ => Ok(Vec::new()),
        }
    }
}

/// A connection's thread: connect, answer, then run each message; a
/// transaction lasts from `Begin` to `Commit` (anything else rolls it back).
fn pg_worker(
    config: postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    rx: std::sync::mpsc::Receiver<Msg>,
    tx: std::sync::mpsc::Sender<Result<Reply, String>>,
) {
    let connected = match tls {
        Some(t) => config.connect(t),
        None => config.connect(postgres::NoTls),
    };
    let mut client = match connected {
        Ok(mut c) => match c.batch_execute("SET statement_timeout = 10000") {
            Ok(()) => c,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        },
        Err(e) => {
            // The cause (a certificate that does not verify) is in the source.
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                msg.push_str(&format!(": {c}"));
                src = c.source();
            }
            let _ = tx.send(Err(msg));
            return;
        }
    };
    if tx.send(Ok(Reply::Done)).is_err() {
        return;
    }
    while let Ok(m) = rx.recv() {
        match m {
            Msg::Begin => {
                let failed = match client.transaction() {
                    Ok(t) => {
                        if !pg_transaction(t, &rx, &tx) {
                            return;
                        }
                        None
                    }
                    Err(e) => Some(e.to_string()),
                };
                // A connection that cannot begin may be closed: then this
                // thread ends, and the pool sees it is no longer alive.
                if let Some(e) = failed
                    && (tx.send(Err(e)).is_err() || client.is_closed())
                {
                    return;
                }
            }
            Msg::Exec(sql, p) => {
                if tx.send(pg_exec(&mut client, &sql, &p)).is_err() {
                    return;
                }
            }
            Msg::Query(sql, p) => {
                if tx.send(pg_query(&mut client, &sql, &p)).is_err() {
                    return;
                }
            }
            Msg::Commit | Msg::Rollback => {}
        }
        if client.is_closed() {
            return;
        }
    }
}

/// The TLS client for PostgreSQL: the authorities in `ca` (PEM), or the
/// public web roots; with `client`, the certificate chain and key it
/// presents.
fn pg_tls(
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(p) => {
            let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(p)
                .map_err(|e| anyhow::anyhow!("storage.database_ca {}: {e}", p.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("storage.database_ca {}: {e}", p.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "storage.database_ca {}: no certificate in it",
                p.display()
            );
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| anyhow::anyhow!("storage.database_ca {}: {e}", p.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?
        .with_root_certificates(roots);
    let config = match client {
        None => config.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(cert)
                .map_err(|e| anyhow::anyhow!("storage.database_cert {}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("storage.database_cert {}: {e}", cert.display()))?;
            anyhow::ensure!(
                !chain.is_empty(),
                "storage.database_cert {}: no certificate in it",
                cert.display()
            );
            let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
                .map_err(|e| anyhow::anyhow!("storage.database_key {}: {e}", key.display()))?;
            config
                .with_client_auth_cert(chain, key)
                .map_err(|e| anyhow::anyhow!("storage.database_cert/database_key: {e}"))?
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// One transaction, `Begin` answered: statements until `Commit` (anything
/// else rolls back, when `t` is dropped). False when the caller is gone.
fn pg_transaction(
    mut t: postgres::Transaction<'_>,
    rx: &std::sync::mpsc::Receiver<Msg>,
    tx: &std::sync::mpsc::Sender<Result<Reply, String>>,
) -> bool {
    if tx.send(Ok(Reply::Done)).is_err() {
        return false;
    }
    loop {
        let answer = match rx.recv() {
            Ok(Msg::Exec(sql, p)) => pg_exec(&mut t, &sql, &p),
            Ok(Msg::Query(sql, p)) => pg_query(&mut t, &sql, &p),
            Ok(Msg::Commit) => {
                return tx
                    .send(t.commit().map(|_| Reply::Done).map_err(|e| e.to_string()))
                    .is_ok();
            }
            Ok(Msg::Rollback) | Ok(Msg::Begin) => return true,
            Err(_) => return false,
        };
        if tx.send(answer).is_err() {
            return false;
        }
    }
}

fn pg_params(p: &[Option<String>]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    p.iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

fn pg_exec(
    c: &mut impl postgres::GenericClient,
    sql: &str,
    p: &[Option<String>],
) -> Result<Reply, String> {
    c.execute(sql, &pg_params(p))
        .map(Reply::Count)
        .map_err(|e| format!("{e:#}"))
}

fn pg_query(
    c: &mut impl postgres::GenericClient,
    sql: &str,
    p: &[Option<String>],
) -> Result<Reply, String> {
    use postgres::types::Type;
    let rows = c.query(sql, &pg_params(p)).map_err(|e| format!("{e:#}"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut row = Vec::with_capacity(r.len());
        for (i, col) in r.columns().iter().enumerate() {
            let v = match *col.type_() {
                Type::INT8 => r.try_get::<_, Option<i64>>(i).map(|v| v.map(Val::Int)),
                Type::INT4 => r
                    .try_get::<_, Option<i32>>(i)
                    .map(|v| v.map(|v| Val::Int(v.into()))),
                Type::INT2 => r
                    .try_get::<_, Option<i16>>(i)
                    .map(|v| v.map(|v| Val::Int(v.into()))),
                Type::VOID => Ok(None),
                _ => r
                    .try_get::<_, Option<String>>(i)
                    .map(|v| v.map(|s| Val::Text(pg_unescape(s)))),
            }
            .map_err(|e| format!("{e:#}"))?;
            row.push(v.unwrap_or(Val::Null));
        }
        out.push(row);
    }
    Ok(Reply::Rows(out))
}
