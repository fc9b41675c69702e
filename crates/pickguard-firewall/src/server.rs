//! HTTP: the simple API, files, admin, health and metrics.

use crate::state::{Decision, Metrics, now_rfc3339};
use crate::{AppState, Config};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use pickguard_index::{
    Format, negotiate, normalize, render_html, render_index_html, render_index_json, render_json,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;

type St = State<Arc<AppState>>;

/// One cached-page answer in this many is written to the audit log.
const AUDIT_SAMPLE: u64 = 1000;

pub fn router(state: Arc<AppState>) -> Router {
    // Uploads are streamed to disk and limited by max_upload_bytes; the
    // framework's 2 MB default would refuse ordinary wheels.
    let body_limit = axum::extract::DefaultBodyLimit::max(
        usize::try_from(state.cfg.max_upload_bytes.saturating_add(16 << 20)).unwrap_or(usize::MAX),
    );
    let uploads = Router::new()
        .route("/", get(|| async { redirect("/simple/") }).post(upload))
        .route("/legacy/", post(upload))
        .route("/upload/", post(upload))
        .layer(body_limit);
    Router::new()
        .merge(uploads)
        .route("/simple", get(|| async { redirect("/simple/") }))
        .route("/simple/", get(root_index))
        .route("/simple/{name}", get(project_noslash))
        .route("/simple/{name}/", get(project))
        .route(
            "/files/{upstream}/{project}/{sha}/{filename}",
            get(file).head(file),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/claims", get(admin_claims).post(admin_add_claims))
        .route("/admin/claims/{name}", delete(admin_delete_claim))
        .route("/admin/files/accept", post(admin_accept_file))
        .route(
            "/admin/files/{project}/{filename}",
            delete(admin_delete_file),
        )
        .route("/admin/decisions", get(admin_decisions))
        .route("/admin/quarantine", get(admin_quarantine))
        .route("/admin/quarantine/release", post(admin_release))
        .route("/admin/quarantine/block", post(admin_block))
        .route("/admin/feed", get(admin_feed))
        .route("/admin/advisories/{name}", get(admin_advisories))
        .merge(crate::console::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), timed))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forwarded,
        ))
        .with_state(state)
}

/// Behind a trusted proxy, the client is the right-most address of
/// `X-Forwarded-For` that is not itself a trusted proxy: what the last
/// trusted proxy saw. A client inside a trusted block counts as a proxy, so
/// what it writes to the left is believed: list proxies, not client
/// networks. From anyone else the header changes nothing.
async fn forwarded(State(st): St, mut req: Request, next: axum::middleware::Next) -> Response {
    if !st.proxies.is_empty()
        && let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied()
        && st
            .proxies
            .iter()
            .any(|n| n.contains(&peer.ip().to_canonical()))
    {
        let hops: Vec<String> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_owned())
            .collect();
        let client = hops
            .iter()
            .rev()
            .map(|h| hop_ip(h))
            .take_while(Option::is_some)
            .flatten()
            .find(|ip| !st.proxies.iter().any(|n| n.contains(ip)));
        if let Some(ip) = client {
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(ip, 0)));
        }
    }
    next.run(req).await
}

/// One `X-Forwarded-For` hop as an address: `1.2.3.4`, `1.2.3.4:port`,
/// `[v6]`, `[v6]:port`; IPv4-mapped IPv6 as IPv4. Anything else is `None`.
fn hop_ip(h: &str) -> Option<std::net::IpAddr> {
    let h = h.trim();
    let ip = if let Ok(ip) = h.parse::<std::net::IpAddr>() {
        ip
    } else if let Ok(sa) = h.parse::<SocketAddr>() {
        sa.ip()
    } else {
        h.strip_prefix('[')?.strip_suffix(']')?.parse().ok()?
    };
    Some(ip.to_canonical())
}

/// Record each request's latency in its route's histogram.
async fn timed(State(st): St, req: Request, next: axum::middleware::Next) -> Response {
    let p = req.uri().path();
    let route = if p.starts_with("/simple") {
        "simple"
    } else if p.starts_with("/files/") {
        "files"
    } else if p.starts_with("/admin/") {
        "admin"
    } else if req.method() == Method::POST {
        "upload"
    } else {
        ""
    };
    let t = Instant::now();
    let r = next.run(req).await;
    st.metrics.observe_route(route, t.elapsed());
    r
}

