//! The file cache and operations, in process on loopback: one download for
//! concurrent misses, never a complete unverified body, nothing partial left
//! behind, changed bytes under an old file name refused, an audit log that
//! records decisions (not every cache hit), rotates and survives a restart.

use crate::common;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use common::spawn;
use pickguard_firewall::{AppState, Config, router};
use sha2::Digest;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone)]
struct Upstream {
    /// The bytes served for the file.
    served: Arc<Mutex<Vec<u8>>>,
    /// The sha256 the page lists.
    listed: Arc<Mutex<String>>,
    file_hits: Arc<AtomicUsize>,
}

const FILE: &str = "pkg-1.0-py3-none-any.whl";

async fn page(State(u): State<Upstream>) -> impl IntoResponse {
    let sha = u.listed.lock().unwrap().clone();
    (
        [(header::CONTENT_TYPE, "text/html")],
        format!(
            "<html><meta name=\"pypi:repository-version\" content=\"1.0\"><a href=\"/f/{FILE}#sha256={sha}\">{FILE}</a></html>"
        ),
    )
}

/// The file, in 64 KiB chunks with a pause between them (slow enough for
/// requests to overlap).
async fn file(State(u): State<Upstream>, Path(_f): Path<String>) -> impl IntoResponse {
    u.file_hits.fetch_add(1, Ordering::SeqCst);
    let bytes = u.served.lock().unwrap().clone();
    let len = bytes.len();
    let chunks: Vec<bytes::Bytes> = bytes
        .chunks(64 << 10)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let s = futures_util::stream::iter(chunks).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, std::io::Error>(c)
    });
    (
        [(header::CONTENT_LENGTH, len.to_string())],
        Body::from_stream(s),
    )
}

use futures_util::StreamExt;

fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

struct World {
    up: Upstream,
    fw: SocketAddr,
    dir: tempfile::TempDir,
    cfg: String,
}

