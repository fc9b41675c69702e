//! The web console: server-rendered pages where a security engineer sees what
//! was blocked and why, claims names, releases or blocks quarantined
//! versions, and checks the feed, hosted files and tokens.
//!
//! Who may use it: an admin credential, presented once on the login form;
//! the session is a random id in an HttpOnly, SameSite=Strict cookie scoped
//! to /console, held in memory (a restart logs everyone out), for 8 hours.
//! Every page but the login form needs a session, so no private name is shown
//! to anyone else. Every state change is a POST carrying the session's CSRF
//! token and, when the browser sends one, an Origin of this very host; pages
//! carry a CSP without scripts, refuse framing and are not cached.

use crate::AppState;
use crate::server::log;
use axum::Form;
use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

type St = State<Arc<AppState>>;

const COOKIE: &str = "pickguard_console";
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
const MAX_SESSIONS: usize = 1024;

/// Console sessions, kept in the registry so every replica knows them; the
/// registry holds the SHA-256 of each session id, never the cookie itself.
#[derive(Default)]
pub(crate) struct Sessions;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since the epoch, zero-padded so text order is time order.
fn stamp(secs: u64) -> String {
    format!("{secs:020}")
}

fn id_key(id: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(id.as_bytes()))
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    // The kernel's CSPRNG; a failure leaves no usable session rather than a
    // guessable one.
    if getrandom(&mut b).is_err() {
        return String::new();
    }
    hex::encode(b)
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// A serializable value as a template value.
fn ser<T: Serialize>(x: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(x))
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    fn create(&self, db: &crate::db::Db, user: String) -> Option<(String, String)> {
        let (id, csrf) = (random_hex(), random_hex());
        if id.is_empty() || csrf.is_empty() {
            return None;
        }
        let now = unix_now();
        db.put_session(
            &id_key(&id),
            &csrf,
            &user,
            &stamp(now + SESSION_TTL.as_secs()),
            &stamp(now),
            MAX_SESSIONS,
        )
        .map_err(|e| tracing::error!(event = "console-session-failed", error = %e, "could not store a console session"))
        .ok()?;
        Some((id, csrf))
    }

    /// (user, csrf) of a live session.
    fn get(&self, db: &crate::db::Db, id: &str) -> Option<(String, String)> {
        let (csrf, user, expires) = db.session(&id_key(id)).ok()??;
        (expires > stamp(unix_now())).then_some((user, csrf))
    }

    fn end(&self, db: &crate::db::Db, id: &str) {
        let _ = db.drop_session(&id_key(id));
    }
}

fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The signed-in user of a request: (session id, user, csrf).
fn session(st: &AppState, headers: &HeaderMap) -> Option<(String, String, String)> {
    let id = cookie_id(headers)?;
    let (user, csrf) = st.console.get(&st.db, &id)?;
    Some((id, user, csrf))
}

fn templates() -> &'static minijinja::Environment<'static> {
    static ENV: std::sync::OnceLock<minijinja::Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        for (name, src) in [
            ("base.html", include_str!("console/base.html")),
            ("login.html", include_str!("console/login.html")),
            ("decisions.html", include_str!("console/decisions.html")),
            ("claims.html", include_str!("console/claims.html")),
            ("quarantine.html", include_str!("console/quarantine.html")),
            ("files.html", include_str!("console/files.html")),
            ("feed.html", include_str!("console/feed.html")),
        ] {
            // The templates are part of the binary; a broken one is a bug
            // the console test catches, rendered as a 500, never a panic.
            if let Err(e) = env.add_template(name, src) {
                tracing::error!(event = "console-template", template = name, error = %e, "a console template does not parse");
            }
        }
        env
    })
}

const NAV: [(&str, &str); 5] = [
    ("/console/", "Decisions"),
    ("/console/claims", "Claims"),
    ("/console/quarantine", "Quarantine"),
    ("/console/files", "Files & tokens"),
    ("/console/feed", "Feed"),
];