/// Bind and serve until SIGINT/SIGTERM; in-flight requests finish first.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let listen = cfg.listen.clone();
    let state = Arc::new(AppState::new(cfg)?);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    // Hosted uploads rest on the store refusing a second create of one key:
    // a store that ignores If-None-Match would let one replica's upload
    // silently replace another's, so the firewall does not start on one.
    if let Some(o) = &state.objects {
        o.check_conditional_create()
            .await
            .map_err(|e| anyhow::anyhow!("storage.objects: {e}"))?;
        o.write_ready_probe()
            .await
            .map_err(|e| anyhow::anyhow!("storage.objects: {e}"))?;
        state.claim_hosted_projects().await;
    }
    // The feed is read before the first request is answered: a firewall
    // told to block known-malicious packages does not serve them while it
    // starts. With nothing stored and every source failing, it does not start.
    if !state.cfg.feed.sources.is_empty() {
        for id in &state.cfg.feed.ignore {
            tracing::warn!(event = "feed-ignore", advisory = %id, "an advisory is configured as not enforced");
        }
        let s = state.clone();
        let r = tokio::task::spawn_blocking(move || s.import_feed()).await?;
        let (stored, ..) = state.db.feed_counts()?;
        anyhow::ensure!(
            stored > 0 || r.errors.is_empty(),
            "the advisory feed could not be read and nothing is stored from before: {}",
            r.errors.join("; ")
        );
        if state.cfg.feed.refresh_minutes > 0 {
            let s = state.clone();
            let every = Duration::from_secs(state.cfg.feed.refresh_minutes * 60);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let s2 = s.clone();
                    let _ = tokio::task::spawn_blocking(move || s2.import_feed()).await;
                }
            });
        }
    }
    // Expired cache entries go, whatever the traffic; once an hour, shared
    // decisions older than storage.decisions_keep_days.
    let sweeper = state.clone();
    tokio::spawn(async move {
        let mut t = tokio::time::interval(Duration::from_secs(15));
        let mut n: u64 = 0;
        loop {
            t.tick().await;
            sweeper.sweep();
            if n.is_multiple_of(240) && n > 0 && sweeper.objects.is_some() {
                sweeper.claim_hosted_projects().await;
            }
            if n.is_multiple_of(240) && sweeper.db.is_shared() {
                let s = sweeper.clone();
                let _ = tokio::task::spawn_blocking(move || s.prune_decisions()).await;
            }
            n += 1;
        }
    });
    eprintln!(
        "pickguard firewall listening on http://{addr}/simple/ (data in {})",
        state.cfg.data_dir.display()
    );
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown())
    .await?;
    tracing::info!(event = "stopped", "pickguard firewall stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn redirect(to: &str) -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, to.to_owned())],
    )
        .into_response()
}

fn text(status: u16, body: String, reason: Option<&str>) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(reason) =
        reason.and_then(|r| HeaderValue::from_str(&r.replace(['\r', '\n'], " ")).ok())
    {
        r.headers_mut().insert("x-pickguard-reason", reason);
    }
    if status >= 400
        && let Some(reason) = reason
    {
        set_reason_phrase(&mut r, reason);
    }
    r
}