async fn world(extra: &str) -> World {
    let content: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let up = Upstream {
        listed: Arc::new(Mutex::new(sha(&content))),
        served: Arc::new(Mutex::new(content)),
        file_hits: Arc::new(AtomicUsize::new(0)),
    };
    let addr = spawn(
        Router::new()
            .route("/simple/{name}/", get(page))
            .route("/f/{file}", get(file))
            .with_state(up.clone()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "data_dir = {:?}\npage_ttl_secs = 0\nadmin_token = \"adm\"\n{extra}\n[[upstream]]\nname = \"pypi\"\nurl = \"http://{addr}/simple/\"\n",
        dir.path().display()
    );
    let st = Arc::new(AppState::new(Config::from_toml(&cfg).unwrap()).unwrap());
    let fw = spawn(router(st)).await;
    World { up, fw, dir, cfg }
}

async fn listing(fw: SocketAddr) -> (String, Option<String>) {
    let r = reqwest::Client::new()
        .get(format!("http://{fw}/simple/pkg/"))
        .header(header::ACCEPT, "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .unwrap();
    let hidden = r
        .headers()
        .get("x-pickguard-hidden")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.text().await.unwrap(), hidden)
}

fn file_url(fw: SocketAddr, sha: &str) -> String {
    format!("http://{fw}/files/pypi/pkg/{sha}/{FILE}")
}

/// Every file below `dir` whose name ends in `.part`.
fn parts(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".part") {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_download() {
    let w = world("").await;
    listing(w.fw).await;
    let want = w.up.served.lock().unwrap().clone();
    let url = file_url(w.fw, &sha(&want));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let r = reqwest::get(&url).await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap().to_vec()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap() == want, "a client got other bytes");
    }
    assert_eq!(w.up.file_hits.load(Ordering::SeqCst), 1, "one download");
    // HEAD and Range come from the cache now.
    let r = reqwest::Client::new()
        .get(&url)
        .header(header::RANGE, "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(&r.bytes().await.unwrap()[..], &want[..10]);
    assert_eq!(w.up.file_hits.load(Ordering::SeqCst), 1);
    assert!(parts(w.dir.path()).is_empty());
    // The one download is in the per-upstream file histogram.
    let m = reqwest::get(format!("http://{}/metrics", w.fw))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("pickguard_upstream_file_duration_seconds_count{upstream=\"pypi\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatching_download_never_reaches_a_client_whole() {
    let w = world("").await;
    let listed = w.up.listed.lock().unwrap().clone();
    // The upstream now serves other bytes than the index lists.
    w.up.served.lock().unwrap()[12345] ^= 1;
    listing(w.fw).await;
    let url = file_url(w.fw, &listed);
    let (a, b) = tokio::join!(
        async { reqwest::get(&url).await.unwrap().bytes().await },
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            reqwest::get(&url).await.unwrap().status()
        }
    );
    // The streaming client's body is cut short (an error), never complete.
    if let Ok(body) = a {
        panic!(
            "a complete body of {} bytes was delivered unverified",
            body.len()
        );
    }
    assert_eq!(b.as_u16(), 502, "the waiting client gets the error");
    assert!(parts(w.dir.path()).is_empty(), "partial file left");
    assert!(
        !w.dir
            .path()
            .join(format!("files/pypi/{listed}/{FILE}"))
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_does_not_stop_the_download() {
    let w = world("").await;
    listing(w.fw).await;
    let want = w.up.served.lock().unwrap().clone();
    let url = file_url(w.fw, &sha(&want));
    let mut r = reqwest::get(&url).await.unwrap();
    let _first = r.chunk().await.unwrap();
    drop(r);
    // The fill goes on; the file lands in the cache, verified.
    let cached = w
        .dir
        .path()
        .join(format!("files/pypi/{}/{FILE}", sha(&want)));
    for _ in 0..200 {
        if cached.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(std::fs::read(&cached).unwrap(), want);
    assert!(parts(w.dir.path()).is_empty());
    let again = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert!(again.to_vec() == want);
    assert_eq!(w.up.file_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_bytes_under_an_old_file_name_are_refused() {
    let w = world("").await;
    let (body, hidden) = listing(w.fw).await;
    assert!(body.contains(FILE) && hidden.is_none());
    // The upstream replaces the file's bytes under the same name.
    let mut other = w.up.served.lock().unwrap().clone();
    other[0] ^= 0xff;
    *w.up.listed.lock().unwrap() = sha(&other);
    *w.up.served.lock().unwrap() = other;
    let (body, hidden) = listing(w.fw).await;
    assert!(!body.contains(FILE), "{body}");
    assert_eq!(hidden.as_deref(), Some("1"));
    // An administrator accepts the new bytes on purpose.
    let r = reqwest::Client::new()
        .post(format!("http://{}/admin/files/accept", w.fw))
        .bearer_auth("adm")
        .json(&serde_json::json!({"upstream": "pypi", "filename": FILE}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(listing(w.fw).await.0.contains(FILE));
    let m = reqwest::get(format!("http://{}/metrics", w.fw))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("pickguard_changed_files_total 1"), "{m}");
    assert!(
        m.contains("pickguard_request_duration_seconds_bucket{route=\"simple\",le=\"+Inf\"}"),
        "{m}"
    );
    assert!(
        m.contains("pickguard_upstream_duration_seconds_count{upstream=\"pypi\"}"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_keeps_decisions_rotates_and_survives_restart() {
    let w = world("audit_max_bytes = 4096\naudit_keep = 2").await;
    // Cached pages: the first is a decision; repeats are counted, not logged each.
    let cfg2 = w.cfg.replace("page_ttl_secs = 0", "page_ttl_secs = 600");
    let st = Arc::new(AppState::new(Config::from_toml(&cfg2).unwrap()).unwrap());
    let fw = spawn(router(st)).await;
    for _ in 0..50 {
        listing(fw).await;
    }
    let lines = |w: &World| {
        let mut all = String::new();
        for f in ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"] {
            all.push_str(&std::fs::read_to_string(w.dir.path().join(f)).unwrap_or_default());
        }
        all
    };
    let text = lines(&w);
    let n = text.lines().filter(|l| l.contains("/simple/pkg/")).count();
    assert!(n <= 2, "{n} lines for 50 cached answers:\n{text}");
    // Many decisions: the log rotates and stays bounded.
    for i in 0..200 {
        let _ = reqwest::get(format!("http://{fw}/simple/nope{i}/")).await;
    }
    assert!(w.dir.path().join("audit.jsonl.1").exists());
    assert!(!w.dir.path().join("audit.jsonl.3").exists());
    for f in ["audit.jsonl", "audit.jsonl.1"] {
        let len = std::fs::metadata(w.dir.path().join(f)).unwrap().len();
        assert!(len <= 4096 + 1024, "{f} is {len} bytes");
    }
    // A new process sees the recent decisions in the admin view.
    let st = Arc::new(AppState::new(Config::from_toml(&w.cfg).unwrap()).unwrap());
    let fw2 = spawn(router(st)).await;
    let d: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{fw2}/admin/decisions?limit=5"))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let recent = d["decisions"].as_array().unwrap();
    assert_eq!(recent.len(), 5, "{d}");
    assert_eq!(recent[0]["path"], "/simple/nope199/", "newest first: {d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_bounded() {
    // The 1 MiB file is over max_file_bytes: refused, nothing left on disk.
    let w = world("max_file_bytes = 100000").await;
    listing(w.fw).await;
    let want = w.up.served.lock().unwrap().clone();
    let r = reqwest::get(file_url(w.fw, &sha(&want))).await.unwrap();
    let ok = r.status().is_success() && r.bytes().await.is_ok();
    assert!(!ok, "an oversized download was delivered");
    assert!(parts(w.dir.path()).is_empty());
    assert!(
        !w.dir
            .path()
            .join(format!("files/pypi/{}/{FILE}", sha(&want)))
            .exists()
    );
}

/// Behind a trusted proxy the audit log names the client the proxy saw
/// (the right-most untrusted X-Forwarded-For hop); from anyone else, and
/// for what a client wrote itself to the left, the header changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_names_clients_behind_trusted_proxies_only() {
    async fn client_logged(extra: &str, xff: &str) -> String {
        let w = world(extra).await;
        let r = reqwest::Client::new()
            .get(format!("http://{}/simple/pkg/", w.fw))
            .header("X-Forwarded-For", xff)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let d: serde_json::Value = reqwest::Client::new()
            .get(format!("http://{}/admin/decisions?project=pkg", w.fw))
            .bearer_auth("adm")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        d["decisions"][0]["client"].as_str().unwrap().to_owned()
    }
    let trusted = "trusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]";
    assert_eq!(client_logged(trusted, "203.0.113.9").await, "203.0.113.9");
    // A client's own claim to the left of what the proxies appended is not believed.
    assert_eq!(
        client_logged(trusted, "198.51.100.1, 203.0.113.9, 10.1.2.3").await,
        "203.0.113.9"
    );
    // Hops as proxies write them: with a port, bracketed, IPv4-mapped.
    assert_eq!(
        client_logged(trusted, "203.0.113.9:4444").await,
        "203.0.113.9"
    );
    assert_eq!(
        client_logged(trusted, "[2001:db8::7]:443").await,
        "2001:db8::7"
    );
    assert_eq!(
        client_logged(trusted, "203.0.113.9, ::ffff:10.1.1.1").await,
        "203.0.113.9"
    );
    // Garbage where the proxy's hop should be: the proxy is what is known.
    assert_eq!(
        client_logged(trusted, "203.0.113.9, not-an-ip").await,
        "127.0.0.1"
    );
    // Not from a trusted proxy: ignored.
    assert_eq!(client_logged("", "203.0.113.9").await, "127.0.0.1");
    assert_eq!(
        client_logged("trusted_proxies = [\"10.0.0.0/8\"]", "203.0.113.9").await,
        "127.0.0.1"
    );
    assert!(
        Config::from_toml("trusted_proxies = [\"10.0.0.0/33\"]").is_err(),
        "a bad block is refused"
    );
}
