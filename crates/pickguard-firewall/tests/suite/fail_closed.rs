//! The firewall against a fault-injecting private upstream, in process on
//! loopback: every answer that is not a positive "not here" must fail closed
//! for a name the firewall has never seen (the torchtriton attack), and the
//! public upstream must not even be asked.

use crate::common;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pickguard_firewall::{AppState, Config, router};

use common::spawn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the fault upstream answers.
#[derive(Clone, Debug)]
enum Fault {
    Status(u16),
    /// 200 with this content type and body.
    Body(&'static str, Vec<u8>),
    /// 200, a valid header, then the body never ends.
    Stall,
    /// No answer at all for longer than the firewall waits.
    Hang,
    /// 302 to this URL.
    Redirect(String),
    /// 200 with a body of this size and no Content-Length (chunked).
    Chunked(usize),
    /// This status with this Retry-After header.
    Busy(u16, &'static str),
}

#[derive(Clone)]
struct Upstream {
    fault: Arc<Mutex<Fault>>,
    hits: Arc<AtomicUsize>,
}

async fn faulty(State(u): State<Upstream>, Path(_name): Path<String>) -> Response {
    u.hits.fetch_add(1, Ordering::SeqCst);
    let fault = u.fault.lock().unwrap().clone();
    match fault {
        Fault::Status(s) => (StatusCode::from_u16(s).unwrap(), "nope").into_response(),
        Fault::Body(ct, b) => ([(header::CONTENT_TYPE, ct)], b).into_response(),
        Fault::Stall => {
            let s = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"<html><head>"))
            })
            .chain(futures_util::stream::pending());
            ([(header::CONTENT_TYPE, "text/html")], Body::from_stream(s)).into_response()
        }
        Fault::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::NOT_FOUND.into_response()
        }
        Fault::Redirect(to) => (StatusCode::FOUND, [(header::LOCATION, to)], "").into_response(),
        Fault::Busy(s, after) => (
            StatusCode::from_u16(s).unwrap(),
            [(header::RETRY_AFTER, after)],
            "slow down",
        )
            .into_response(),
        Fault::Chunked(n) => {
            let chunk = bytes::Bytes::from(vec![b' '; 4096]);
            let s = futures_util::stream::iter(
                (0..n / 4096).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            ([(header::CONTENT_TYPE, "text/html")], Body::from_stream(s)).into_response()
        }
    }
}

use futures_util::StreamExt;

async fn fault_upstream(initial: Fault) -> (Upstream, SocketAddr) {
    let u = Upstream {
        fault: Arc::new(Mutex::new(initial)),
        hits: Arc::new(AtomicUsize::new(0)),
    };
    let app = Router::new()
        .route("/simple/{name}/", get(faulty))
        .with_state(u.clone());
    (u.clone(), spawn(app).await)
}

const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A public index that has torchtriton 3.0.0 (the attack) and counts its hits.
async fn public_upstream(canary: Option<SocketAddr>) -> (Arc<AtomicUsize>, SocketAddr) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new().route(
        "/simple/{name}/",
        get(move |Path(name): Path<String>| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let mut links = format!(
                    "<a href=\"/files/{name}-3.0.0-py3-none-any.whl#sha256={SHA}\">{name}-3.0.0-py3-none-any.whl</a>"
                );
                if let Some(c) = canary {
                    links.push_str(&format!(
                        "<a href=\"http://{c}/steal/{name}-3.0.1-py3-none-any.whl#sha256={SHA}\">{name}-3.0.1-py3-none-any.whl</a>"
                    ));
                }
                (
                    [(header::CONTENT_TYPE, "text/html")],
                    format!(
                        "<!DOCTYPE html><html><head><meta name=\"pypi:repository-version\" content=\"1.0\"></head><body>{links}</body></html>"
                    ),
                )
            }
        }),
    );
    (hits, spawn(app).await)
}

