//! Uploads to the hosted index, in process on loopback: who may publish
//! what, name takeover, atomicity under concurrency, size limits, file name
//! and metadata checks, deletion, and failures that must leave no trace.

use crate::common;
use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::routing::get;
use pickguard_firewall::{AppState, Config, hash_secret, router};
use std::io::Write;

use common::spawn;
use std::net::SocketAddr;
use std::sync::Arc;

/// A public index that has exactly `filelock` and nothing else.
async fn public() -> SocketAddr {
    spawn(Router::new().route(
        "/simple/{name}/",
        get(|Path(name): Path<String>| async move {
            if name == "filelock" {
                (
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html><meta name=\"pypi:repository-version\" content=\"1.0\"><a href=\"/f/filelock-3.0.0-py3-none-any.whl#sha256=0000000000000000000000000000000000000000000000000000000000000000\">filelock-3.0.0-py3-none-any.whl</a></html>".to_string(),
                )
                    .into_response()
            } else {
                axum::http::StatusCode::NOT_FOUND.into_response()
            }
        }),
    ))
    .await
}

use axum::response::IntoResponse;

/// A wheel whose METADATA says `meta_name` `meta_version`, padded to `pad` bytes.
fn wheel(meta_name: &str, meta_version: &str, pad: usize) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let dist = meta_name.replace(['-', '.'], "_");
    z.start_file(format!("{dist}/__init__.py"), o).unwrap();
    z.write_all(&vec![b'#'; pad]).unwrap();
    z.start_file(format!("{dist}-{meta_version}.dist-info/METADATA"), o)
        .unwrap();
    write!(
        z,
        "Metadata-Version: 2.1\nName: {meta_name}\nVersion: {meta_version}\n"
    )
    .unwrap();
    z.finish().unwrap().into_inner()
}

/// An sdist (.tar.gz) with a top-level PKG-INFO.
fn sdist(dir: &str, meta_name: &str, meta_version: &str) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    let body = format!("Metadata-Version: 2.1\nName: {meta_name}\nVersion: {meta_version}\n");
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    t.append_data(&mut h, format!("{dir}/PKG-INFO"), body.as_bytes())
        .unwrap();
    t.into_inner().unwrap().finish().unwrap()
}

struct World {
    fw: SocketAddr,
    st: Arc<AppState>,
    dir: tempfile::TempDir,
}

const ADMIN: &str = "admin-secret-0123456789";
const TEAM: &str = "team-secret-0123456789";
const READER: &str = "reader-secret-0123456789";

async fn world(extra: &str) -> World {
    let pu = public().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml(&format!(
        "data_dir = {:?}\npage_ttl_secs = 0\nerror_ttl_secs = 0\nmax_upload_bytes = 16777216\n{extra}\n\
         [[upstream]]\nname = \"pypi\"\nurl = \"http://{pu}/simple/\"\n\
         [[token]]\nname = \"sec-admin\"\nsha256 = \"{}\"\nrole = \"admin\"\n\
         [[token]]\nname = \"ml-team\"\nsha256 = \"sha256:{}\"\nrole = \"publish\"\npublish = [\"acme-*\"]\n\
         [[token]]\nname = \"reader\"\nsha256 = \"{}\"\nrole = \"read\"\n",
        dir.path().display(),
        hash_secret(ADMIN),
        hash_secret(TEAM),
        hash_secret(READER),
    ))
    .unwrap();
    let st = Arc::new(AppState::new(cfg).unwrap());
    let fw = spawn(router(st.clone())).await;
    World { fw, st, dir }
}