/// Put the reason in the HTTP/1 status line ("403 MAL-2022-7355 ..."):
/// pip and uv print the reason phrase of a refused index page, not its
/// body, so this is where the person installing sees why. Printable ASCII,
/// at most 200 bytes.
fn set_reason_phrase(r: &mut Response, reason: &str) {
    let canonical = r.status().canonical_reason().unwrap_or("Refused");
    let mut phrase: String = format!("{canonical} (pickguard: {reason})")
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if phrase.len() > 200 {
        phrase.truncate(197);
        phrase.push_str("...");
    }
    if let Ok(p) = hyper::ext::ReasonPhrase::try_from(phrase.into_bytes()) {
        r.extensions_mut().insert(p);
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn log(
    st: &AppState,
    client: SocketAddr,
    method: &Method,
    path: &str,
    project: Option<&str>,
    decision: &str,
    upstream: Option<String>,
    claimed: bool,
    reason: Option<String>,
    status: u16,
    hidden: Vec<String>,
) {
    match status {
        200..=299 => Metrics::inc(&st.metrics.served),
        404 => Metrics::inc(&st.metrics.not_found),
        _ => Metrics::inc(&st.metrics.blocked),
    }
    st.audit.record(Decision {
        ts: now_rfc3339(),
        client: client.ip().to_string(),
        method: method.to_string(),
        path: path.to_owned(),
        project: project.map(str::to_owned),
        decision: decision.to_owned(),
        upstream,
        claimed,
        reason,
        status,
        hidden,
        dry_run: st.cfg.dry_run,
        sample_of: None,
    });
}

/// Readiness for a load balancer: 200 when the database and file storage
/// work now, 503 with the reason otherwise (never cached).
async fn readyz(State(st): St) -> Response {
    let s = st.clone();
    let r = tokio::task::spawn_blocking(move || s.ready())
        .await
        .unwrap_or_else(|e| Err(format!("readiness check failed: {e}")));
    let r = match (r, &st.objects) {
        (Ok(()), Some(o)) => o.ready().await,
        (r, _) => r,
    };
    let (status, body) = match r {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => {
            tracing::warn!(event = "not-ready", reason = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n"))
        }
    };
    (status, [(header::CACHE_CONTROL, "no-store")], body).into_response()
}

async fn root_index(State(st): St, headers: HeaderMap) -> Response {
    Metrics::inc(&st.metrics.requests);
    if let Some(r) = deny_read(&st, &headers) {
        return r;
    }
    let Some(fmt) = negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())) else {
        return not_acceptable();
    };
    // Public indexes are not enumerated, and the claim registry is a list of
    // private names — a target list for confusion attacks on clients outside
    // the firewall — so only an administrator sees it. Installers never need
    // the root index.
    let mut names: Vec<String> = if deny(&st, &headers).is_none() {
        // An unreadable registry is not an empty one: an audit reading this
        // list would call the organisation's private names none.
        match st.db.claims() {
            Ok(c) => c.into_iter().map(|c| c.name).collect(),
            Err(e) => return text(503, format!("claim registry: {e}\n"), None),
        }
    } else {
        Vec::new()
    };
    names.sort();
    let body = if fmt == Format::Json {
        render_index_json(&names)
    } else {
        render_index_html(&names)
    };
    simple_response(200, fmt, body)
}

fn not_acceptable() -> Response {
    let mut r = text(
        406,
        "none of the Accept types is served: use application/vnd.pypi.simple.v1+json or +html\n"
            .into(),
        None,
    );
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    r
}

fn simple_response(status: u16, fmt: Format, body: String) -> Response {
    let mut r = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(fmt.content_type()),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    r
}

async fn project_noslash(Path(name): Path<String>) -> Response {
    redirect(&format!("/simple/{}/", normalize(&name)))
}

async fn project(
    State(st): St,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Response {
    Metrics::inc(&st.metrics.requests);
    if let Some(r) = deny_read(&st, &headers) {
        return r;
    }
    let name = normalize(&raw);
    let path = format!("/simple/{raw}/");
    if raw != name {
        return redirect(&format!("/simple/{name}/"));
    }
    if !pickguard_index::is_valid_name(&name) {
        log(
            &st,
            client,
            &Method::GET,
            &path,
            None,
            "invalid-name",
            None,
            false,
            None,
            404,
            vec![],
        );
        return text(404, "not a valid project name\n".into(), None);
    }
    let Some(fmt) = negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())) else {
        return not_acceptable();
    };
    let fkey = if fmt == Format::Json { "json" } else { "html" };
    let generation = st.current_generation().await;
    let ttl = Duration::from_secs(st.cfg.page_ttl_secs);
    // Hot path: a rendered page still fresh. Still logged.
    let hit = st
        .response_cache
        .lock()
        .ok()
        .and_then(|c| c.get(&(name.clone(), fkey)).cloned());
    if let Some(hit) = hit.filter(|h| h.at.elapsed() < ttl && Some(h.generation) == generation) {
        Metrics::inc(&st.metrics.page_cache_hits);
        // The decision was logged when the page was made; repeats are counted
        // and one in AUDIT_SAMPLE is written, marked as standing for them all.
        let n = st
            .page_hits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Metrics::inc(&st.metrics.served);
        if n % AUDIT_SAMPLE == 0 {
            st.audit.record(Decision {
                ts: now_rfc3339(),
                client: client.ip().to_string(),
                method: "GET".into(),
                path: path.clone(),
                project: Some(name.clone()),
                decision: hit.decision.clone(),
                upstream: hit.upstream.clone(),
                claimed: hit.claimed,
                reason: Some("cached page".into()),
                status: 200,
                hidden: vec![],
                dry_run: st.cfg.dry_run,
                sample_of: Some(AUDIT_SAMPLE),
            });
        }
        let mut r = (StatusCode::OK, Body::from(hit.body)).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(fmt.content_type()),
        );
        h.insert(header::VARY, HeaderValue::from_static("Accept"));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        if hit.hidden > 0 {
            h.insert("x-pickguard-hidden", HeaderValue::from(hit.hidden as u64));
        }
        return r;
    }
    let res = st.resolve(&name).await;
    if let Ok(mut files) = st.files.write() {
        if files.len() > 1_000_000 {
            files.clear();
        }
        for f in &res.files {
            files.insert((f.upstream.clone(), f.sha256.clone()), f.clone());
        }
    }
    let upstream = (!res.upstreams.is_empty()).then(|| res.upstreams.join(","));
    log(
        &st,
        client,
        &Method::GET,
        &path,
        Some(&name),
        res.decision,
        upstream.clone(),
        res.claimed,
        res.reason.clone(),
        res.status,
        res.hidden.clone(),
    );
    let mut resp = match (&res.project, res.status) {
        (Some(p), 200) => {
            let body = if fmt == Format::Json {
                render_json(p)
            } else {
                render_html(p)
            };
            if let Some(generation) = generation
                && let Ok(mut c) = st.response_cache.lock()
            {
                let held = st
                    .resp_bytes
                    .fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if c.len() > 100_000 || held > st.cfg.cache_max_bytes {
                    c.clear();
                    st.resp_bytes.store(0, std::sync::atomic::Ordering::Relaxed);
                }
                c.insert(
                    (name.clone(), fkey),
                    crate::CachedResponse {
                        at: Instant::now(),
                        generation,
                        decision: res.decision.to_owned(),
                        upstream: upstream.clone(),
                        claimed: res.claimed,
                        hidden: res.hidden.len(),
                        body: bytes::Bytes::from(body.clone()),
                    },
                );
            }
            simple_response(200, fmt, body)
        }
        (Some(p), status) if fmt == Format::Json => simple_response(status, fmt, render_json(p)),
        (_, status) => text(
            status,
            format!("{}\n", res.reason.clone().unwrap_or_default()),
            res.reason.as_deref(),
        ),
    };
    if let Some(r) = res
        .reason
        .as_deref()
        .and_then(|r| HeaderValue::from_str(&r.replace(['\r', '\n'], " ")).ok())
    {
        resp.headers_mut().insert("x-pickguard-reason", r);
    }
    if res.status >= 400
        && let Some(r) = res.reason.as_deref()
    {
        set_reason_phrase(&mut resp, r);
    }
    // An upstream failure is answered from memory until it is asked again:
    // asking sooner gets the same answer.
    if res.status >= 500
        && let Some(n) = st.retry_after(&name)
    {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(n));
    }
    if !res.hidden.is_empty() {
        resp.headers_mut().insert(
            "x-pickguard-hidden",
            HeaderValue::from(res.hidden.len() as u64),
        );
    }
    resp
}

