//! Deciding where a project comes from: claims first, then routes, then
//! private upstreams, then public ones with quarantine.

use crate::AppState;
use crate::state::Metrics;
use crate::upstream::{Fetch, fetch_project};
use pickguard_index::{File, Project, Status};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A file the index lists, and where its bytes come from.
#[derive(Clone, Debug)]
pub struct FileRef {
    pub upstream: String,
    pub project: String,
    pub url: String,
    pub filename: String,
    pub sha256: String,
    pub metadata_sha256: Option<String>,
    /// PEP 700 size, when the index gives it: the download may not exceed it.
    pub size: Option<u64>,
}

/// The outcome for one project.
#[derive(Clone, Debug)]
pub struct Resolution {
    pub status: u16,
    /// Served project (file URLs already rewritten through the firewall).
    pub project: Option<Project>,
    pub upstreams: Vec<String>,
    pub claimed: bool,
    pub decision: &'static str,
    pub reason: Option<String>,
    /// `filename: reason` for every file left out.
    pub hidden: Vec<String>,
    pub files: Vec<FileRef>,
}

impl Resolution {
    fn refuse(status: u16, decision: &'static str, claimed: bool, reason: String) -> Resolution {
        Resolution {
            status,
            project: None,
            upstreams: vec![],
            claimed,
            decision,
            reason: Some(reason),
            hidden: vec![],
            files: vec![],
        }
    }
}

/// Rough memory held by a cached upstream answer.
fn fetch_size(f: &Fetch) -> u64 {
    match f {
        Fetch::Found(p) => p
            .files
            .iter()
            .map(|x| 160 + x.filename.len() + x.url.len())
            .sum::<usize>() as u64,
        Fetch::Error(e) => 64 + e.len() as u64,
        _ => 64,
    }
}

/// Major release number of a version, if it parses.
fn major(v: &str) -> Option<u64> {
    let parsed: pep440_rs::Version = v.parse().ok()?;
    parsed.release().first().copied()
}

fn parse_time(t: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
}

impl AppState {
    /// Why a name is claimed, if it is (patterns, configured names, registry).
    pub fn claim_reason(&self, name: &str) -> Option<String> {
        if self
            .cfg
            .claims
            .names
            .iter()
            .any(|n| pickguard_index::normalize(n) == name)
        {
            return Some("configured name".into());
        }
        if self.claim_globs.is_match(name) {
            return Some("claims pattern".into());
        }
        match self.db.claimed(name) {
            Ok(Some(c)) => Some(c.source),
            Ok(None) => None,
            Err(e) => Some(format!("registry unavailable ({e}); treated as claimed")),
        }
    }

