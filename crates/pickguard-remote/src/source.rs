//! Where a remote object is and how its bytes are asked for: HTTP(S) range
//! requests (reqwest) and S3-compatible object stores (`object_store`).
//!
//! Every answer is checked before its bytes are used: a range answer must
//! be a 206 for exactly the bytes asked, of an object of the size and
//! version first seen. An object that changes while it is read is an
//! error, never a mix of two versions.

use crate::Error;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::{GetOptions, GetRange, ObjectStore, path::Path as StorePath};
use reqwest::{StatusCode, Url, header};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// Bytes asked for in the first request to an HTTP server: the answer
/// tells the size, and most formats' headers fit.
pub(crate) const PROBE: u64 = 64 << 10;

/// A remote address given on the command line.
#[derive(Clone, Debug)]
pub enum Location {
    Http(Url),
    /// `hf://[datasets/|spaces/]ORG/REPO[@REVISION]/PATH`: a file of a
    /// Hugging Face repository, read from `$HF_ENDPOINT` (default
    /// https://huggingface.co) with `$HF_TOKEN` for private ones.
    Hub {
        url: Url,
        shown: String,
        token: Option<String>,
    },
    /// `hf://ORG/REPO[@REVISION]`: every file of the revision, listed by
    /// the hub's tree API.
    HubRepo {
        /// The tree listing (`/api/models/ORG/REPO/tree/REV?recursive=true`).
        api: Url,
        /// Where a file PATH is: this, then PATH.
        resolve: Url,
        shown: String,
        token: Option<String>,
    },
    /// `s3://bucket/key`; an empty key or one ending in `/` is a prefix.
    S3 {
        bucket: String,
        key: String,
    },
}

impl Location {
    /// `None` when `arg` is not a remote address (a local path). An address
    /// of a scheme pickguard does not read is an error, not a file name.
    pub fn parse(arg: &str) -> Option<Result<Location, Error>> {
        let (scheme, rest) = arg.split_once("://")?;
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return None;
        }
        Some(match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => match Url::parse(arg) {
                Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => Ok(Location::Http(u)),
                Ok(_) => Err(Error::Address(format!("{arg}: no host"))),
                Err(e) => Err(Error::Address(format!("{arg}: {e}"))),
            },
            "hf" => hub(arg, rest),
            "s3" | "s3a" => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    Err(Error::Address(format!("{arg}: no bucket name")))
                } else {
                    Ok(Location::S3 {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                    })
                }
            }
            other => Err(Error::Address(format!(
                "{arg}: {other}:// addresses are not read by pickguard (it reads http://, https:// and s3://; \
                 for another store give the object's https URL, signed if it is private)"
            ))),
        })
    }
}