/// Where a file lives: from the listing just served, or by listing again.
async fn file_ref(
    st: &AppState,
    upstream: &str,
    project: &str,
    sha: &str,
    filename: &str,
) -> Result<(crate::resolve::FileRef, bool), (u16, String)> {
    let known = st
        .files
        .read()
        .ok()
        .and_then(|m| m.get(&(upstream.to_owned(), sha.to_owned())).cloned());
    let known = known.filter(|f| f.filename == filename && f.project == project);
    if let Some(f) = known {
        // Claims and quarantine may have changed since the listing.
        let res = st.resolve(project).await;
        if res
            .files
            .iter()
            .any(|r| r.sha256 == f.sha256 && r.upstream == f.upstream)
        {
            return Ok((f, res.claimed));
        }
        return Err((
            res.status.max(403),
            res.reason
                .unwrap_or_else(|| format!("{filename} is not served: {}", res.hidden.join("; "))),
        ));
    }
    let res = st.resolve(project).await;
    let claimed = res.claimed;
    match res
        .files
        .into_iter()
        .find(|f| f.upstream == upstream && f.sha256 == sha && f.filename == filename)
    {
        Some(f) => Ok((f, claimed)),
        None if res.status == 200 => {
            let why = res.hidden.iter().find(|h| h.starts_with(filename)).cloned();
            Err((
                if why.is_some() { 403 } else { 404 },
                why.unwrap_or_else(|| {
                    format!("{project} lists no {filename} with that sha256 on {upstream}")
                }),
            ))
        }
        None => Err((res.status, res.reason.unwrap_or_default())),
    }
}

fn valid_component(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && !s.contains('\\') && s != "." && s != ".."
}