    async fn fetch_cached(&self, up: &crate::config::Upstream, name: &str) -> Fetch {
        let key = (up.name.clone(), name.to_owned());
        if let Some((until, f)) = self
            .page_cache
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned())
            && Instant::now() < until
        {
            Metrics::inc(&self.metrics.page_cache_hits);
            return f;
        }
        let Some(client) = self.client(&up.name) else {
            return Fetch::Error(format!("{}: no client (internal error)", up.name));
        };
        let t = Instant::now();
        let (f, wait) = fetch_project(client, up, name).await;
        self.metrics.observe_upstream(&up.name, t.elapsed());
        // Kept for its time to live; a refusal for as long as the upstream
        // asked (never shorter than error_ttl_secs).
        let ttl = match &f {
            Fetch::Error(_) => self.cfg.error_ttl_secs.max(wait.unwrap_or(0)),
            _ => self.cfg.page_ttl_secs,
        };
        if let Fetch::Error(e) = &f {
            Metrics::inc(&self.metrics.upstream_errors);
            tracing::warn!(event = "upstream-error", upstream = %up.name, private = up.private, project = name, error = %e, "upstream answer not usable");
        }
        if let Ok(mut c) = self.page_cache.lock() {
            let size = fetch_size(&f);
            let total = self
                .cache_bytes
                .fetch_add(size, std::sync::atomic::Ordering::Relaxed)
                + size;
            // Bounded by entries and by (estimated) bytes: an upstream that
            // answers every name with a huge page cannot fill the memory.
            if c.len() > 100_000 || total > self.cfg.cache_max_bytes {
                c.clear();
                self.cache_bytes
                    .store(size, std::sync::atomic::Ordering::Relaxed);
            }
            c.insert(key, (Instant::now() + Duration::from_secs(ttl), f.clone()));
        }
        f
    }

    /// Drop cached pages and answers older than their time to live.
    pub fn sweep(&self) {
        if let Ok(mut c) = self.page_cache.lock() {
            let now = Instant::now();
            c.retain(|_, (until, _)| *until > now);
            let total: u64 = c.values().map(|(_, f)| fetch_size(f)).sum();
            self.cache_bytes
                .store(total, std::sync::atomic::Ordering::Relaxed);
        }
        let resp = Duration::from_secs(self.cfg.page_ttl_secs);
        if let Ok(mut c) = self.response_cache.lock() {
            c.retain(|_, r| r.at.elapsed() < resp);
            let total: u64 = c.values().map(|r| r.body.len() as u64).sum();
            self.resp_bytes
                .store(total, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Does a public upstream have this project? `Ok(Some(upstream))` if one
    /// serves it, `Ok(None)` if every one said it does not, `Err` if one could
    /// not tell (a publish is then refused: the check fails closed).
    pub async fn public_presence(&self, name: &str) -> Result<Option<String>, String> {
        let mut err = None;
        for up in self.cfg.upstreams.iter().filter(|u| !u.private) {
            match self.fetch_cached(up, name).await {
                Fetch::Found(_) => return Ok(Some(up.name.clone())),
                Fetch::Empty | Fetch::NotFound => {}
                Fetch::Error(e) => err = Some(e),
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Forget cached pages of a project (after admin changes).
    /// Seconds until an upstream failure remembered for `name` is asked
    /// again (for a client's `Retry-After`); `None` when none is remembered.
    pub fn retry_after(&self, name: &str) -> Option<u64> {
        // One lookup per upstream, not a walk of the whole cache: this runs
        // on every failing answer, which an upstream can make frequent.
        let now = Instant::now();
        let c = self.page_cache.lock().ok()?;
        self.cfg
            .upstreams
            .iter()
            .filter_map(|u| c.get(&(u.name.clone(), name.to_owned())))
            .filter(|(until, f)| matches!(f, Fetch::Error(_)) && *until > now)
            .map(|(until, _)| until.duration_since(now).as_secs().max(1))
            .max()
    }

    pub fn invalidate(&self, name: &str) {
        if let Ok(mut c) = self.page_cache.lock() {
            c.retain(|(_, n), _| n != name);
        }
        if let Ok(mut c) = self.response_cache.lock() {
            c.retain(|(n, _), _| n != name);
        }
    }

    pub async fn resolve(&self, name: &str) -> Resolution {
        let claim = self.claim_reason(name);
        let claimed = claim.is_some();
        // 1. An explicit route is the administrator's decision.
        if let Some(route) = self.cfg.routes.get(name) {
            let ups: Vec<_> = route
                .upstreams
                .iter()
                .filter_map(|n| self.cfg.upstreams.iter().find(|u| &u.name == n))
                .collect();
            let mut found = Vec::new();
            for up in ups {
                match self.fetch_cached(up, name).await {
                    Fetch::Found(p) => {
                        found.push((up, p));
                        if !route.merge {
                            break;
                        }
                    }
                    // The same rule as without a route: a private upstream's
                    // empty page is "not here" only where it is authoritative.
                    Fetch::Empty if up.private && !up.empty_page_is_absent => {
                        return Resolution::refuse(
                            502,
                            "private-upstream-error",
                            claimed,
                            format!(
                                "routed private upstream {} answered a page that lists no files; an empty answer is not trusted as \"not here\"",
                                up.name
                            ),
                        );
                    }
                    Fetch::Empty | Fetch::NotFound => {}
                    Fetch::Error(e) => {
                        return Resolution::refuse(
                            502,
                            if up.private {
                                "private-upstream-error"
                            } else {
                                "upstream-error"
                            },
                            claimed,
                            format!("routed upstream failed: {e}"),
                        );
                    }
                }
            }
            if found.is_empty() {
                return Resolution::refuse(
                    404,
                    "not-found",
                    claimed,
                    "no routed upstream has this project".into(),
                );
            }
            let tracks: Vec<String> = if route.merge {
                found
                    .iter()
                    .map(|(u, _)| format!("{}{}/", u.url, name))
                    .collect()
            } else {
                vec![]
            };
            let private_part = found.iter().any(|(u, _)| u.private);
            // The registry records when the name became private here (also
            // for configured names): public files published after it are a
            // quarantine reason.
            let registered = if private_part {
                self.db.claimed(name)
            } else {
                Ok(None)
            };
            if private_part && matches!(registered, Ok(None)) {
                let source = format!(
                    "private upstream {} (routed)",
                    found
                        .iter()
                        .find(|(u, _)| u.private)
                        .map(|(u, _)| u.name.as_str())
                        .unwrap_or("")
                );
                if let Err(e) = self.db.claim(name, &source) {
                    tracing::error!(event = "claim-failed", project = name, error = %e, "could not record the private claim");
                }
            }
            let mut r = self
                .build(name, found, claimed || private_part, "serve-routed")
                .await;
            // Public-only routes pass quarantine like any public answer; the
            // public files of a merged route still pass the advisory feed.
            if !private_part {
                self.quarantine(name, &mut r);
            } else {
                let mut reasons = self.feed_reasons(name, &r, true);
                let always = reasons.iter().map(|(f, _)| f.clone()).collect();
                let since = match registered {
                    Ok(Some(c)) => Ok(c.created),
                    Ok(None) => Ok(crate::state::now_rfc3339()),
                    Err(e) => Err(e.to_string()),
                };
                for (f, why) in self.public_after_private(name, &r, since) {
                    if !reasons.iter().any(|(x, _)| *x == f) {
                        reasons.push((f, why));
                    }
                }
                self.hide(name, &mut r, reasons, &always);
            }
            if let Some(p) = &mut r.project {
                p.tracks = tracks;
            }
            return r;
        }
        // 2. The hosted index and private upstreams: serving a name claims it, synchronously.
        let mut private_found = Vec::new();
        let mut private_err = None;
        // Every hosted name is claimed in the registry (an upload claims
        // before its record exists, and a name with hosted files cannot be
        // unclaimed), so on an object store, where each look is a listing
        // request, only claimed names are looked up.
        let hosted = if claimed || self.objects.is_none() {
            self.hosted_page(name).await
        } else {
            Ok(None)
        };
        match hosted {
            Ok(Some(p)) => private_found.push((&self.hosted, p)),
            Ok(None) => {}
            // The hosted index is private: not knowing is not "absent".
            Err(e) => private_err = Some(format!("hosted index: {e}")),
        }
        // A private upstream lets a name go public only by saying, positively,
        // that it does not have it: 404/410, or an empty project page when it
        // is configured as authoritative for empty pages. Anything else (an
        // error, a timeout, a maintenance page, an empty body, an oversized
        // or malformed page, an empty page by default) fails closed.
        for up in self.cfg.upstreams.iter().filter(|u| u.private) {
            match self.fetch_cached(up, name).await {
                Fetch::Found(p) => private_found.push((up, p)),
                Fetch::NotFound => {}
                Fetch::Empty if up.empty_page_is_absent => {}
                Fetch::Empty => {
                    private_err = Some(format!(
                        "{}: answered a project page that lists no files; an empty answer is not \
                         trusted as \"not here\" (set empty_page_is_absent = true on an index that \
                         serves empty pages for unknown names)",
                        up.name
                    ))
                }
                Fetch::Error(e) => private_err = Some(e),
            }
        }
        if !private_found.is_empty() {
            if claim.is_none() {
                let source = format!("private upstream {}", private_found[0].0.name);
                // Serving still works without the record, but the name is not
                // protected if the private index later fails: say so loudly.
                if let Err(e) = self.db.claim(name, &source) {
                    tracing::error!(event = "claim-failed", project = name, error = %e, "could not record the private claim");
                }
            }
            return self.build(name, private_found, true, "serve-private").await;
        }
        let mut fail_open_note = None;
        if let Some(e) = private_err {
            if claimed || self.cfg.on_private_error != "public" {
                return Resolution::refuse(
                    502,
                    "private-upstream-error",
                    claimed,
                    format!(
                        "a private upstream failed ({e}); {name} is not resolved from public indexes while it cannot be checked"
                    ),
                );
            }
            fail_open_note = Some(format!(
                "a private upstream failed ({e}); resolved publicly because on_private_error = \"public\""
            ));
        }
        if let Some(c) = claim {
            return Resolution::refuse(
                403,
                "blocked-claimed",
                true,
                format!(
                    "{name} is claimed ({c}) and no private upstream serves it; claimed names are never resolved from public indexes"
                ),
            );
        }
        // 3. Public upstreams: the first that has the project.
        let mut last_err = None;
        for up in self.cfg.upstreams.iter().filter(|u| !u.private) {
            match self.fetch_cached(up, name).await {
                Fetch::Found(p) => {
                    let mut r = self.build(name, vec![(up, p)], false, "serve-public").await;
                    self.quarantine(name, &mut r);
                    if let Some(note) = fail_open_note {
                        tracing::warn!(event = "fail-open", project = name, reason = %note, "served publicly although a private upstream failed");
                        r.decision = "serve-public-private-failed";
                        r.reason = Some(match r.reason.take() {
                            Some(q) => format!("{note}; {q}"),
                            None => note,
                        });
                    }
                    return r;
                }
                Fetch::Empty | Fetch::NotFound => {}
                Fetch::Error(e) => last_err = Some(e),
            }
        }
        match last_err {
            Some(e) => Resolution::refuse(
                502,
                "upstream-error",
                false,
                format!("public upstream failed: {e}"),
            ),
            None => Resolution::refuse(
                404,
                "not-found",
                false,
                "no upstream has this project".into(),
            ),
        }
    }

    /// Merge pages (first upstream wins a filename), rewrite file URLs, remember files.
    async fn build(
        &self,
        name: &str,
        found: Vec<(&crate::config::Upstream, Project)>,
        claimed: bool,
        decision: &'static str,
    ) -> Resolution {
        let mut seen = BTreeSet::new();
        let mut files = Vec::new();
        let mut refs = Vec::new();
        let mut hidden = Vec::new();
        let mut status = None;
        let single = found.len() == 1;
        let mut tracks = Vec::new();
        let mut alternate_locations = Vec::new();
        let mut last_serial = None;
        let upstreams: Vec<String> = found.iter().map(|(u, _)| u.name.clone()).collect();
        for (up, p) in found {
            if status.is_none() {
                status = p.status.clone();
            }
            if single {
                tracks = p.tracks.clone();
                alternate_locations = p.alternate_locations.clone();
                last_serial = p.last_serial;
            }
            let allowed = up.allowed_hosts();
            for f in p.files {
                if !seen.insert(f.filename.clone()) {
                    continue;
                }
                let Some(sha) = f
                    .sha256()
                    .map(str::to_owned)
                    .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                else {
                    hidden.push(format!(
                        "{}: the upstream gives no sha256, so the download cannot be verified",
                        f.filename
                    ));
                    continue;
                };
                if f.filename.contains('/') || f.filename.contains("..") {
                    hidden.push(format!("{}: unsafe file name", f.filename));
                    continue;
                }
                // Hosted files are local; an upstream's files may live only on its
                // own host or its configured file hosts (no requests aimed anywhere
                // by upstream content).
                if up.name != "hosted" {
                    match reqwest::Url::parse(&f.url) {
                        Ok(u)
                            if matches!(u.scheme(), "http" | "https")
                                && crate::upstream::host_allowed(&u, &allowed) => {}
                        _ => {
                            hidden.push(format!(
                                "{}: its URL points to a host not allowed for upstream {} (file_hosts)",
                                f.filename, up.name
                            ));
                            continue;
                        }
                    }
                }
                refs.push(FileRef {
                    upstream: up.name.clone(),
                    project: name.to_owned(),
                    url: f.url.clone(),
                    filename: f.filename.clone(),
                    sha256: sha.clone(),
                    metadata_sha256: f.core_metadata.clone().flatten(),
                    size: f.size,
                });
                // Only the hash the firewall verifies is passed on: a client
                // checking another algorithm would trust bytes nobody checked.
                // Metadata is advertised only with a hash to verify it by.
                files.push(File {
                    url: format!("/files/{}/{}/{}/{}", up.name, name, sha, f.filename),
                    hashes: [("sha256".to_string(), sha.clone())].into(),
                    core_metadata: f.core_metadata.clone().filter(|m| m.is_some()),
                    ..f
                });
            }
        }
        // Distribution files are immutable: new bytes under a name already
        // seen mean a compromised upstream or a replaced private file.
        let mut by_upstream: std::collections::BTreeMap<&str, Vec<(String, String)>> =
            Default::default();
        for r in &refs {
            if r.upstream != "hosted" {
                by_upstream
                    .entry(r.upstream.as_str())
                    .or_default()
                    .push((r.filename.clone(), r.sha256.clone()));
            }
        }
        let mut changed = BTreeSet::new();
        for (up, list) in by_upstream {
            match self.db.check_files(up, &list) {
                Ok(c) => {
                    for (f, old) in c {
                        Metrics::inc(&self.metrics.changed_files);
                        tracing::error!(event = "file-changed", upstream = up, project = name, file = %f, first_seen_sha256 = %old, "an upstream lists new bytes under a file name seen before; refused");
                        hidden.push(format!(
                            "{f}: upstream {up} now lists sha256 {} for it, but {old} was seen first; distribution files never change, so it is refused (an admin can accept it: POST /admin/files/accept)",
                            list.iter().find(|(n, _)| n == &f).map(|(_, s)| s.as_str()).unwrap_or("")
                        ));
                        changed.insert(f);
                    }
                }
                Err(e) => {
                    // Unchecked is not unchanged: none of this upstream's
                    // files is served until the check can be made.
                    tracing::error!(event = "files-seen-failed", upstream = up, project = name, error = %e, "could not check file hashes against those seen before; its files are refused");
                    for (f, _) in &list {
                        hidden.push(format!(
                            "{f}: its sha256 could not be checked against the one seen first ({e}); refused"
                        ));
                        changed.insert(f.clone());
                    }
                }
            }
        }
        if !changed.is_empty() {
            files.retain(|f| !changed.contains(&f.filename));
            refs.retain(|r| !changed.contains(&r.filename));
        }
        Resolution {
            status: 200,
            project: Some(Project {
                name: name.to_owned(),
                files,
                tracks,
                alternate_locations,
                status,
                last_serial,
            }),
            upstreams,
            claimed,
            decision,
            reason: None,
            hidden,
            files: refs,
        }
    }

    /// The administrator's word on one version of a project: `allow` (a
    /// release, or `quarantine.allow`), `block`, or nothing.
    fn admin_says(
        &self,
        name: &str,
        version: Option<&str>,
        overrides: &BTreeMap<String, String>,
    ) -> Option<&'static str> {
        let ov = version
            .and_then(|v| overrides.get(v))
            .or_else(|| overrides.get("*"))
            .map(String::as_str);
        match ov {
            Some("allow") => Some("allow"),
            _ if self.allowed_by_config(name, version) => Some("allow"),
            Some("block") => Some("block"),
            _ => None,
        }
    }

    fn allowed_by_config(&self, name: &str, version: Option<&str>) -> bool {
        self.cfg
            .quarantine
            .allow
            .iter()
            .any(|a| match a.split_once("==") {
                Some((n, v)) => pickguard_index::normalize(n) == name && Some(v.trim()) == version,
                None => pickguard_index::normalize(a) == name,
            })
    }

    /// Cooldown, cutoff, version outliers and admin overrides, on a public project.
    fn quarantine(&self, name: &str, r: &mut Resolution) {
        if r.project.is_none() {
            return;
        }
        let q = &self.cfg.quarantine;
        // Unreadable overrides could hide an administrator's block: fail closed.
        let (overrides, overrides_err) = match self.db.overrides(name) {
            Ok(o) => (o, None),
            Err(e) => (Default::default(), Some(e)),
        };
        let now = time::OffsetDateTime::now_utc();
        let cutoff = q.cutoff.as_deref().and_then(parse_time);
        // History before this listing: the outlier baseline.
        // Unreadable, it would read as "never seen", which switches the
        // outlier rule off: fail closed instead.
        let (history, history_err) = match self.db.seen_versions(name) {
            Ok(h) => (h, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let max_major = history.iter().filter_map(|v| major(v)).max();
        // Known-malicious versions first: no allow override releases them
        // (only `feed.ignore`, by advisory id).
        let mut reasons: Vec<(String, String)> = Vec::new();
        let feed = self.feed_reasons(name, r, false);
        let similar = if q.similar_to_claimed {
            self.similar_claim(name)
        } else {
            None
        };
        let Some(p) = r.project.as_mut() else { return };
        let versions: Vec<String> = pickguard_index::versions(p);
        for f in &p.files {
            if let Some(e) = &overrides_err {
                reasons.push((
                    f.filename.clone(),
                    format!("administrator overrides could not be read ({e})"),
                ));
                continue;
            }
            if let Some(e) = history_err.as_ref().filter(|_| q.outlier_major_jump > 0) {
                reasons.push((
                    f.filename.clone(),
                    format!("the versions seen before could not be read ({e}), so the outlier rule cannot be applied"),
                ));
                continue;
            }
            if let Some((_, why)) = feed.iter().find(|(n, _)| *n == f.filename) {
                reasons.push((f.filename.clone(), why.clone()));
                continue;
            }
            let v = f.version(name);
            let ov = self.admin_says(name, v, &overrides);
            if ov == Some("allow") {
                continue;
            }
            if ov == Some("block") {
                reasons.push((f.filename.clone(), "blocked by an administrator".into()));
                continue;
            }
            if let Some(why) = &similar {
                reasons.push((f.filename.clone(), why.clone()));
                continue;
            }
            let t = f.upload_time.as_deref().and_then(parse_time);
            if q.cooldown_hours > 0 {
                match t {
                    Some(t) if now - t < time::Duration::hours(q.cooldown_hours as i64) => {
                        reasons.push((
                            f.filename.clone(),
                            format!(
                                "uploaded {}, inside the {} h cooldown",
                                f.upload_time.as_deref().unwrap_or(""),
                                q.cooldown_hours
                            ),
                        ));
                        continue;
                    }
                    None if q.require_upload_time => {
                        reasons.push((
                            f.filename.clone(),
                            "no upload-time from the upstream, and the cooldown requires one"
                                .into(),
                        ));
                        continue;
                    }
                    _ => {}
                }
            }
            if let (Some(c), Some(t)) = (cutoff, t)
                && t > c
            {
                reasons.push((
                    f.filename.clone(),
                    format!(
                        "uploaded after the cutoff {}",
                        q.cutoff.as_deref().unwrap_or("")
                    ),
                ));
                continue;
            }
            if q.outlier_major_jump > 0
                && let (Some(maxm), Some(vm)) = (max_major, v.and_then(major))
            {
                let new = v.is_some_and(|v| !history.iter().any(|h| h == v));
                if new && vm >= maxm + q.outlier_major_jump {
                    reasons.push((
                            f.filename.clone(),
                            format!("version {} jumps {} major versions above anything seen before (highest major {maxm}): the dependency-confusion pattern", v.unwrap_or(""), vm - maxm),
                        ));
                    continue;
                }
            }
        }
        let hidden_names: BTreeSet<&str> = reasons.iter().map(|(f, _)| f.as_str()).collect();
        // Remember only versions that were served: a hidden outlier must stay an outlier.
        let served: Vec<String> = versions
            .iter()
            .filter(|v| {
                p.files.iter().any(|f| {
                    f.version(name) == Some(v.as_str())
                        && !hidden_names.contains(f.filename.as_str())
                })
            })
            .cloned()
            .collect();
        if let Err(e) = self
            .db
            .record_versions(name, &r.upstreams.join(","), &served)
        {
            tracing::warn!(event = "record-versions-failed", project = name, error = %e, "could not record served versions");
        }
        let always = feed.iter().map(|(f, _)| f.clone()).collect();
        self.hide(name, r, reasons, &always);
    }

    /// Leave out `reasons`' files (all of them: 403 `quarantined`). In dry
    /// run only the files named in `always` (known-malicious: an advisory
    /// lists them, or the advisories could not be read) are left out; the
    /// others are only recorded.
    fn hide(
        &self,
        name: &str,
        r: &mut Resolution,
        reasons: Vec<(String, String)>,
        always: &BTreeSet<String>,
    ) {
        let Some(p) = r.project.as_mut() else { return };
        if reasons.is_empty() {
            return;
        }
        for _ in &reasons {
            Metrics::inc(&self.metrics.hidden_files);
        }
        r.hidden
            .extend(reasons.iter().map(|(f, why)| format!("{f}: {why}")));
        let reasons: Vec<(String, String)> = if self.cfg.dry_run {
            let enforced: Vec<_> = reasons
                .into_iter()
                .filter(|(f, _)| always.contains(f))
                .collect();
            if enforced.is_empty() {
                r.decision = "serve-public-dry-run";
                return;
            }
            enforced
        } else {
            reasons
        };
        let hidden_names: BTreeSet<&str> = reasons.iter().map(|(f, _)| f.as_str()).collect();
        p.files
            .retain(|f| !hidden_names.contains(f.filename.as_str()));
        r.files
            .retain(|f| !hidden_names.contains(f.filename.as_str()));
        if p.files.is_empty() {
            r.status = 403;
            r.decision = "quarantined";
            let why = reasons.first().map(|(_, w)| w.clone()).unwrap_or_default();
            r.reason = Some(format!("every file of {name} is quarantined; first: {why}"));
            p.status = Some(Status {
                status: "quarantined".into(),
                reason: r.reason.clone(),
            });
        } else {
            r.decision = "serve-public-filtered";
            r.reason = Some(format!("{} file(s) hidden by quarantine", reasons.len()));
        }
    }

    /// Files of `r` that an enforced advisory covers, with the advisory in
    /// the reason. With `public_only`, files from private upstreams (and the
    /// hosted index) are not judged: an advisory names a PyPI project. When
    /// the advisories cannot be read, every judged file is left out.
    fn feed_reasons(&self, name: &str, r: &Resolution, public_only: bool) -> Vec<(String, String)> {
        let Some(p) = &r.project else { return vec![] };
        let public: BTreeSet<&str> = self.public_files(r).collect();
        let judged = |filename: &str| !public_only || public.contains(filename);
        let advisories = match self.db.advisories(name) {
            Ok(a) => a,
            Err(e) => {
                return p
                    .files
                    .iter()
                    .filter(|f| judged(&f.filename))
                    .map(|f| {
                        (
                            f.filename.clone(),
                            format!("the advisory database could not be read ({e})"),
                        )
                    })
                    .collect();
            }
        };
        let active: Vec<_> = advisories
            .iter()
            .filter(|a| a.withdrawn.is_none() && !self.cfg.feed.ignore.contains(&a.id))
            .collect();
        if active.is_empty() {
            return vec![];
        }
        let mut out = Vec::new();
        for f in p.files.iter().filter(|f| judged(&f.filename)) {
            if let Some(a) = active.iter().find(|a| a.spec.covers(f.version(name))) {
                Metrics::inc(&self.metrics.feed_blocked);
                let mut why = format!("{} (OSV advisory", a.id);
                if !a.summary.is_empty() {
                    why.push_str(": ");
                    why.push_str(&a.summary);
                }
                why.push(')');
                if let Some(n) = &a.spec.note {
                    why.push_str("; ");
                    why.push_str(n);
                }
                out.push((f.filename.clone(), why));
            }
        }
        out
    }

    /// Public files of a merged route (a name that is also private) that were
    /// published after the name became private here (`since`): a new public
    /// version of a private name is how dependency confusion starts. Admin
    /// releases and `quarantine.allow` let one through; with
    /// `require_upload_time`, a public file without an upload time is held
    /// too; when the registry cannot be read, every public file is.
    fn public_after_private(
        &self,
        name: &str,
        r: &Resolution,
        since: Result<String, String>,
    ) -> Vec<(String, String)> {
        let Some(p) = &r.project else { return vec![] };
        let overrides = match self.db.overrides(name) {
            Ok(o) => o,
            Err(e) => {
                return self
                    .public_files(r)
                    .map(|f| {
                        (
                            f.to_owned(),
                            format!("administrator overrides could not be read ({e})"),
                        )
                    })
                    .collect();
            }
        };
        let since_t = match &since {
            Ok(s) => parse_time(s),
            Err(_) => None,
        };
        let public: BTreeSet<&str> = self.public_files(r).collect();
        let mut out = Vec::new();
        for f in p
            .files
            .iter()
            .filter(|f| public.contains(f.filename.as_str()))
        {
            let v = f.version(name);
            if self.admin_says(name, v, &overrides) == Some("allow") {
                continue;
            }
            let why = match (
                &since,
                since_t,
                f.upload_time.as_deref().and_then(parse_time),
            ) {
                (Err(e), _, _) => Some(format!(
                    "{name} is also private and the claims registry could not be read to tell when it became so ({e})"
                )),
                (Ok(s), Some(c), Some(t)) if t > c => Some(format!(
                    "published on the public index {}, after {name} became private here ({s}): a new public version of a private name is the dependency-confusion pattern (release it if it is meant)",
                    f.upload_time.as_deref().unwrap_or("")
                )),
                (Ok(_), _, None) if self.cfg.quarantine.require_upload_time => Some(format!(
                    "{name} is also private and this public file has no upload-time to tell whether it is newer"
                )),
                _ => None,
            };
            if let Some(why) = why {
                out.push((f.filename.clone(), why));
            }
        }
        out
    }

    /// Names of `r`'s files that came from a public upstream.
    fn public_files<'r>(&'r self, r: &'r Resolution) -> impl Iterator<Item = &'r str> + 'r {
        r.files
            .iter()
            .filter(|f| {
                f.upstream != "hosted" && self.upstream(&f.upstream).is_some_and(|u| !u.private)
            })
            .map(|f| f.filename.as_str())
    }

    /// A claimed (private) name this public name is nearly identical to.
    fn similar_claim(&self, name: &str) -> Option<String> {
        let registry = match self.db.claims() {
            Ok(c) => c.into_iter().map(|c| c.name).collect::<Vec<_>>(),
            Err(e) => {
                return Some(format!(
                    "the claims registry could not be read to compare {name} with private names ({e})"
                ));
            }
        };
        let configured = self
            .cfg
            .claims
            .names
            .iter()
            .map(|n| pickguard_index::normalize(n));
        if let Some(c) = configured.chain(registry).find(|c| similar_names(name, c)) {
            return Some(format!(
                "{name} is nearly the private name {c}: a public project named like a private one is \
                 the dependency-confusion pattern (allow it in quarantine.allow if it is meant)"
            ));
        }
        self.cfg
            .claims
            .patterns
            .iter()
            .find(|p| inside_namespace(name, p))
            .map(|p| {
                format!(
                    "{name} is nearly inside the private namespace {p}: a public project named like \
                     private ones is the dependency-confusion pattern (allow it in quarantine.allow if it is meant)"
                )
            })
    }
}

/// A name with separators and a `py`/`python` prefix or suffix removed.
fn skeleton(n: &str) -> String {
    let mut s: String = n
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    for p in ["python", "py"] {
        if let Some(rest) = s.strip_prefix(p)
            && rest.len() >= 3
        {
            s = rest.to_owned();
            break;
        }
    }
    for p in ["python", "py"] {
        if let Some(rest) = s.strip_suffix(p)
            && rest.len() >= 3
        {
            s = rest.to_owned();
            break;
        }
    }
    s
}

/// Two different normalised names a person or a resolver could take for one
/// another: the same skeleton, or one edit apart on names of 6+ characters.
pub(crate) fn similar_names(a: &str, b: &str) -> bool {
    if a == b {
        return false;
    }
    let (x, y) = (skeleton(a), skeleton(b));
    x == y || (x.len().min(y.len()) >= 6 && strsim::damerau_levenshtein(&x, &y) <= 1)
}

/// A name outside a `PREFIX*` claims pattern (it did not match it) that a
/// person or resolver could still take for one of its names: after a
/// `py-`/`python-` prefix is dropped, it starts with the prefix (`acme-*`:
/// `python-acme-utils`), or with the prefix's letters followed by a word
/// boundary (`acme.ml` spelled `acme_ml` is inside; `acme1-x`... is not a
/// boundary) and, for prefixes of six letters or more, joined to the rest
/// (`acmecorpinternal` beside `acmecorp-*`). Shorter prefixes joined to a
/// word are too often ordinary words (`data-*` and `datasets`). Prefixes
/// under 4 letters are too common to judge.
pub(crate) fn inside_namespace(name: &str, pattern: &str) -> bool {
    let p = pickguard_index::normalize(pattern);
    let Some(prefix) = p.strip_suffix('*') else {
        return false;
    };
    if prefix.contains(['*', '?', '[', '{']) {
        return false;
    }
    let sk: String = prefix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    if sk.len() < 4 {
        return false;
    }
    let name = pickguard_index::normalize(name);
    let mut candidates = vec![name.as_str()];
    for py in ["python-", "py-", "python", "py"] {
        if let Some(rest) = name.strip_prefix(py) {
            candidates.push(rest);
        }
    }
    candidates.into_iter().enumerate().any(|(i, c)| {
        if c.starts_with(prefix) {
            // The name itself matched the pattern (not near it) unless a
            // py prefix was dropped to get here.
            return i > 0 && c.len() > prefix.len();
        }
        // Walk the candidate's letters against the prefix's skeleton,
        // separators skipped; what follows the last one decides.
        let mut letters = 0;
        let mut end = None;
        for (at, ch) in c.char_indices() {
            if !ch.is_ascii_alphanumeric() {
                continue;
            }
            if letters == sk.len() {
                end = Some(at);
                break;
            }
            if sk.as_bytes()[letters] != ch as u8 {
                return false;
            }
            letters += 1;
        }
        let Some(end) = end else { return false };
        // `end` is the first letter after the skeleton: a separator right
        // before it is a word boundary.
        let boundary = c[..end].ends_with('-');
        boundary || sk.len() >= 6
    })
}

#[cfg(test)]
mod tests {
    use super::{inside_namespace, similar_names};

    #[test]
    fn near_a_private_namespace() {
        // Inside the pattern: not near it.
        assert!(!inside_namespace("acme-ml", "acme_*"));
        assert!(!inside_namespace("acme", "acme-*"));
        // A py prefix, or separators placed elsewhere in the prefix.
        assert!(inside_namespace("python-acme-utils", "acme-*"));
        assert!(inside_namespace("py_acme.utils", "acme-*"));
        assert!(inside_namespace("pyacme-utils", "acme-*"));
        assert!(inside_namespace("acmecorp-ml", "acme-corp-*"));
        assert!(inside_namespace("acme-corpml", "acmecorp-*"));
        // Joined to the rest: only distinctive (6+ letter) prefixes.
        assert!(inside_namespace("acmecorpinternal", "acmecorp-*"));
        assert!(!inside_namespace("acmeinternal", "acme-*"));
        assert!(!inside_namespace("datasets", "data-*"));
        assert!(!inside_namespace("modeling", "model-*"));
        // Unrelated, too short, or not a prefix pattern.
        assert!(!inside_namespace("numpy", "acme-*"));
        assert!(!inside_namespace("mlflow", "ml-*"));
        assert!(!inside_namespace("acmeinternal", "*-acme"));
        assert!(!inside_namespace("python", "acme-*"));
    }

    #[test]
    fn near_names_of_private_projects() {
        for (a, b) in [
            ("torchtriton", "pytorch-triton"),
            ("acme-utils", "acme-util"),
            ("acme-utils", "python-acme-utils"),
            ("acme-ml", "acme-ml-py"),
            ("acmeml-core", "acmeml-croe"),
        ] {
            assert!(similar_names(a, b), "{a} {b}");
            assert!(similar_names(b, a), "{b} {a}");
        }
        for (a, b) in [
            ("acme-utils", "acme-utils"),
            ("numpy", "numba"),
            ("requests", "acme-internal"),
            ("torch", "torchvision"),
            ("acme-a", "acme-b"),
        ] {
            assert!(!similar_names(a, b), "{a} {b}");
        }
    }
}