/// `hf://` to the URL of the file on the hub.
fn hub(arg: &str, rest: &str) -> Result<Location, Error> {
    let bad = |why: &str| Error::Address(format!("{arg}: {why} (hf://ORG/REPO[@REVISION]/PATH)"));
    let (kind, rest) = match rest.split_once('/') {
        Some((k @ ("datasets" | "spaces"), r)) => (format!("{k}/"), r),
        _ => (String::new(), rest),
    };
    let mut parts = rest.splitn(3, '/');
    let (org, repo, path) = (parts.next(), parts.next(), parts.next());
    let (Some(org), Some(repo)) = (org, repo) else {
        return Err(bad("a repository is needed"));
    };
    let whole = path.is_none_or(str::is_empty);
    let path = path.unwrap_or("");
    let (repo, rev) = repo.split_once('@').unwrap_or((repo, "main"));
    let ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if !ok(org) || !ok(repo) || rev.is_empty() || rev.contains(['/', '?', '#']) {
        return Err(bad("not a repository name"));
    }
    if !whole
        && path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad("not a file path"));
    }
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let base = Url::parse(endpoint.trim_end_matches('/'))
        .map_err(|e| Error::Address(format!("HF_ENDPOINT {endpoint:?}: {e}")))?;
    let mut url = base.clone();
    {
        let mut seg = url
            .path_segments_mut()
            .map_err(|_| Error::Address(format!("HF_ENDPOINT {endpoint:?}: not a base URL")))?;
        seg.pop_if_empty();
        if !kind.is_empty() {
            seg.push(kind.trim_end_matches('/'));
        }
        seg.extend([org, repo, "resolve", rev]);
        seg.extend(path.split('/'));
    }
    let token = std::env::var("HF_TOKEN")
        .ok()
        .or_else(|| std::env::var("HUGGING_FACE_HUB_TOKEN").ok())
        .filter(|t| !t.is_empty());
    if whole {
        let mut api = base.clone();
        {
            let mut seg = api
                .path_segments_mut()
                .map_err(|_| Error::Address(format!("HF_ENDPOINT {endpoint:?}: not a base URL")))?;
            seg.pop_if_empty();
            let kinds = match kind.as_str() {
                "datasets/" => "datasets",
                "spaces/" => "spaces",
                _ => "models",
            };
            seg.extend(["api", kinds, org, repo, "tree", rev]);
        }
        api.set_query(Some("recursive=true"));
        return Ok(Location::HubRepo {
            api,
            resolve: url,
            shown: format!("hf://{kind}{org}/{repo}@{rev}"),
            token,
        });
    }
    Ok(Location::Hub {
        url,
        shown: format!("hf://{kind}{org}/{repo}@{rev}/{path}"),
        token,
    })
}

/// How an address is shown in reports: no user name, password or query
/// string (a signed URL's query is a credential).
pub fn display(loc: &Location) -> String {
    match loc {
        Location::Http(u) => display_url(u),
        Location::Hub { shown, .. } | Location::HubRepo { shown, .. } => shown.clone(),
        Location::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
    }
}

fn display_url(u: &Url) -> String {
    let mut v = u.clone();
    let _ = v.set_username("");
    let _ = v.set_password(None);
    let had_query = v.query().is_some();
    v.set_query(None);
    v.set_fragment(None);
    let mut s = v.to_string();
    if had_query {
        s.push_str("?…");
    }
    s
}

#[derive(Clone)]
pub(crate) enum Backend {
    Http {
        client: reqwest::Client,
        url: Url,
        /// Sent to the first host only (reqwest drops it on a redirect to
        /// another host, such as a hub's CDN).
        bearer: Option<String>,
    },
    Store {
        store: Arc<dyn ObjectStore>,
        path: StorePath,
    },
}

/// One remote file, as first seen.
#[derive(Clone)]
pub struct Object {
    /// The address as reports show it.
    pub display: String,
    pub size: u64,
    /// The ETag (or Last-Modified) every later answer must carry.
    pub(crate) validator: Option<String>,
    pub(crate) backend: Backend,
    /// Bytes the first request brought (offset, bytes).
    pub(crate) first: Option<(u64, Bytes)>,
    /// The server answered the first request with the whole file.
    pub(crate) whole: bool,
}

/// Options for opening and reading remote objects.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bytes one file may make pickguard fetch, in all.
    pub max_fetch: u64,
    /// Objects one `s3://` prefix may list.
    pub max_objects: usize,
    /// Time one request may take.
    pub request_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_fetch: 2 << 30,
            max_objects: 100_000,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// One HTTP client per process (and per request timeout): its connection
/// pool and TLS set-up are shared by every object read.
fn client(opts: &Options) -> Result<reqwest::Client, Error> {
    static CLIENTS: std::sync::Mutex<Vec<(Duration, reqwest::Client)>> =
        std::sync::Mutex::new(Vec::new());
    let mut cache = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, c)) = cache.iter().find(|(t, _)| *t == opts.request_timeout) {
        return Ok(c.clone());
    }
    let c = new_client(opts)?;
    cache.push((opts.request_timeout, c.clone()));
    Ok(c)
}