fn page(status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    let body = templates().get_template(name).and_then(|t| t.render(ctx));
    let (status, body) = match body {
        Ok(b) => (status, b),
        Err(e) => {
            tracing::error!(event = "console-render", template = name, error = %e, "a console page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("console page {name} could not be rendered: {e}\n"),
            )
        }
    };
    let mut r = (status, body).into_response();
    secure(r.headers_mut(), "text/html; charset=utf-8");
    r
}

fn secure(h: &mut HeaderMap, content_type: &'static str) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // same-origin, not no-referrer: under no-referrer browsers send
    // `Origin: null` on form posts, which the origin check must refuse.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure(r.headers_mut(), "text/plain; charset=utf-8");
    r
}

/// Where a page redirects with a message (shown once, escaped).
fn back(to: &str, flash: &str) -> Response {
    let mut url = format!("{to}?flash=");
    for b in flash.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    see_other(&url)
}

fn off() -> Response {
    let mut r = (
        StatusCode::NOT_FOUND,
        "the console is off: set admin_token (or PICKGUARD_ADMIN_TOKEN) or a [[token]] with role \"admin\"\n",
    )
        .into_response();
    secure(r.headers_mut(), "text/plain; charset=utf-8");
    r
}

/// A console action in the audit log.
#[allow(clippy::too_many_arguments)]
fn audit(
    st: &AppState,
    client: SocketAddr,
    path: &str,
    project: Option<&str>,
    decision: &str,
    claimed: bool,
    reason: Option<String>,
    status: u16,
) {
    log(
        st,
        client,
        &Method::POST,
        path,
        project,
        decision,
        None,
        claimed,
        reason,
        status,
        vec![],
    );
}

/// The common page context.
fn ctx(
    title: &str,
    here: &str,
    user: &str,
    csrf: &str,
    flash: Option<&str>,
    extra: minijinja::Value,
) -> minijinja::Value {
    let base = minijinja::context! {
        title, here, user, csrf, nav => NAV.to_vec(), flash => flash.unwrap_or(""), error => "",
    };
    minijinja::context! { ..extra, ..base }
}

/// A signed-in GET, or a redirect to the login form.
macro_rules! signed_in {
    ($st:expr, $headers:expr) => {{
        if !$st.auth.admin_configured() {
            return off();
        }
        match session(&$st, &$headers) {
            Some(s) => s,
            None => return see_other("/console/login"),
        }
    }};
}

/// A signed-in POST whose CSRF token and origin are right (else the
/// response to give).
#[allow(clippy::result_large_err)]
fn check_post(
    st: &AppState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(String, String), Response> {
    if !st.auth.admin_configured() {
        return Err(off());
    }
    let Some((id, user, want)) = session(st, headers) else {
        return Err(see_other("/console/login"));
    };
    let forbidden = |why: &str| {
        let mut r = (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
        secure(r.headers_mut(), "text/plain; charset=utf-8");
        r
    };
    if !same_origin(headers) {
        return Err(forbidden(
            "refused: the form was not posted from this console",
        ));
    }
    if !ct_eq(csrf.as_bytes(), want.as_bytes()) {
        return Err(forbidden(
            "refused: the form's CSRF token is not this session's",
        ));
    }
    Ok((id, user))
}

/// A browser's Origin (or, without one, Sec-Fetch-Site) says the request
/// comes from a page of this host. Requests without either (curl) pass: the
/// CSRF token still has to match.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(o) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let rest = o
            .strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"));
        return matches!((rest, host), (Some(r), Some(h)) if r == h);
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(s) => s == "same-origin" || s == "none",
        None => true,
    }
}

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(|| async { see_other("/console/") }))
        .route("/console/", get(decisions))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console/claims", get(claims))
        .route("/console/claims/add", post(claim_add))
        .route("/console/claims/remove", post(claim_remove))
        .route("/console/quarantine", get(quarantine))
        .route("/console/quarantine/act", post(quarantine_act))
        .route("/console/files", get(files))
        .route("/console/feed", get(feed))
}