async fn file(
    State(st): St,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path((upstream, project, sha, filename)): Path<(String, String, String, String)>,
    req: Request,
) -> Response {
    Metrics::inc(&st.metrics.requests);
    if let Some(r) = deny_read(&st, req.headers()) {
        return r;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let sha_ok = sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit());
    // Only the normalised spelling: another one would be resolved (and asked
    // of public upstreams) under a name the claims do not match.
    if !sha_ok
        || !valid_component(&upstream)
        || !valid_component(&filename)
        || !pickguard_index::is_valid_name(&project)
        || project != normalize(&project)
    {
        return text(404, "not found\n".into(), None);
    }
    let (dist, is_metadata) = match filename.strip_suffix(".metadata") {
        Some(d) => (d.to_owned(), true),
        None => (filename.clone(), false),
    };
    let (fref, claimed) = match file_ref(&st, &upstream, &project, &sha.to_lowercase(), &dist).await
    {
        Ok(f) => f,
        Err((status, reason)) => {
            log(
                &st,
                client,
                &method,
                &path,
                Some(&project),
                "file-refused",
                Some(upstream),
                false,
                Some(reason.clone()),
                status,
                vec![],
            );
            return text(status, format!("{reason}\n"), Some(&reason));
        }
    };
    let dir = st.cache_dir.join(&fref.upstream).join(&fref.sha256);
    let mut target = dir.join(&filename);
    let plain_get = method == Method::GET && !req.headers().contains_key(header::RANGE);
    if fref.upstream == "hosted" {
        match st.hosted_path(&project, &fref.sha256, &dist).await {
            Ok(Some(p)) if !is_metadata => target = p,
            Ok(_) => return text(404, "not found\n".into(), None),
            Err(e) => {
                let reason = format!("hosted index: {e}");
                return text(503, format!("{reason}\n"), Some(&reason));
            }
        }
    } else if tokio::fs::metadata(&target).await.is_ok() {
        Metrics::inc(&st.metrics.file_cache_hits);
    } else {
        let (url, want) = if is_metadata {
            (
                format!("{}.metadata", fref.url),
                fref.metadata_sha256.clone(),
            )
        } else {
            (fref.url.clone(), Some(fref.sha256.clone()))
        };
        // Metadata is served only with the hash the index advertises.
        let Some(want) = want else {
            return text(404, "no verifiable metadata for this file\n".into(), None);
        };
        let listed = if is_metadata { None } else { fref.size };
        let max = listed
            .unwrap_or(st.cfg.max_file_bytes)
            .min(st.cfg.max_file_bytes);
        // Another replica may have fetched it: the shared store's copy is
        // used once its bytes hash to what the index says. Any failure
        // there falls back to the upstream (whose bytes are verified too).
        let mut from_shared = false;
        if let Some(o) = &st.objects {
            let rel = format!("files/{}/{}/{filename}", fref.upstream, fref.sha256);
            match o.fetch_verified(&rel, &want, &target, max, true).await {
                Ok(crate::objects::Fetched::Stored) => {
                    Metrics::inc(&st.metrics.object_hits);
                    from_shared = true;
                }
                Ok(crate::objects::Fetched::Absent) => {}
                Err(e) => {
                    Metrics::inc(&st.metrics.object_errors);
                    tracing::warn!(event = "object-store-read-failed", file = %filename, error = %e, "read from the upstream instead");
                }
            }
        }
        let job = crate::fill::Job {
            max,
            upstream: fref.upstream.clone(),
            url,
            sha256: want,
            dir,
            name: filename.clone(),
        };
        let outcome = if from_shared {
            Ok(())
        } else {
            match crate::fill::join(&st, job).await {
                Ok(crate::fill::Role::Leader(rx, len)) if plain_get => {
                    log(
                        &st,
                        client,
                        &method,
                        &path,
                        Some(&project),
                        "serve-file",
                        Some(fref.upstream.clone()),
                        claimed,
                        Some("downloaded, streamed while verified".into()),
                        200,
                        vec![],
                    );
                    return streamed(rx, len);
                }
                Ok(crate::fill::Role::Leader(rx, _)) => {
                    // HEAD or Range: let the download finish, then answer from the cache.
                    drop(rx);
                    match st.fills.lock().ok().and_then(|f| f.get(&target).cloned()) {
                        Some(w) => crate::fill::wait(w).await,
                        None => Ok(()),
                    }
                }
                Ok(crate::fill::Role::Follower(w)) => crate::fill::wait(w).await,
                Err(e) => Err(e),
            }
        };
        if let Err((status, reason)) = outcome {
            log(
                &st,
                client,
                &method,
                &path,
                Some(&project),
                "file-error",
                Some(fref.upstream.clone()),
                claimed,
                Some(reason.clone()),
                status,
                vec![],
            );
            return text(status, format!("{reason}\n"), Some(&reason));
        }
        if tokio::fs::metadata(&target).await.is_err() {
            let reason = format!("{filename}: the download did not complete");
            return text(502, format!("{reason}\n"), Some(&reason));
        }
    }
    // A cached file served again is a counter, not an audit line.
    if fref.upstream == "hosted" {
        log(
            &st,
            client,
            &method,
            &path,
            Some(&project),
            "serve-file",
            Some(fref.upstream.clone()),
            claimed,
            None,
            200,
            vec![],
        );
    } else {
        Metrics::inc(&st.metrics.served);
    }
    match tower_http::services::ServeFile::new(&target)
        .oneshot(req)
        .await
    {
        Ok(r) => {
            let mut r = r.map(Body::new);
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=365000000, immutable"),
            );
            r
        }
        Err(e) => text(500, format!("serving {filename}: {e}\n"), None),
    }
}

/// The first client's response: chunks as they are verified and written.
fn streamed(
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
    len: Option<u64>,
) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = (StatusCode::OK, Body::from_stream(stream)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(n) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    r
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u32
}

async fn metrics(State(st): St) -> Response {
    let mut r = st.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// `Some(refusal)` unless the request carries an admin credential.
fn deny(st: &AppState, headers: &HeaderMap) -> Option<Response> {
    if !st.auth.admin_configured() {
        return Some(text(
            404,
            "the admin API is off: set admin_token (or PICKGUARD_ADMIN_TOKEN) or a [[token]] with role \"admin\"\n".into(),
            None,
        ));
    }
    match st.auth.identify(headers) {
        Some(id) if id.is_admin() => None,
        Some(id) => Some(text(
            403,
            format!("token {:?} is not an admin token\n", id.name),
            None,
        )),
        None => Some(text(401, "bad or missing bearer token\n".into(), None)),
    }
}

/// `Some(refusal)` when reads need a token and the request has none valid.
fn deny_read(st: &AppState, headers: &HeaderMap) -> Option<Response> {
    if !st.cfg.require_read_token || st.auth.identify(headers).is_some() {
        return None;
    }
    let mut r = text(401, "this index needs a token to read\n".into(), None);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"pickguard\""),
    );
    Some(r)
}