struct World {
    private: Upstream,
    public_hits: Arc<AtomicUsize>,
    fw: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn world(initial: Fault, extra_private: &str) -> World {
    let (private, pa) = fault_upstream(initial).await;
    let (public_hits, pu) = public_upstream(None).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml(&format!(
        "data_dir = {:?}\npage_ttl_secs = 0\nerror_ttl_secs = 0\n\
         [[upstream]]\nname = \"internal\"\nurl = \"http://{pa}/simple/\"\nprivate = true\ntimeout_secs = 1\nmax_page_bytes = 65536\n{extra_private}\n\
         [[upstream]]\nname = \"pypi\"\nurl = \"http://{pu}/simple/\"\n",
        dir.path().display()
    ))
    .unwrap();
    let st = Arc::new(AppState::new(cfg).unwrap());
    let fw = spawn(router(st)).await;
    World {
        private,
        public_hits,
        fw,
        _dir: dir,
    }
}

async fn get_page(fw: SocketAddr, name: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("http://{fw}/simple/{name}/"))
        .header(header::ACCEPT, "text/html")
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn faults(elsewhere: SocketAddr) -> Vec<(&'static str, Fault)> {
    let big = format!(
        "<html><body>{}</body></html>",
        "<a href=\"torchtriton-1.0.tar.gz\">x</a>".repeat(4000)
    );
    vec![
        ("empty body", Fault::Body("text/html", vec![])),
        (
            "maintenance page",
            Fault::Body(
                "text/html",
                b"<html><body><h1>Down for maintenance</h1></body></html>".to_vec(),
            ),
        ),
        (
            "json without meta",
            Fault::Body("application/vnd.pypi.simple.v1+json", br#"{"files": []}"#.to_vec()),
        ),
        (
            "explicit empty json page (not authoritative)",
            Fault::Body(
                "application/vnd.pypi.simple.v1+json",
                br#"{"meta":{"api-version":"1.1"},"name":"torchtriton","files":[]}"#.to_vec(),
            ),
        ),
        (
            "explicit empty html page (not authoritative)",
            Fault::Body(
                "text/html",
                b"<html><head><meta name=\"pypi:repository-version\" content=\"1.0\"></head></html>"
                    .to_vec(),
            ),
        ),
        (
            "json page for another project",
            Fault::Body(
                "application/vnd.pypi.simple.v1+json",
                br#"{"meta":{"api-version":"1.1"},"name":"other","files":[]}"#.to_vec(),
            ),
        ),
        (
            "links to other projects only",
            Fault::Body(
                "text/html",
                b"<html><a href=\"/login\">log in</a><a href=\"other-1.0.tar.gz\">other</a></html>"
                    .to_vec(),
            ),
        ),
        (
            "wrong content type",
            Fault::Body(
                "text/plain",
                b"<a href=\"torchtriton-1.0.tar.gz#sha256=00\">torchtriton-1.0.tar.gz</a>".to_vec(),
            ),
        ),
        ("oversized page", Fault::Body("text/html", big.into_bytes())),
        ("oversized chunked page", Fault::Chunked(1 << 20)),
        ("HTTP 500", Fault::Status(500)),
        ("HTTP 503", Fault::Status(503)),
        ("HTTP 401", Fault::Status(401)),
        ("HTTP 403", Fault::Status(403)),
        ("HTTP 204", Fault::Status(204)),
        ("HTTP 304", Fault::Status(304)),
        ("HTTP 429", Fault::Status(429)),
        ("no answer", Fault::Hang),
        ("body never ends", Fault::Stall),
        (
            "redirect to another host",
            Fault::Redirect(format!("http://{elsewhere}/simple/torchtriton/")),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_unusable_private_answer_fails_closed_for_an_unknown_name() {
    // A second public index that the redirect points at: it must not be reached.
    let (elsewhere_hits, elsewhere) = public_upstream(None).await;
    let w = world(Fault::Status(404), "").await;
    let mut failures = Vec::new();
    for (label, fault) in faults(elsewhere) {
        *w.private.fault.lock().unwrap() = fault;
        let before = w.private.hits.load(Ordering::SeqCst);
        let (status, body) = get_page(w.fw, "torchtriton").await;
        if w.private.hits.load(Ordering::SeqCst) == before {
            failures.push(format!("{label}: the private upstream was not asked"));
        }
        if status != 502 || !body.contains("not resolved from public indexes") {
            failures.push(format!("{label}: HTTP {status}: {body}"));
        }
        if body.contains("3.0.0") {
            failures.push(format!("{label}: the public file was listed"));
        }
    }
    assert_eq!(
        w.public_hits.load(Ordering::SeqCst),
        0,
        "public upstream asked"
    );
    assert_eq!(
        elsewhere_hits.load(Ordering::SeqCst),
        0,
        "redirect followed"
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positive_absence_lets_an_unknown_name_go_public() {
    // 404 and 410 mean "not here": the public project is served (quarantine aside).
    let w = world(Fault::Status(404), "").await;
    for s in [404, 410] {
        *w.private.fault.lock().unwrap() = Fault::Status(s);
        let (status, body) = get_page(w.fw, "torchtriton").await;
        assert_eq!(status, 200, "{s}: {body}");
        assert!(body.contains("torchtriton-3.0.0"), "{body}");
    }
    // An explicit empty page counts as absence only where configured.
    let w = world(
        Fault::Body(
            "application/vnd.pypi.simple.v1+json",
            br#"{"meta":{"api-version":"1.1"},"name":"torchtriton","files":[]}"#.to_vec(),
        ),
        "empty_page_is_absent = true",
    )
    .await;
    let (status, body) = get_page(w.fw, "torchtriton").await;
    assert_eq!(status, 200, "{body}");
    // ... and even then a maintenance page is still a failure.
    *w.private.fault.lock().unwrap() =
        Fault::Body("text/html", b"<html><h1>maintenance</h1></html>".to_vec());
    let (status, body) = get_page(w.fw, "torchtriton").await;
    assert_eq!(status, 502, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_upstream_down_fails_closed() {
    // A port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (public_hits, pu) = public_upstream(None).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml(&format!(
        "data_dir = {:?}\n[[upstream]]\nname = \"internal\"\nurl = \"http://{dead}/simple/\"\nprivate = true\n\
         [[upstream]]\nname = \"pypi\"\nurl = \"http://{pu}/simple/\"\n",
        dir.path().display()
    ))
    .unwrap();
    let fw = spawn(router(Arc::new(AppState::new(cfg).unwrap()))).await;
    let (status, body) = get_page(fw, "torchtriton").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("internal"),
        "the reason names the upstream: {body}"
    );
    assert_eq!(public_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_remembered_briefly() {
    let (private, pa) = fault_upstream(Fault::Status(500)).await;
    let (_ph, pu) = public_upstream(None).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml(&format!(
        "data_dir = {:?}\npage_ttl_secs = 0\nerror_ttl_secs = 60\n[[upstream]]\nname = \"internal\"\nurl = \"http://{pa}/simple/\"\nprivate = true\n\
         [[upstream]]\nname = \"pypi\"\nurl = \"http://{pu}/simple/\"\n",
        dir.path().display()
    ))
    .unwrap();
    let fw = spawn(router(Arc::new(AppState::new(cfg).unwrap()))).await;
    for _ in 0..3 {
        assert_eq!(get_page(fw, "torchtriton").await.0, 502);
    }
    assert_eq!(
        private.hits.load(Ordering::SeqCst),
        1,
        "retries answered from the error cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_content_cannot_aim_requests_elsewhere() {
    // The canary: any request reaching it is a server-side request forgery.
    let canary_hits = Arc::new(AtomicUsize::new(0));
    let ch = canary_hits.clone();
    let canary = spawn(Router::new().fallback(move || {
        let ch = ch.clone();
        async move {
            ch.fetch_add(1, Ordering::SeqCst);
            "secret"
        }
    }))
    .await;
    let (_, pu) = public_upstream(Some(canary)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml(&format!(
        "data_dir = {:?}\nquarantine.outlier_major_jump = 0\n[[upstream]]\nname = \"pypi\"\nurl = \"http://{pu}/simple/\"\n",
        dir.path().display()
    ))
    .unwrap();
    let fw = spawn(router(Arc::new(AppState::new(cfg).unwrap()))).await;
    let r = reqwest::Client::new()
        .get(format!("http://{fw}/simple/somepkg/"))
        .header(header::ACCEPT, "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .unwrap();
    let hidden = r
        .headers()
        .get("x-pickguard-hidden")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = r.text().await.unwrap();
    assert!(body.contains("somepkg-3.0.0"), "{body}");
    assert!(
        !body.contains("3.0.1"),
        "the foreign-host file is listed: {body}"
    );
    assert_eq!(hidden.as_deref(), Some("1"));
    // Asking for the hidden file directly does not reach the canary either.
    let r = reqwest::Client::new()
        .get(format!(
            "http://{fw}/files/pypi/somepkg/{SHA}/somepkg-3.0.1-py3-none-any.whl"
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_eq!(canary_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_index_does_not_list_private_names_anonymously() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml(&format!(
        "data_dir = {:?}\nadmin_token = \"t0ken\"\n[[upstream]]\nname = \"pypi\"\nurl = \"http://127.0.0.1:9/simple/\"\n",
        dir.path().display()
    ))
    .unwrap();
    let st = Arc::new(AppState::new(cfg).unwrap());
    st.db.claim("acme-secret-project", "admin").unwrap();
    let fw = spawn(router(st)).await;
    let root = |token: Option<&'static str>| async move {
        let mut r = reqwest::Client::new().get(format!("http://{fw}/simple/"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap().text().await.unwrap()
    };
    let anon = root(None).await;
    assert!(!anon.contains("acme-secret-project"), "{anon}");
    let admin = root(Some("t0ken")).await;
    assert!(admin.contains("acme-secret-project"), "{admin}");
}

/// Regressions from an adversarial review of the fail-closed rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_means_empty_even_where_empty_pages_are_trusted() {
    let w = world(Fault::Status(404), "empty_page_is_absent = true").await;
    let pages: Vec<&[u8]> = vec![
        // Links an installer's HTML parser reads, in spellings a strict one misses.
        b"<HTML><HEAD><TITLE>Links for torchtriton</TITLE></HEAD><BODY><A HREF=\"/f/torchtriton-1.0.0-py3-none-any.whl#sha256=bb\">torchtriton-1.0.0-py3-none-any.whl</A></BODY></HTML>",
        b"<html><head><title>Links for torchtriton</title></head><body>a < b<a href=\"/f/torchtriton-1.0.0-py3-none-any.whl\">x</a></body></html>",
        b"<html><head><title>Links for torchtriton</title></head><body><a/href=\"/f/torchtriton-1.0.0-py3-none-any.whl\">x</a></body></html>",
        // A page cut off before its body.
        b"<html><head><title>Links for torchtriton</title></head>",
    ];
    for page in pages {
        *w.private.fault.lock().unwrap() = Fault::Body("text/html", page.to_vec());
        let (status, body) = get_page(w.fw, "torchtriton").await;
        assert_ne!(status, 200, "{}: {body}", String::from_utf8_lossy(page));
        assert!(!body.contains("3.0.0"));
    }
    assert_eq!(w.public_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_keep_the_rule_and_files_keep_the_claims() {
    let (private, pa) = fault_upstream(Fault::Body(
        "text/html",
        b"<html><head><meta name=\"pypi:repository-version\" content=\"1.0\"><title>Links for torchtriton</title></head><body></body></html>".to_vec(),
    ))
    .await;
    let (public_hits, pu) = public_upstream(None).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml(&format!(
        "data_dir = {:?}\npage_ttl_secs = 0\nerror_ttl_secs = 0\n\
         [[upstream]]\nname = \"corp\"\nurl = \"http://{pa}/simple/\"\nprivate = true\n\
         [[upstream]]\nname = \"pypi\"\nurl = \"http://{pu}/simple/\"\n\
         [claims]\npatterns = [\"acme-*\"]\n\
         [routes.torchtriton]\nupstreams = [\"corp\", \"pypi\"]\n",
        dir.path().display()
    ))
    .unwrap();
    let fw = spawn(router(Arc::new(AppState::new(cfg).unwrap()))).await;
    let (status, body) = get_page(fw, "torchtriton").await;
    assert_eq!(
        status, 502,
        "a routed private empty page went public: {body}"
    );
    assert!(private.hits.load(Ordering::SeqCst) >= 1);
    // /files/ under another spelling of a claimed name is refused before any lookup.
    let r = reqwest::get(format!(
        "http://{fw}/files/pypi/Acme-Secret/{SHA}/acme_secret-3.0.0-py3-none-any.whl"
    ))
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        public_hits.load(Ordering::SeqCst),
        0,
        "the public index was asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_404_must_hold_for_html_too() {
    // 404 for the JSON request, a real page for the HTML one.
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let pa = spawn(Router::new().route(
        "/simple/{name}/",
        get(move |headers: axum::http::HeaderMap| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let accept = headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if accept.contains("json") {
                    StatusCode::NOT_FOUND.into_response()
                } else {
                    (
                        [(header::CONTENT_TYPE, "text/html")],
                        format!("<html><body><a href=\"/f/torchtriton-1.0.0-py3-none-any.whl#sha256={SHA}\">torchtriton-1.0.0-py3-none-any.whl</a></body></html>"),
                    )
                        .into_response()
                }
            }
        }),
    ))
    .await;
    let (public_hits, pu) = public_upstream(None).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml(&format!(
        "data_dir = {:?}\n[[upstream]]\nname = \"corp\"\nurl = \"http://{pa}/simple/\"\nprivate = true\n\
         [[upstream]]\nname = \"pypi\"\nurl = \"http://{pu}/simple/\"\n",
        dir.path().display()
    ))
    .unwrap();
    let fw = spawn(router(Arc::new(AppState::new(cfg).unwrap()))).await;
    let (status, body) = get_page(fw, "torchtriton").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        hits.load(Ordering::SeqCst) >= 2,
        "the HTML answer was not asked for"
    );
    assert_eq!(public_hits.load(Ordering::SeqCst), 0);
}

/// An upstream that answers 429/503 with Retry-After is not asked again
/// before then (even with error_ttl_secs = 0), at most five minutes; the
/// client is told when to come back; and the name still fails closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_kept_and_passed_on() {
    for (status, after, lo, hi) in [
        (503u16, "120", 100u64, 120u64),
        (429, "999999", 250, 300),
        (503, "Thu, 01 Jan 2099 00:00:00 GMT", 250, 300),
    ] {
        let w = world(Fault::Busy(status, after), "").await;
        let r = reqwest::Client::new()
            .get(format!("http://{}/simple/torchtriton/", w.fw))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().as_u16() >= 500,
            "{status} {after}: {}",
            r.status()
        );
        let told: u64 = r
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{status} {after}: no Retry-After: {:?}", r.headers()));
        assert!((lo..=hi).contains(&told), "{status} {after}: told {told}");
        assert!(get_page(w.fw, "torchtriton").await.0 >= 500);
        assert_eq!(
            w.private.hits.load(Ordering::SeqCst),
            1,
            "asked again before Retry-After"
        );
        assert_eq!(
            w.public_hits.load(Ordering::SeqCst),
            0,
            "asked the public index"
        );
    }
    // Without Retry-After and with error_ttl_secs = 0: asked every time, and no header.
    let w = world(Fault::Status(503), "").await;
    let r = reqwest::get(format!("http://{}/simple/torchtriton/", w.fw))
        .await
        .unwrap();
    assert!(r.headers().get(header::RETRY_AFTER).is_none());
    get_page(w.fw, "torchtriton").await;
    assert_eq!(w.private.hits.load(Ordering::SeqCst), 2);
}