#[derive(Deserialize)]
struct Flash {
    flash: Option<String>,
}

async fn login_form(State(st): St) -> Response {
    if !st.auth.admin_configured() {
        return off();
    }
    page(
        StatusCode::OK,
        "login.html",
        minijinja::context! { title => "Log in", user => "", flash => "", error => "" },
    )
}

#[derive(Deserialize)]
struct LoginBody {
    token: String,
}

async fn login(
    State(st): St,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(body): Form<LoginBody>,
) -> Response {
    if !st.auth.admin_configured() {
        return off();
    }
    let refused = |status: StatusCode, why: &str| {
        page(
            status,
            "login.html",
            minijinja::context! { title => "Log in", user => "", flash => "", error => why },
        )
    };
    if !same_origin(&headers) {
        return refused(
            StatusCode::FORBIDDEN,
            "refused: the form was not posted from this console",
        );
    }
    match st.auth.identify_secret(body.token.trim()) {
        Some(id) if id.is_admin() => {
            let Some((sid, _)) = st.console.create(&st.db, id.name.clone()) else {
                return refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no session could be made (the system's random source failed)",
                );
            };
            audit(
                &st,
                client,
                "/console/login",
                None,
                "console-login",
                false,
                Some(format!("signed in as {}", id.name)),
                303,
            );
            let mut r = see_other("/console/");
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{COOKIE}={sid}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
                SESSION_TTL.as_secs()
            )) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Some(id) => refused(
            StatusCode::FORBIDDEN,
            &format!("token {:?} is not an admin token", id.name),
        ),
        None => {
            audit(
                &st,
                client,
                "/console/login",
                None,
                "console-login-refused",
                false,
                Some(format!("bad token from {}", client.ip())),
                401,
            );
            // A guess costs a second.
            tokio::time::sleep(Duration::from_secs(1)).await;
            refused(
                StatusCode::UNAUTHORIZED,
                "that is not a token of this firewall",
            )
        }
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: String,
}