async fn upload(
    fw: SocketAddr,
    token: &str,
    name: &str,
    version: &str,
    filename: &str,
    content: Vec<u8>,
) -> (u16, String) {
    let form = reqwest::multipart::Form::new()
        .text(":action", "file_upload")
        .text("name", name.to_owned())
        .text("version", version.to_owned())
        .part(
            "content",
            reqwest::multipart::Part::bytes(content).file_name(filename.to_owned()),
        );
    let r = reqwest::Client::new()
        .post(format!("http://{fw}/legacy/"))
        .basic_auth("__token__", Some(token))
        .multipart(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn page(fw: SocketAddr, name: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("http://{fw}/simple/{name}/"))
        .header(header::ACCEPT, "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn admin(fw: SocketAddr, method: reqwest::Method, path: &str, body: Option<&str>) -> u16 {
    let mut r = reqwest::Client::new()
        .request(method, format!("http://{fw}{path}"))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        r = r
            .header(header::CONTENT_TYPE, "application/json")
            .body(b.to_owned());
    }
    r.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_publish_what() {
    let w = world("").await;
    let whl = |n: &str, v: &str| wheel(n, v, 10);
    // A read token and a wrong secret cannot publish.
    let f = "acme_core-1.0-py3-none-any.whl";
    assert_eq!(
        upload(w.fw, READER, "acme-core", "1.0", f, whl("acme-core", "1.0"))
            .await
            .0,
        403
    );
    assert_eq!(
        upload(w.fw, "nope", "acme-core", "1.0", f, whl("acme-core", "1.0"))
            .await
            .0,
        401
    );
    // The team publishes its own namespace...
    let (s, b) = upload(w.fw, TEAM, "acme-core", "1.0", f, whl("acme-core", "1.0")).await;
    assert_eq!(s, 200, "{b}");
    assert!(page(w.fw, "acme-core").await.1.contains(f));
    // ... and nothing else, even a name nobody has.
    let (s, b) = upload(
        w.fw,
        TEAM,
        "other-thing",
        "1.0",
        "other_thing-1.0-py3-none-any.whl",
        whl("other-thing", "1.0"),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    // Name takeover: a name that exists publicly is refused, even for an admin...
    let fl = "filelock-99.0-py3-none-any.whl";
    let (s, b) = upload(w.fw, ADMIN, "filelock", "99.0", fl, whl("filelock", "99.0")).await;
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("exists on public upstream pypi"), "{b}");
    assert!(page(w.fw, "filelock").await.1.contains("filelock-3.0.0"));
    assert!(w.st.db.claimed("filelock").unwrap().is_none());
    // ... until an admin claims it on purpose.
    assert_eq!(
        admin(
            w.fw,
            reqwest::Method::POST,
            "/admin/claims",
            Some(r#"{"names": ["filelock"]}"#)
        )
        .await,
        200
    );
    let (s, b) = upload(w.fw, ADMIN, "filelock", "99.0", fl, whl("filelock", "99.0")).await;
    assert_eq!(s, 200, "{b}");
    // The audit log names who uploaded.
    let audit = std::fs::read_to_string(w.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"upload\"") && l.contains("by ml-team")),
        "{audit}"
    );
    // A read token is not an admin token.
    let r = reqwest::Client::new()
        .get(format!("http://{}/admin/claims", w.fw))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_names_and_metadata_must_agree() {
    let w = world("").await;
    let cases: Vec<(&str, &str, &str, Vec<u8>)> = vec![
        ("acme-x", "1.0", "acme_x-1.0.whl", wheel("acme-x", "1.0", 1)),
        (
            "acme-x",
            "1.0",
            "acme_x-1.0-py3-none-any.whl",
            wheel("acme-y", "1.0", 1),
        ),
        (
            "acme-x",
            "1.0",
            "acme_x-1.0-py3-none-any.whl",
            wheel("acme-x", "2.0", 1),
        ),
        (
            "acme-x",
            "2.0",
            "acme_x-1.0-py3-none-any.whl",
            wheel("acme-x", "1.0", 1),
        ),
        (
            "acme-x",
            "1.0",
            "acme_x-1.0-py3-none-any.whl",
            b"not a zip".to_vec(),
        ),
        (
            "acme-x",
            "1.0",
            "acme-x-1.0.tar.gz",
            sdist("acme-x-1.0", "acme-z", "1.0"),
        ),
        ("acme-x", "1.0", "acme-x-1.0.exe", wheel("acme-x", "1.0", 1)),
        (
            "acme-x",
            "1.0",
            ".hidden-1.0.tar.gz",
            sdist("x", "acme-x", "1.0"),
        ),
    ];
    for (n, v, f, c) in cases {
        let (s, b) = upload(w.fw, TEAM, n, v, f, c).await;
        assert_eq!(s, 400, "{f} ({n} {v}) accepted: {b}");
    }
    assert_eq!(page(w.fw, "acme-x").await.0, 404, "nothing was stored");
    // A legacy sdist name (dots and capitals) with matching PKG-INFO is accepted.
    let (s, b) = upload(
        w.fw,
        TEAM,
        "Acme.X",
        "1.0.0",
        "Acme.X-1.0.0.tar.gz",
        sdist("Acme.X-1.0.0", "Acme.X", "1.0.0"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // A 10 MB wheel goes through (no 2 MiB framework limit); over the limit is 413.
    let (s, b) = upload(
        w.fw,
        TEAM,
        "acme-big",
        "1.0",
        "acme_big-1.0-py3-none-any.whl",
        wheel("acme-big", "1.0", 10 << 20),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = upload(
        w.fw,
        TEAM,
        "acme-huge",
        "1.0",
        "acme_huge-1.0-py3-none-any.whl",
        wheel("acme-huge", "1.0", 17 << 20),
    )
    .await;
    assert_eq!(s, 413);
    assert!(
        std::fs::read_dir(w.dir.path().join("hosted/.incoming"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "temporary files left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_one_file_have_exactly_one_winner() {
    let w = world("").await;
    let f = "acme_race-1.0-py3-none-any.whl";
    let mut tasks = Vec::new();
    for i in 0..16 {
        // Different bytes each time: a silent replacement would show.
        let content = wheel("acme-race", "1.0", 100 + i);
        let fw = w.fw;
        tasks.push(tokio::spawn(async move {
            let sha = hex_sha(&content);
            (upload(fw, TEAM, "acme-race", "1.0", f, content).await, sha)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let ((s, b), sha) = t.await.unwrap();
        match s {
            200 => winners.push(sha),
            409 => {}
            _ => panic!("unexpected {s}: {b}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one upload is acknowledged");
    let (_, body) = page(w.fw, "acme-race").await;
    assert!(
        body.contains(&winners[0]),
        "the page lists the winner's sha256"
    );
    // The bytes served are the winner's bytes.
    let stored = std::fs::read(w.dir.path().join("hosted/acme-race").join(f)).unwrap();
    assert_eq!(hex_sha(&stored), winners[0]);
}

fn hex_sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_and_failures_leave_no_trace() {
    let w = world("").await;
    let f = "acme_del-1.0-py3-none-any.whl";
    assert_eq!(
        upload(
            w.fw,
            TEAM,
            "acme-del",
            "1.0",
            f,
            wheel("acme-del", "1.0", 5)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        upload(
            w.fw,
            TEAM,
            "acme-del",
            "1.0",
            f,
            wheel("acme-del", "1.0", 6)
        )
        .await
        .0,
        409
    );
    // A hosted file claims its name: unclaiming alone is refused, not a false "removed".
    assert_eq!(
        admin(
            w.fw,
            reqwest::Method::DELETE,
            "/admin/claims/acme-del",
            None
        )
        .await,
        409
    );
    assert_eq!(
        admin(
            w.fw,
            reqwest::Method::DELETE,
            &format!("/admin/files/acme-del/{f}"),
            None
        )
        .await,
        200
    );
    assert_eq!(
        page(w.fw, "acme-del").await.0,
        403,
        "still claimed, no file"
    );
    assert_eq!(
        admin(
            w.fw,
            reqwest::Method::DELETE,
            "/admin/claims/acme-del",
            None
        )
        .await,
        200
    );
    assert_eq!(page(w.fw, "acme-del").await.0, 404);
    let audit = std::fs::read_to_string(w.dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"admin-delete-file\""), "{audit}");

    // The sidecar cannot be written (an injected write error: a directory
    // stands where its temporary file goes): nothing is stored, the new claim
    // is forgotten, and the same upload succeeds once the fault is gone.
    let g = "acme_full-1.0-py3-none-any.whl";
    let proj = w.dir.path().join("hosted/acme-full");
    let obstacle = proj.join(format!(".{g}.pickguard.json.part"));
    std::fs::create_dir_all(&obstacle).unwrap();
    let try_full = || {
        upload(
            w.fw,
            TEAM,
            "acme-full",
            "1.0",
            g,
            wheel("acme-full", "1.0", 5),
        )
    };
    let (s, b) = try_full().await;
    assert_eq!(s, 507, "{b}");
    assert!(!proj.join(g).exists(), "an unrecorded file is left behind");
    assert!(
        w.st.db.claimed("acme-full").unwrap().is_none(),
        "claim kept"
    );
    assert_eq!(page(w.fw, "acme-full").await.0, 404);
    std::fs::remove_dir(&obstacle).unwrap();
    let (s, b) = try_full().await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_leftovers_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let proj = dir.path().join("hosted/acme-crash");
    std::fs::create_dir_all(&proj).unwrap();
    // A file linked but never recorded, a temporary sidecar, an incoming upload,
    // and a partial cache download, all untouched for two hours.
    let aged = |p: &std::path::Path| {
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    };
    std::fs::write(proj.join("acme_crash-1.0-py3-none-any.whl"), b"x").unwrap();
    std::fs::write(
        proj.join(".acme_crash-1.0-py3-none-any.whl.pickguard.json.part"),
        b"{",
    )
    .unwrap();
    let incoming = dir.path().join("hosted/.incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    std::fs::write(incoming.join("1-2.part"), b"x").unwrap();
    aged(&incoming.join("1-2.part"));
    let cache = dir.path().join("files/pypi/abc");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join(".x.whl.1.part"), b"x").unwrap();
    aged(&cache.join(".x.whl.1.part"));
    // What another replica sharing the directory is writing right now: an
    // upload arriving and a download filling. They must survive this start.
    std::fs::write(incoming.join("3-4.part"), b"x").unwrap();
    std::fs::write(cache.join(".y.whl.2.part"), b"x").unwrap();
    let cfg = Config::from_toml(&format!("data_dir = {:?}\n", dir.path().display())).unwrap();
    let _st = AppState::new(cfg).unwrap();
    assert_eq!(std::fs::read_dir(&proj).unwrap().count(), 0);
    assert!(!incoming.join("1-2.part").exists());
    assert!(!cache.join(".x.whl.1.part").exists());
    assert!(
        incoming.join("3-4.part").exists(),
        "a live upload was removed"
    );
    assert!(
        cache.join(".y.whl.2.part").exists(),
        "a live download was removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_can_require_a_token() {
    let w = world("require_read_token = true").await;
    assert_eq!(page(w.fw, "anything").await.0, 401);
    let r = reqwest::Client::new()
        .get(format!("http://{}/simple/filelock/", w.fw))
        .basic_auth("me", Some(READER))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