async fn admin_claims(State(st): St, headers: HeaderMap) -> Response {
    if let Some(r) = deny(&st, &headers) {
        return r;
    }
    let claims = match st.db.claims() {
        Ok(c) => c,
        Err(e) => return text(503, format!("claim registry: {e}\n"), None),
    };
    Json(serde_json::json!({
        "claims": claims,
        "patterns": st.cfg.claims.patterns,
        "names": st.cfg.claims.names,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct ClaimBody {
    names: Vec<String>,
    #[serde(default)]
    source: Option<String>,
}

async fn admin_add_claims(
    State(st): St,
    headers: HeaderMap,
    Json(body): Json<ClaimBody>,
) -> Response {
    if let Some(r) = deny(&st, &headers) {
        return r;
    }
    let source = body.source.unwrap_or_else(|| "admin".into());
    let mut added = Vec::new();
    for n in &body.names {
        if !pickguard_index::is_valid_name(n) {
            return text(400, format!("{n:?} is not a valid project name\n"), None);
        }
        let norm = normalize(n);
        match st.db.claim(&norm, &source) {
            Ok(true) => added.push(norm.clone()),
            Ok(false) => {}
            // Never "added: []" for a name that was not recorded: the admin
            // would believe it claimed.
            Err(e) => {
                return text(
                    503,
                    format!(
                        "claim registry: {e}; not claimed: {norm}{}\n",
                        if added.is_empty() {
                            String::new()
                        } else {
                            format!(" (claimed before the failure: {})", added.join(", "))
                        }
                    ),
                    None,
                );
            }
        }
        st.invalidate(&norm);
    }
    Json(serde_json::json!({"added": added})).into_response()
}

async fn admin_delete_claim(
    State(st): St,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = deny(&st, &headers) {
        return r;
    }
    let norm = normalize(&name);
    let removed = match st.unclaim_unless_hosted(&norm).await {
        crate::hosted::Unclaim::Done(r) => r,
        crate::hosted::Unclaim::Hosted => {
            return text(
                409,
                format!(
                    "{norm} has files in the hosted index, which claim it: delete them first (DELETE /admin/files/{norm}/FILENAME)\n"
                ),
                None,
            );
        }
        crate::hosted::Unclaim::Unknown(e) => {
            return text(
                503,
                format!(
                    "{norm} is still claimed: whether it has hosted files cannot be read ({e})\n"
                ),
                None,
            );
        }
        crate::hosted::Unclaim::Registry(e) => {
            return text(500, format!("claim registry: {e}\n"), None);
        }
    };
    st.invalidate(&norm);
    let still = st.claim_reason(&norm);
    log(
        &st,
        client,
        &Method::DELETE,
        &format!("/admin/claims/{norm}"),
        Some(&norm),
        "admin-unclaim",
        None,
        still.is_some(),
        still.clone().map(|c| format!("still claimed: {c}")),
        200,
        vec![],
    );
    Json(serde_json::json!({"removed": removed, "still_claimed": still})).into_response()
}

async fn admin_delete_file(
    State(st): St,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((project, filename)): Path<(String, String)>,
) -> Response {
    if let Some(r) = deny(&st, &headers) {
        return r;
    }
    let norm = normalize(&project);
    if !pickguard_index::is_valid_name(&norm) {
        return text(400, "not a valid project name\n".into(), None);
    }
    let actor = st
        .auth
        .identify(&headers)
        .map(|i| i.name)
        .unwrap_or_default();
    match st.remove_hosted(&norm, &filename).await {
        Ok(deleted) => {
            log(
                &st,
                client,
                &Method::DELETE,
                &format!("/admin/files/{norm}/{filename}"),
                Some(&norm),
                "admin-delete-file",
                Some("hosted".into()),
                true,
                Some(format!(
                    "{filename} deleted by {actor} (existed: {deleted})"
                )),
                if deleted { 200 } else { 404 },
                vec![],
            );
            let status = if deleted {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            (status, Json(serde_json::json!({"deleted": deleted}))).into_response()
        }
        Err(e) => text(400, format!("{e}\n"), None),
    }
}

#[derive(Deserialize)]
struct AcceptBody {
    upstream: String,
    filename: String,
}

/// Accept new bytes an upstream lists under a file name seen before.
async fn admin_accept_file(
    State(st): St,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<AcceptBody>,
) -> Response {
    if let Some(r) = deny(&st, &headers) {
        return r;
    }
    let forgotten = match st.db.forget_file(&body.upstream, &body.filename) {
        Ok(f) => f,
        Err(e) => return text(500, format!("{e}\n"), None),
    };
    if let Ok(mut c) = st.response_cache.lock() {
        c.clear();
    }
    log(
        &st,
        client,
        &Method::POST,
        "/admin/files/accept",
        None,
        "admin-accept-file",
        Some(body.upstream.clone()),
        false,
        Some(format!("{} accepted with its current bytes", body.filename)),
        200,
        vec![],
    );
    Json(serde_json::json!({"forgotten": forgotten})).into_response()
}

#[derive(Deserialize)]
struct DecisionQuery {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    project: Option<String>,
}

async fn admin_decisions(
    State(st): St,
    headers: HeaderMap,
    Query(q): Query<DecisionQuery>,
) -> Response {
    if let Some(r) = deny(&st, &headers) {
        return r;
    }
    let p = q.project.map(|p| normalize(&p));
    Json(serde_json::json!({"decisions": st.audit.recent(q.limit.unwrap_or(100).min(10_000), p.as_deref())})).into_response()
}

/// Feed status: what is stored, the configured sources, the last import.
async fn admin_feed(State(st): St, headers: HeaderMap) -> Response {
    if let Some(r) = deny(&st, &headers) {
        return r;
    }
    let last = st.feed_status.lock().ok().and_then(|s| s.clone());
    match st.db.feed_counts() {
        Ok((advisories, projects, withdrawn, imported)) => Json(serde_json::json!({
            "advisories": advisories,
            "projects": projects,
            "withdrawn_rows": withdrawn,
            "last_stored": imported,
            "sources": st.cfg.feed.sources,
            "refresh_minutes": st.cfg.feed.refresh_minutes,
            "ignored": st.cfg.feed.ignore,
            "last_import": last,
        }))
        .into_response(),
        Err(e) => text(
            500,
            format!("the advisory database could not be read: {e}\n"),
            None,
        ),
    }
}

/// Advisories stored for one project.
async fn admin_advisories(State(st): St, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(r) = deny(&st, &headers) {
        return r;
    }
    match st.db.advisories(&normalize(&name)) {
        Ok(a) => {
            Json(serde_json::json!({"project": normalize(&name), "advisories": a})).into_response()
        }
        Err(e) => text(
            500,
            format!("the advisory database could not be read: {e}\n"),
            None,
        ),
    }
}

async fn admin_quarantine(State(st): St, headers: HeaderMap) -> Response {
    if let Some(r) = deny(&st, &headers) {
        return r;
    }
    let recent: Vec<_> = st
        .audit
        .recent(10_000, None)
        .into_iter()
        .filter(|d| !d.hidden.is_empty())
        .take(500)
        .collect();
    Json(serde_json::json!({"quarantined": recent})).into_response()
}

#[derive(Deserialize)]
struct OverrideBody {
    project: String,
    #[serde(default)]
    version: Option<String>,
}

async fn set_override(
    st: &AppState,
    headers: &HeaderMap,
    body: OverrideBody,
    action: &str,
) -> Response {
    if let Some(r) = deny(st, headers) {
        return r;
    }
    let p = normalize(&body.project);
    let v = body.version.unwrap_or_else(|| "*".into());
    if let Err(e) = st.db.set_override(&p, &v, action) {
        return text(500, format!("{e}\n"), None);
    }
    st.invalidate(&p);
    Json(serde_json::json!({"project": p, "version": v, "action": action})).into_response()
}

async fn admin_release(
    State(st): St,
    headers: HeaderMap,
    Json(body): Json<OverrideBody>,
) -> Response {
    set_override(&st, &headers, body, "allow").await
}

async fn admin_block(
    State(st): St,
    headers: HeaderMap,
    Json(body): Json<OverrideBody>,
) -> Response {
    set_override(&st, &headers, body, "block").await
}

/// Largest text field of an upload form (metadata fields: description...).
const MAX_FORM_FIELD: usize = 1 << 20;

/// Read one multipart field to its end, at most `limit` bytes.
async fn field_text(
    f: &mut axum::extract::multipart::Field<'_>,
    limit: usize,
) -> Result<String, (u16, String)> {
    let mut v = Vec::new();
    while let Some(c) = f
        .chunk()
        .await
        .map_err(|e| (400, format!("reading the upload form: {e}")))?
    {
        if v.len() + c.len() > limit {
            return Err((413, format!("a form field is over {limit} bytes")));
        }
        v.extend_from_slice(&c);
    }
    Ok(String::from_utf8_lossy(&v).into_owned())
}

/// Stream the `content` field into a new file in `dir`: (path, sha256, size).
async fn field_to_file(
    f: &mut axum::extract::multipart::Field<'_>,
    dir: &std::path::Path,
    limit: u64,
) -> Result<(std::path::PathBuf, String, u64), (u16, String)> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| (507, format!("storage: {e}")))?;
    let path = dir.join(format!(
        "{}-{}.part",
        std::process::id(),
        hex::encode(rand_u32().to_le_bytes()) + &hex::encode(rand_u32().to_le_bytes())
    ));
    let result = async {
        let mut out = tokio::fs::File::create_new(&path)
            .await
            .map_err(|e| (507, format!("storage: {e}")))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(c) = f
            .chunk()
            .await
            .map_err(|e| (400, format!("reading the upload: {e}")))?
        {
            size += c.len() as u64;
            if size > limit {
                return Err((
                    413,
                    format!("the file is over the {limit}-byte upload limit (max_upload_bytes)"),
                ));
            }
            hasher.update(&c);
            out.write_all(&c)
                .await
                .map_err(|e| (507, format!("storage: {e}; nothing was stored")))?;
        }
        out.sync_all()
            .await
            .map_err(|e| (507, format!("storage: {e}; nothing was stored")))?;
        Ok((hex::encode(hasher.finalize()), size))
    }
    .await;
    match result {
        Ok((sha, size)) => Ok((path, sha, size)),
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(e)
        }
    }
}

/// Twine-compatible legacy upload: multipart form, `:action=file_upload`.
async fn upload(
    State(st): St,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: axum::extract::Multipart,
) -> Response {
    Metrics::inc(&st.metrics.requests);
    if !st.auth.publish_configured() {
        return text(
            403,
            "uploads are off: set a [[token]] with role \"publish\" (or upload_token)\n".into(),
            None,
        );
    }
    let Some(id) = st.auth.identify(&headers) else {
        let mut r = text(
            401,
            "upload needs HTTP Basic auth with a publish token as password\n".into(),
            None,
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"pickguard\""),
        );
        return r;
    };
    let mut tmp = None;
    let result = receive_upload(&st, &id, form, &mut tmp).await;
    if let Some(t) = tmp {
        let _ = tokio::fs::remove_file(t).await;
    }
    let (project, outcome) = match result {
        Ok((project, fname, sha)) => (
            Some(project),
            Ok(format!("{fname} sha256={sha} by {}", id.name)),
        ),
        Err((project, status, msg)) => (project, Err((status, msg))),
    };
    match outcome {
        Ok(detail) => {
            log(
                &st,
                client,
                &Method::POST,
                "/upload",
                project.as_deref(),
                "upload",
                Some("hosted".into()),
                true,
                Some(detail),
                200,
                vec![],
            );
            text(200, "OK\n".into(), None)
        }
        Err((status, msg)) => {
            tracing::warn!(event = "upload-refused", actor = %id.name, project = project.as_deref().unwrap_or(""), status, reason = %msg, "upload refused");
            log(
                &st,
                client,
                &Method::POST,
                "/upload",
                project.as_deref(),
                "upload-refused",
                Some("hosted".into()),
                false,
                Some(format!("{msg} (by {})", id.name)),
                status,
                vec![],
            );
            text(status, format!("{msg}\n"), Some(&msg))
        }
    }
}

type UploadError = (Option<String>, u16, String);

/// Read the form (file streamed to disk), check who may publish what, store.
async fn receive_upload(
    st: &AppState,
    id: &crate::auth::Identity,
    mut form: axum::extract::Multipart,
    tmp: &mut Option<std::path::PathBuf>,
) -> Result<(String, String, String), UploadError> {
    let (mut action, mut name, mut version, mut digest, mut requires_python, mut file) =
        (None, None, None, None, None, None);
    loop {
        match form.next_field().await {
            Ok(Some(mut f)) => {
                let field = f.name().unwrap_or("").to_owned();
                if field == "content" {
                    if file.is_some() {
                        return Err((None, 400, "more than one file in the upload".into()));
                    }
                    let fname = f.file_name().unwrap_or("").to_owned();
                    let (path, sha, size) =
                        field_to_file(&mut f, &st.incoming_dir(), st.cfg.max_upload_bytes)
                            .await
                            .map_err(|(s, m)| (None, s, m))?;
                    *tmp = Some(path.clone());
                    file = Some((fname, path, sha, size));
                } else {
                    let v = field_text(&mut f, MAX_FORM_FIELD)
                        .await
                        .map_err(|(s, m)| (None, s, m))?;
                    match field.as_str() {
                        ":action" => action = Some(v),
                        "name" => name = Some(v),
                        "version" => version = Some(v),
                        "sha256_digest" if !v.is_empty() => digest = Some(v),
                        "requires_python" if !v.is_empty() => requires_python = Some(v),
                        _ => {}
                    }
                }
            }
            Ok(None) => break,
            Err(e) => return Err((None, 400, format!("bad multipart form: {e}"))),
        }
    }
    if action.as_deref() != Some("file_upload") {
        return Err((None, 400, "only :action=file_upload is supported".into()));
    }
    let (Some(name), Some(version), Some((fname, path, sha, size))) = (name, version, file) else {
        return Err((None, 400, "name, version and content are required".into()));
    };
    let project = normalize(&name);
    let err = |s: u16, m: String| (Some(project.clone()), s, m);
    if let Some(d) = digest
        && !d.trim().eq_ignore_ascii_case(&sha)
    {
        return Err(err(
            400,
            format!("sha256_digest {d} does not match the uploaded content ({sha})"),
        ));
    }
    if !id.may_publish(&project) {
        return Err(err(
            403,
            format!("token {:?} may not publish {project:?}", id.name),
        ));
    }
    if st.cfg.routes.contains_key(&project) {
        return Err(err(
            409,
            format!(
                "{project} is routed to fixed upstreams ([routes]); the hosted index is not one of them"
            ),
        ));
    }
    // Name takeover: a name that exists publicly is published here only
    // after an administrator has claimed it.
    let hosted = st
        .hosted_any(&project)
        .await
        .map_err(|e| err(503, format!("hosted index: {e}; nothing was stored")))?;
    if st.claim_reason(&project).is_none() && !hosted {
        match st.public_presence(&project).await {
            Ok(None) => {}
            Ok(Some(up)) => {
                return Err(err(
                    403,
                    format!(
                        "{project} exists on public upstream {up}: publishing it here would hide the public project from every client; an administrator must claim it first (POST /admin/claims)"
                    ),
                ));
            }
            Err(e) => {
                return Err(err(
                    503,
                    format!(
                        "cannot check whether {project} exists publicly ({e}); publishing a new name needs that check, or an administrator's claim"
                    ),
                ));
            }
        }
    }
    st.store_upload(crate::hosted::Upload {
        actor: id.name.clone(),
        name,
        version,
        filename: fname.clone(),
        tmp: path,
        sha256: sha.clone(),
        size,
        requires_python,
    })
    .await
    .map_err(|(s, m)| err(s, m))?;
    Ok((project, fname, sha))
}