async fn logout(State(st): St, headers: HeaderMap, Form(body): Form<CsrfOnly>) -> Response {
    let (id, _) = match check_post(&st, &headers, &body.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    st.console.end(&st.db, &id);
    let mut r = see_other("/console/login");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "pickguard_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}

const KINDS: [&str; 7] = [
    "all",
    "blocked",
    "quarantined",
    "served-public",
    "served-private",
    "errors",
    "admin",
];

#[derive(Deserialize)]
struct DecisionQuery {
    kind: Option<String>,
    project: Option<String>,
    minutes: Option<String>,
    flash: Option<String>,
}

fn kind_matches(kind: &str, d: &crate::state::Decision) -> bool {
    match kind {
        "blocked" => (400..500).contains(&d.status) && d.status != 404,
        "quarantined" => !d.hidden.is_empty() || d.decision == "quarantined",
        "served-public" => d.decision.starts_with("serve-public"),
        "served-private" => {
            d.decision == "serve-private" || (d.decision == "serve-routed" && d.claimed)
        }
        "errors" => d.status >= 500,
        "admin" => d.decision.starts_with("admin-") || d.decision.starts_with("console-"),
        _ => true,
    }
}

const SHOWN: usize = 500;

async fn decisions(State(st): St, headers: HeaderMap, Query(q): Query<DecisionQuery>) -> Response {
    let (_, user, csrf) = signed_in!(st, headers);
    let kind = q
        .kind
        .as_deref()
        .filter(|k| KINDS.contains(k))
        .unwrap_or("all");
    let project = q
        .project
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(pickguard_index::normalize);
    let minutes_text = q.minutes.clone().unwrap_or_default();
    let mut error = String::new();
    let since = match minutes_text.trim() {
        "" => None,
        m => match m.parse::<i64>() {
            Ok(n) if n > 0 => Some(time::OffsetDateTime::now_utc() - time::Duration::minutes(n)),
            _ => {
                error = format!("{m:?} is not a number of minutes: the time filter is off");
                None
            }
        },
    };
    let mut rows: Vec<_> = st
        .audit
        .recent(10_000, project.as_deref())
        .into_iter()
        .filter(|d| kind_matches(kind, d))
        .filter(|d| {
            since.is_none_or(|s| {
                time::OffsetDateTime::parse(&d.ts, &time::format_description::well_known::Rfc3339)
                    .is_ok_and(|t| t >= s)
            })
        })
        .collect();
    let truncated = rows.len() > SHOWN;
    rows.truncate(SHOWN);
    let extra = minijinja::context! {
        rows => ser(&rows), truncated, kinds => KINDS.to_vec(), kind,
        project => project.unwrap_or_default(), minutes => minutes_text, error,
    };
    page(
        StatusCode::OK,
        "decisions.html",
        ctx(
            "Decisions",
            "/console/",
            &user,
            &csrf,
            q.flash.as_deref(),
            extra,
        ),
    )
}

async fn claims(State(st): St, headers: HeaderMap, Query(f): Query<Flash>) -> Response {
    let (_, user, csrf) = signed_in!(st, headers);
    let (claims, error) = match st.db.claims() {
        Ok(c) => (c, String::new()),
        Err(e) => (
            vec![],
            format!("the claims registry could not be read: {e}"),
        ),
    };
    let extra = minijinja::context! {
        claims => ser(&claims), error, patterns => st.cfg.claims.patterns.clone(), names => st.cfg.claims.names.clone(),
    };
    page(
        StatusCode::OK,
        "claims.html",
        ctx(
            "Claims",
            "/console/claims",
            &user,
            &csrf,
            f.flash.as_deref(),
            extra,
        ),
    )
}

#[derive(Deserialize)]
struct ClaimForm {
    csrf: String,
    name: String,
    #[serde(default)]
    why: String,
}

async fn claim_add(
    State(st): St,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(body): Form<ClaimForm>,
) -> Response {
    let (_, user) = match check_post(&st, &headers, &body.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let name = body.name.trim();
    if !pickguard_index::is_valid_name(name) {
        return back(
            "/console/claims",
            &format!("{name:?} is not a valid project name"),
        );
    }
    let norm = pickguard_index::normalize(name);
    let why: String = body.why.trim().chars().take(200).collect();
    let source = if why.is_empty() {
        format!("console: {user}")
    } else {
        format!("console: {user}: {why}")
    };
    let msg = match st.db.claim(&norm, &source) {
        Ok(true) => format!("{norm} is claimed"),
        Ok(false) => format!("{norm} was already claimed"),
        Err(e) => format!("{norm} could not be claimed: {e}"),
    };
    st.invalidate(&norm);
    audit(
        &st,
        client,
        "/console/claims/add",
        Some(&norm),
        "console-claim",
        true,
        Some(format!("{msg} ({source})")),
        303,
    );
    back("/console/claims", &msg)
}

#[derive(Deserialize)]
struct NameForm {
    csrf: String,
    name: String,
}

async fn claim_remove(
    State(st): St,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(body): Form<NameForm>,
) -> Response {
    let (_, user) = match check_post(&st, &headers, &body.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let norm = pickguard_index::normalize(body.name.trim());
    let msg = match st.unclaim_unless_hosted(&norm).await {
        crate::hosted::Unclaim::Done(removed) => {
            st.invalidate(&norm);
            match (removed, st.claim_reason(&norm)) {
                (_, Some(still)) => format!("{norm} is still claimed: {still}"),
                (true, None) => format!("{norm} is no longer claimed"),
                (false, None) => format!("{norm} was not claimed"),
            }
        }
        crate::hosted::Unclaim::Hosted => {
            return back(
                "/console/claims",
                &format!("{norm} has hosted files, which claim it: delete them first"),
            );
        }
        crate::hosted::Unclaim::Unknown(e) => {
            return back(
                "/console/claims",
                &format!(
                    "{norm} is still claimed: whether it has hosted files cannot be read ({e})"
                ),
            );
        }
        crate::hosted::Unclaim::Registry(e) => {
            format!("{norm}: the claims registry could not be changed: {e}")
        }
    };
    audit(
        &st,
        client,
        "/console/claims/remove",
        Some(&norm),
        "console-unclaim",
        false,
        Some(format!("{msg} (by {user})")),
        303,
    );
    back("/console/claims", &msg)
}

#[derive(Serialize)]
struct Queued {
    project: String,
    version: String,
    why: String,
    ts: String,
}

async fn quarantine(State(st): St, headers: HeaderMap, Query(f): Query<Flash>) -> Response {
    let (_, user, csrf) = signed_in!(st, headers);
    // The latest decision per project stands for it: a released version no
    // longer hides, so it leaves the queue with the next listing.
    let mut latest: HashMap<String, crate::state::Decision> = HashMap::new();
    for d in st.audit.recent(10_000, None) {
        if let Some(p) = &d.project
            && d.path.starts_with("/simple/")
            && d.sample_of.is_none()
        {
            latest.entry(p.clone()).or_insert(d);
        }
    }
    let mut queue = Vec::new();
    for (p, d) in &latest {
        for h in &d.hidden {
            let file = h.split(':').next().unwrap_or("");
            let version = pickguard_index::version_of(file, p)
                .unwrap_or("*")
                .to_owned();
            if queue
                .iter()
                .any(|q: &Queued| q.project == *p && q.version == version)
            {
                continue;
            }
            queue.push(Queued {
                project: p.clone(),
                version,
                why: h.clone(),
                ts: d.ts.clone(),
            });
        }
    }
    queue.sort_by(|a, b| b.ts.cmp(&a.ts).then(a.project.cmp(&b.project)));
    let (overrides, error) = match st.db.all_overrides() {
        Ok(o) => (o, String::new()),
        Err(e) => (vec![], format!("overrides could not be read: {e}")),
    };
    let extra = minijinja::context! { queue => ser(&queue), overrides, error };
    page(
        StatusCode::OK,
        "quarantine.html",
        ctx(
            "Quarantine",
            "/console/quarantine",
            &user,
            &csrf,
            f.flash.as_deref(),
            extra,
        ),
    )
}

#[derive(Deserialize)]
struct OverrideForm {
    csrf: String,
    project: String,
    #[serde(default)]
    version: String,
    action: String,
}

async fn quarantine_act(
    State(st): St,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(body): Form<OverrideForm>,
) -> Response {
    let (_, user) = match check_post(&st, &headers, &body.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !matches!(body.action.as_str(), "allow" | "block") {
        return back("/console/quarantine", "the action must be release or block");
    }
    let name = body.project.trim();
    if !pickguard_index::is_valid_name(name) {
        return back(
            "/console/quarantine",
            &format!("{name:?} is not a valid project name"),
        );
    }
    let p = pickguard_index::normalize(name);
    let v = match body.version.trim() {
        "" => "*".to_owned(),
        v => v.to_owned(),
    };
    let verb = if body.action == "allow" {
        "released"
    } else {
        "blocked"
    };
    let msg = match st.db.set_override(&p, &v, &body.action) {
        Ok(()) => {
            st.invalidate(&p);
            format!("{p} {v} {verb}")
        }
        Err(e) => format!("{p} {v}: could not be {verb}: {e}"),
    };
    audit(
        &st,
        client,
        "/console/quarantine/act",
        Some(&p),
        if body.action == "allow" {
            "console-release"
        } else {
            "console-block"
        },
        false,
        Some(format!("{msg} (by {user})")),
        303,
    );
    back("/console/quarantine", &msg)
}

async fn files(State(st): St, headers: HeaderMap, Query(f): Query<Flash>) -> Response {
    let (_, user, csrf) = signed_in!(st, headers);
    let (files, flash_err) = match st.hosted_files().await {
        Ok(f) => (f, None),
        Err(e) => (
            Vec::new(),
            Some(format!("the hosted files cannot be listed: {e}")),
        ),
    };
    let mut tokens: Vec<minijinja::Value> = st
        .cfg
        .tokens
        .iter()
        .map(|t| {
            minijinja::context! {
                name => t.name.clone(),
                role => format!("{:?}", t.role).to_lowercase(),
                publish => t.publish.join(", "),
            }
        })
        .collect();
    if st.cfg.admin_token.is_some() || std::env::var_os("PICKGUARD_ADMIN_TOKEN").is_some() {
        tokens.push(
            minijinja::context! { name => "admin_token (legacy)", role => "admin", publish => "*" },
        );
    }
    if st.cfg.upload_token.is_some() || std::env::var_os("PICKGUARD_UPLOAD_TOKEN").is_some() {
        tokens.push(minijinja::context! { name => "upload_token (legacy)", role => "publish", publish => "*" });
    }
    let extra = minijinja::context! { files => ser(&files), tokens };
    page(
        StatusCode::OK,
        "files.html",
        ctx(
            "Files & tokens",
            "/console/files",
            &user,
            &csrf,
            flash_err.as_deref().or(f.flash.as_deref()),
            extra,
        ),
    )
}

#[derive(Deserialize)]
struct FeedQuery {
    project: Option<String>,
    flash: Option<String>,
}

async fn feed(State(st): St, headers: HeaderMap, Query(q): Query<FeedQuery>) -> Response {
    let (_, user, csrf) = signed_in!(st, headers);
    let mut error = String::new();
    let (advisories, projects, withdrawn, last) = st.db.feed_counts().unwrap_or_else(|e| {
        error = format!("the advisory database could not be read: {e}");
        (0, 0, 0, None)
    });
    let project = q
        .project
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(pickguard_index::normalize)
        .unwrap_or_default();
    let rows: Vec<minijinja::Value> = if project.is_empty() {
        vec![]
    } else {
        match st.db.advisories(&project) {
            Ok(a) => a
                .iter()
                .map(|a| {
                    let state = if a.withdrawn.is_some() {
                        "withdrawn"
                    } else if st.cfg.feed.ignore.contains(&a.id) {
                        "ignored"
                    } else {
                        "enforced"
                    };
                    minijinja::context! {
                        id => a.id.clone(), versions => a.spec.describe(), summary => a.summary.clone(),
                        state, source => a.source.clone(),
                    }
                })
                .collect(),
            Err(e) => {
                error = format!("the advisory database could not be read: {e}");
                vec![]
            }
        }
    };
    let last_import = st.feed_status.lock().ok().and_then(|s| s.clone());
    let extra = minijinja::context! {
        advisories, projects, withdrawn, last, error, project, rows,
        sources => st.cfg.feed.sources.clone(), refresh => st.cfg.feed.refresh_minutes,
        ignored => st.cfg.feed.ignore.clone(), last_import => ser(&last_import),
    };
    page(
        StatusCode::OK,
        "feed.html",
        ctx(
            "Feed",
            "/console/feed",
            &user,
            &csrf,
            q.flash.as_deref(),
            extra,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_escapes() {
        for n in [
            "base.html",
            "login.html",
            "decisions.html",
            "claims.html",
            "quarantine.html",
            "files.html",
            "feed.html",
        ] {
            templates()
                .get_template(n)
                .unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        let html = templates()
            .get_template("login.html")
            .unwrap()
            .render(minijinja::context! { title => "t", user => "", flash => "<script>x</script>", error => "" })
            .unwrap();
        assert!(html.contains("&lt;script&gt;x&lt;"), "{html}");
        assert!(!html.contains("<script>x"));
    }

    #[test]
    fn origin_checks() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:3141"),
            ("origin", "http://127.0.0.1:3141")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:3141"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:3141"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:3141"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(same_origin(&h(&[("host", "127.0.0.1:3141")])));
    }
}