fn new_client(opts: &Options) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .user_agent(concat!("pickguard/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .timeout(opts.request_timeout)
        .redirect(reqwest::redirect::Policy::limited(10))
        // The bytes must be the file's: no transparent decompression.
        .no_gzip()
        .no_brotli()
        .no_deflate()
        .build()
        .map_err(|e| Error::Fetch(format!("HTTP client: {e}")))
}

fn s3_store(bucket: &str) -> Result<Arc<dyn ObjectStore>, Error> {
    let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    // An endpoint given as http:// (a local MinIO, a test server) was
    // chosen by the user; object_store would refuse it otherwise.
    if std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .is_ok_and(|e| e.starts_with("http://"))
    {
        b = b.with_allow_http(true);
    }
    b.build()
        .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        .map_err(|e| Error::Fetch(format!("s3://{bucket}: {e}")))
}

/// The objects an address names: one for a URL or an object key, every
/// object under it for an `s3://` prefix (sorted by key).
pub async fn open(loc: &Location, opts: &Options) -> Result<Vec<Object>, Error> {
    match loc {
        Location::Http(url) => Ok(vec![
            open_http(client(opts)?, url.clone(), None, display_url(url), opts).await?,
        ]),
        Location::Hub { url, shown, token } => Ok(vec![
            open_http(
                client(opts)?,
                url.clone(),
                token.clone(),
                shown.clone(),
                opts,
            )
            .await?,
        ]),
        Location::HubRepo {
            api,
            resolve,
            shown,
            token,
        } => {
            let c = client(opts)?;
            let files = hub_tree(&c, api, token, shown, opts).await?;
            let mut out = Vec::new();
            for f in files {
                let mut url = resolve.clone();
                if let Ok(mut seg) = url.path_segments_mut() {
                    seg.pop_if_empty();
                    seg.extend(f.split('/'));
                }
                let name = format!("{shown}/{f}");
                out.push(open_http(c.clone(), url, token.clone(), name, opts).await?);
            }
            Ok(out)
        }
        Location::S3 { bucket, key } => {
            let store = s3_store(bucket)?;
            if !key.is_empty() && !key.ends_with('/') {
                let path = StorePath::from(key.as_str());
                match store.head(&path).await {
                    Ok(meta) => {
                        return Ok(vec![store_object(store, bucket, meta)?]);
                    }
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(Error::Fetch(format!("{}: {e}", display(loc)))),
                }
            }
            let prefix = key.trim_end_matches('/');
            let prefix = (!prefix.is_empty()).then(|| StorePath::from(prefix));
            let mut listed = store.list(prefix.as_ref());
            let mut metas = Vec::new();
            while let Some(m) = listed.next().await {
                let m = m.map_err(|e| Error::Fetch(format!("listing {}: {e}", display(loc))))?;
                // A "folder" some tools make: an empty object named `dir/`.
                if m.size == 0 && m.location.as_ref().ends_with('/') {
                    continue;
                }
                if metas.len() == opts.max_objects {
                    return Err(Error::TooMuch(format!(
                        "{} holds more than {} objects: scan a narrower prefix",
                        display(loc),
                        opts.max_objects
                    )));
                }
                metas.push(m);
            }
            if metas.is_empty() {
                return Err(Error::Fetch(format!(
                    "{}: no such object, and no object under it",
                    display(loc)
                )));
            }
            metas.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
            metas
                .into_iter()
                .map(|m| store_object(store.clone(), bucket, m))
                .collect()
        }
    }
}

fn store_object(
    store: Arc<dyn ObjectStore>,
    bucket: &str,
    meta: object_store::ObjectMeta,
) -> Result<Object, Error> {
    Ok(Object {
        display: format!("s3://{bucket}/{}", meta.location),
        size: meta.size,
        validator: meta.e_tag.clone(),
        backend: Backend::Store {
            store,
            path: meta.location,
        },
        first: None,
        whole: false,
    })
}

fn validator(h: &header::HeaderMap) -> Option<String> {
    h.get(header::ETAG)
        .or_else(|| h.get(header::LAST_MODIFIED))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `bytes START-END/TOTAL` (END inclusive), or `bytes */TOTAL`.
fn content_range(h: &header::HeaderMap) -> Option<(Option<(u64, u64)>, u64)> {
    let v = h.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let total: u64 = total.trim().parse().ok()?;
    if span.trim() == "*" {
        return Some((None, total));
    }
    let (a, b) = span.split_once('-')?;
    Some((
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        total,
    ))
}

/// The body, refused past `limit` bytes (a server can send anything).
/// An encoded body is refused: clients that decode it (requests,
/// huggingface_hub) and clients that do not would get different files.
async fn body(mut resp: reqwest::Response, limit: u64, what: &str) -> Result<Bytes, Error> {
    if let Some(enc) = resp.headers().get(header::CONTENT_ENCODING) {
        let enc = String::from_utf8_lossy(enc.as_bytes()).into_owned();
        if !enc.trim().eq_ignore_ascii_case("identity") {
            return Err(Error::Fetch(format!(
                "{what}: the server encoded the file (Content-Encoding: {enc}); a client that decodes it gets other bytes than one that does not: not scanned"
            )));
        }
    }
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Error::Fetch(format!("{what}: {e}")))?
    {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(Error::TooMuch(format!(
                "{what}: the answer is longer than the {limit} bytes asked for or allowed"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// The file paths of a hub revision, from its tree API (paged by `Link:
/// rel="next"`), within `max_objects`.
async fn hub_tree(
    client: &reqwest::Client,
    api: &Url,
    token: &Option<String>,
    shown: &str,
    opts: &Options,
) -> Result<Vec<String>, Error> {
    let mut files = Vec::new();
    let mut next = Some(api.clone());
    while let Some(url) = next.take() {
        let resp = request(client, &url, token)
            .send()
            .await
            .map_err(|e| Error::Fetch(format!("listing {shown}: {e}")))?;
        if resp.status() != StatusCode::OK {
            return Err(Error::Fetch(format!(
                "listing {shown}: HTTP {}",
                resp.status()
            )));
        }
        next = next_page(resp.headers(), &url, api)
            .map_err(|why| Error::Fetch(format!("listing {shown}: {why}")))?;
        let page = body(resp, 64 << 20, shown).await?;
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&page)
            .map_err(|e| Error::Fetch(format!("listing {shown}: not a tree listing ({e})")))?;
        for e in entries {
            if e.get("type").and_then(|t| t.as_str()) != Some("file") {
                continue;
            }
            let Some(p) = e.get("path").and_then(|p| p.as_str()) else {
                return Err(Error::Fetch(format!(
                    "listing {shown}: an entry without a path"
                )));
            };
            if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
                return Err(Error::Fetch(format!(
                    "listing {shown}: a path that climbs: {p:?}"
                )));
            }
            if files.len() == opts.max_objects {
                return Err(Error::TooMuch(format!(
                    "{shown} holds more than {} files",
                    opts.max_objects
                )));
            }
            files.push(p.to_owned());
        }
    }
    if files.is_empty() {
        return Err(Error::Fetch(format!("{shown}: the revision lists no file")));
    }
    files.sort();
    Ok(files)
}

/// The `Link: <…>; rel="next"` page of a listing, which must be on the
/// listing's own origin: the hub token goes with the request, and a page
/// elsewhere would receive it.
fn next_page(h: &header::HeaderMap, url: &Url, api: &Url) -> Result<Option<Url>, String> {
    let Some(link) = h.get(header::LINK).and_then(|l| l.to_str().ok()) else {
        return Ok(None);
    };
    let Some(target) = link.split(',').find_map(|part| {
        let (u, rel) = part.split_once(';')?;
        rel.contains("rel=\"next\"")
            .then(|| u.trim().trim_start_matches('<').trim_end_matches('>'))
    }) else {
        return Ok(None);
    };
    let next = url
        .join(target)
        .map_err(|e| format!("a next page that is not a URL ({e})"))?;
    if next.origin() != api.origin() {
        return Err(format!(
            "the next page is on another host ({}): not followed with the token",
            display_url(&next)
        ));
    }
    Ok(Some(next))
}

fn request(
    client: &reqwest::Client,
    url: &Url,
    bearer: &Option<String>,
) -> reqwest::RequestBuilder {
    let r = client.get(url.clone());
    match bearer {
        Some(t) => r.bearer_auth(t),
        None => r,
    }
}

async fn open_http(
    client: reqwest::Client,
    url: Url,
    bearer: Option<String>,
    shown: String,
    opts: &Options,
) -> Result<Object, Error> {
    let resp = request(&client, &url, &bearer)
        .header(header::RANGE, format!("bytes=0-{}", PROBE - 1))
        .send()
        .await
        .map_err(|e| Error::Fetch(format!("{shown}: {e}")))?;
    let status = resp.status();
    let v = validator(resp.headers());
    let backend = Backend::Http {
        client,
        url: url.clone(),
        bearer,
    };
    let mut obj = Object {
        display: shown.clone(),
        size: 0,
        validator: v,
        backend,
        first: None,
        whole: false,
    };
    match status {
        StatusCode::PARTIAL_CONTENT => {
            let Some((Some((a, b)), total)) = content_range(resp.headers()) else {
                return Err(Error::Fetch(format!(
                    "{shown}: a 206 answer without a usable Content-Range"
                )));
            };
            let want_end = PROBE.min(total).saturating_sub(1);
            if a != 0 || b != want_end || total == 0 {
                return Err(Error::Fetch(format!(
                    "{shown}: asked for bytes 0-{want_end}, the server sent {a}-{b} of {total}"
                )));
            }
            let got = body(resp, b + 1, &shown).await?;
            if got.len() as u64 != b + 1 {
                return Err(Error::Fetch(format!(
                    "{shown}: the server sent {} bytes for a range of {}",
                    got.len(),
                    b + 1
                )));
            }
            obj.size = total;
            obj.first = Some((0, got));
        }
        StatusCode::OK => {
            // No range support: the whole file comes now, or not at all.
            let declared = resp.content_length();
            let got = body(resp, opts.max_fetch, &shown).await.map_err(|e| match e {
                Error::TooMuch(_) => Error::TooMuch(format!(
                    "{shown}: the server does not answer range requests and the file is over the fetch limit of {} bytes (--max-fetch)",
                    opts.max_fetch
                )),
                e => e,
            })?;
            if declared.is_some_and(|n| n != got.len() as u64) {
                return Err(Error::Fetch(format!(
                    "{shown}: the server declared {} bytes and sent {}",
                    declared.unwrap_or(0),
                    got.len()
                )));
            }
            obj.size = got.len() as u64;
            obj.first = Some((0, got));
            obj.whole = true;
        }
        StatusCode::RANGE_NOT_SATISFIABLE => match content_range(resp.headers()) {
            Some((None, 0)) => {}
            _ => {
                return Err(Error::Fetch(format!(
                    "{shown}: the server refused the first 64 KiB (416) without saying the file is empty"
                )));
            }
        },
        s => return Err(Error::Fetch(format!("{shown}: HTTP {s}"))),
    }
    if obj.size == 0 {
        return Err(Error::Fetch(format!(
            "{shown}: the server answered with an empty file: nothing was scanned"
        )));
    }
    Ok(obj)
}

impl Object {
    /// Whether ranges read apart can be told to be of one version: a strong
    /// ETag, checked on every answer (a weak one, or Last-Modified's one
    /// second, may stay the same across a change).
    pub(crate) fn versioned(&self) -> bool {
        self.whole
            || self.validator.as_deref().is_some_and(|v| {
                v.starts_with('"') || matches!(self.backend, Backend::Store { .. })
            })
    }

    /// The whole object in one answer (for a server whose versions cannot
    /// be told apart): a 200 of exactly the size first seen.
    pub(crate) async fn get_whole(&self, limit: u64) -> Result<Bytes, Error> {
        let Backend::Http {
            client,
            url,
            bearer,
        } = &self.backend
        else {
            return self.get(0..self.size).await;
        };
        let resp = request(client, url, bearer)
            .send()
            .await
            .map_err(|e| Error::Fetch(format!("{}: {e}", self.display)))?;
        if resp.status() != StatusCode::OK {
            return Err(Error::Fetch(format!(
                "{}: HTTP {} for the whole file",
                self.display,
                resp.status()
            )));
        }
        let got = body(resp, limit.min(self.size), &self.display).await?;
        if got.len() as u64 != self.size {
            return Err(Error::Changed(format!(
                "{}: it was {} bytes and is now {}",
                self.display,
                self.size,
                got.len()
            )));
        }
        Ok(got)
    }

    /// Exactly the bytes `r` of this object, as first seen.
    pub(crate) async fn get(&self, r: Range<u64>) -> Result<Bytes, Error> {
        let n = r.end - r.start;
        let what = format!("{} bytes {}-{}", self.display, r.start, r.end - 1);
        let got = match &self.backend {
            Backend::Http {
                client,
                url,
                bearer,
            } => {
                let resp = request(client, url, bearer)
                    .header(header::RANGE, format!("bytes={}-{}", r.start, r.end - 1))
                    .send()
                    .await
                    .map_err(|e| Error::Fetch(format!("{what}: {e}")))?;
                if resp.status() != StatusCode::PARTIAL_CONTENT {
                    return Err(Error::Fetch(format!(
                        "{what}: HTTP {} where a 206 range answer was expected",
                        resp.status()
                    )));
                }
                let v = validator(resp.headers());
                if self.validator.is_some() && v != self.validator {
                    return Err(Error::Changed(format!(
                        "{}: its version was {:?} and is now {:?}",
                        self.display,
                        self.validator.as_deref().unwrap_or(""),
                        v.as_deref().unwrap_or("")
                    )));
                }
                match content_range(resp.headers()) {
                    Some((Some((a, b)), total))
                        if a == r.start && b == r.end - 1 && total == self.size => {}
                    Some((_, total)) if total != self.size => {
                        return Err(Error::Changed(format!(
                            "{}: it was {} bytes and is now {total}",
                            self.display, self.size
                        )));
                    }
                    _ => {
                        return Err(Error::Fetch(format!(
                            "{what}: the answer's Content-Range is not the range asked for"
                        )));
                    }
                }
                body(resp, n, &what).await?
            }
            Backend::Store { store, path } => {
                let opts = GetOptions {
                    range: Some(GetRange::Bounded(r.clone())),
                    if_match: self.validator.clone(),
                    ..Default::default()
                };
                let res = store.get_opts(path, opts).await.map_err(|e| match e {
                    object_store::Error::Precondition { .. } => {
                        Error::Changed(format!("{}: its ETag changed", self.display))
                    }
                    e => Error::Fetch(format!("{what}: {e}")),
                })?;
                if res.meta.size != self.size || res.meta.e_tag != self.validator {
                    return Err(Error::Changed(format!(
                        "{}: it was {} bytes (ETag {:?}) and is now {} (ETag {:?})",
                        self.display,
                        self.size,
                        self.validator.as_deref().unwrap_or(""),
                        res.meta.size,
                        res.meta.e_tag.as_deref().unwrap_or("")
                    )));
                }
                if let Some(enc) = res
                    .attributes
                    .get(&object_store::Attribute::ContentEncoding)
                    .filter(|v| !v.as_ref().trim().eq_ignore_ascii_case("identity"))
                {
                    return Err(Error::Fetch(format!(
                        "{what}: the object is stored encoded (Content-Encoding: {}); a client that decodes it gets other bytes than one that does not: not scanned",
                        enc.as_ref()
                    )));
                }
                res.bytes()
                    .await
                    .map_err(|e| Error::Fetch(format!("{what}: {e}")))?
            }
        };
        if got.len() as u64 != n {
            return Err(Error::Fetch(format!(
                "{what}: {} bytes came for a range of {n}",
                got.len()
            )));
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(Location::parse("model.pt").is_none());
        assert!(Location::parse("./https:/x").is_none());
        assert!(matches!(
            Location::parse("https://h/x.pt"),
            Some(Ok(Location::Http(_)))
        ));
        assert!(matches!(
            Location::parse("HTTPS://h/x.pt"),
            Some(Ok(Location::Http(_)))
        ));
        match Location::parse("s3://b/p/q.pt") {
            Some(Ok(Location::S3 { bucket, key })) => {
                assert_eq!((bucket.as_str(), key.as_str()), ("b", "p/q.pt"))
            }
            _ => panic!("s3 address"),
        }
        assert!(matches!(Location::parse("s3:///k"), Some(Err(_))));
        match Location::parse("hf://datasets/org/repo@v1.0/sub/x.pt") {
            Some(Ok(Location::Hub { url, shown, .. })) => {
                assert!(
                    url.as_str()
                        .ends_with("/datasets/org/repo/resolve/v1.0/sub/x.pt"),
                    "{url}"
                );
                assert_eq!(shown, "hf://datasets/org/repo@v1.0/sub/x.pt");
            }
            _ => panic!("hf address"),
        }
        assert!(matches!(
            Location::parse("hf://org/repo@v2"),
            Some(Ok(Location::HubRepo { .. }))
        ));
        for bad in [
            "hf://org",
            "hf://org/../x.pt",
            "hf://org/repo/../x.pt",
            "hf://org/re po/x.pt",
        ] {
            assert!(matches!(Location::parse(bad), Some(Err(_))), "{bad}");
        }
        assert!(matches!(Location::parse("gs://b/k"), Some(Err(_))));
        assert!(matches!(Location::parse("https://"), Some(Err(_))));
    }

    #[test]
    fn shown_without_credentials() {
        let Some(Ok(l)) = Location::parse("https://u:secret@h/x.pt?X-Amz-Signature=abc#f") else {
            panic!()
        };
        let s = display(&l);
        assert!(!s.contains("secret") && !s.contains("abc") && !s.contains("u:"));
        assert_eq!(s, "https://h/x.pt?…");
    }

    #[test]
    fn listing_pages_stay_on_the_hub() {
        let api = Url::parse("https://hub.example/api/models/o/m/tree/main").unwrap();
        let page = |v: &str| {
            let mut h = header::HeaderMap::new();
            h.insert(header::LINK, v.parse().unwrap());
            next_page(&h, &api, &api)
        };
        assert_eq!(
            page("</api/models/o/m/tree/main?cursor=2>; rel=\"next\"")
                .unwrap()
                .unwrap()
                .as_str(),
            "https://hub.example/api/models/o/m/tree/main?cursor=2"
        );
        assert!(page("<https://evil.example/steal>; rel=\"next\"").is_err());
        assert!(page("<http://hub.example/x>; rel=\"next\"").is_err());
        assert_eq!(page("</x>; rel=\"prev\""), Ok(None));
        assert_eq!(next_page(&header::HeaderMap::new(), &api, &api), Ok(None));
    }

    #[test]
    fn content_ranges() {
        let mut h = header::HeaderMap::new();
        h.insert(header::CONTENT_RANGE, "bytes 0-9/100".parse().unwrap());
        assert_eq!(content_range(&h), Some((Some((0, 9)), 100)));
        h.insert(header::CONTENT_RANGE, "bytes */0".parse().unwrap());
        assert_eq!(content_range(&h), Some((None, 0)));
        h.insert(header::CONTENT_RANGE, "items 0-9/100".parse().unwrap());
        assert_eq!(content_range(&h), None);
    }
}
