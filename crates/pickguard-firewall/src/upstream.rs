//! Asking an upstream index for a project page, and deciding whether the
//! answer is a simple-API project page at all.
//!
//! The firewall's promise hangs on this module: a private upstream's answer
//! may only let a name go public when it *positively* says "not here". So an
//! answer is classified strictly:
//!
//! * [`Fetch::Found`]: a well-formed PEP 503/691 page for this project that
//!   lists at least one distribution file of this project;
//! * [`Fetch::Empty`]: a well-formed page for this project that lists none
//!   (JSON with `meta.api-version`, `name` and `files: []`; HTML carrying the
//!   PEP 629 `pypi:repository-version` meta or a `Links for NAME` title);
//! * [`Fetch::NotFound`]: HTTP 404 or 410;
//! * [`Fetch::Error`]: everything else — connection failure, timeout, any
//!   other status, a content type that is not a simple-API type, a body over
//!   the size limit, a page for another project, an HTML page that is not an
//!   index page (a maintenance page, an empty body), links none of which is a
//!   distribution of the project, a redirect to a host not allowed.
//!
//! What a caller may conclude from each is decided in `resolve.rs`.

use crate::config::Upstream;
use futures_util::StreamExt;
use pickguard_index::{Project, normalize, parse_html, parse_json};

/// What an upstream said about a project.
#[derive(Clone, Debug)]
pub enum Fetch {
    Found(Project),
    /// A well-formed project page listing no files of the project.
    Empty,
    NotFound,
    /// Anything else, with the reason.
    Error(String),
}

const ACCEPT: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";

/// Is `filename` a distribution file of the (normalised) project `project`?
/// Wheels and eggs name the project in their first dash-separated field;
/// sdists as `NAME-VERSION.ext`, where the version may itself hold dashes in
/// legacy names, so every split point is tried.
pub fn is_distribution_of(filename: &str, project: &str) -> bool {
    if filename.is_empty()
        || filename.contains('/')
        || filename.contains('\\')
        || filename.starts_with('.')
    {
        return false;
    }
    if let Some(stem) = filename
        .strip_suffix(".whl")
        .or_else(|| filename.strip_suffix(".egg"))
    {
        let parts: Vec<&str> = stem.split('-').collect();
        let min = if filename.ends_with(".whl") { 5 } else { 2 };
        return parts.len() >= min && normalize(parts[0]) == project;
    }
    // The same split the version is read with, so a file that passes here
    // always has a version the quarantine and the feed can judge.
    pickguard_index::version_of(filename, project).is_some()
}

/// `host:port` of a URL, the unit the host allowlists compare.
pub fn origin_of(url: &reqwest::Url) -> Option<String> {
    Some(format!(
        "{}:{}",
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?
    ))
}

/// Does `url`'s host appear in `allowed` (entries `host` or `host:port`)?
pub fn host_allowed(url: &reqwest::Url, allowed: &[String]) -> bool {
    let Some(origin) = origin_of(url) else {
        return false;
    };
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    // A bare host means its standard ports (80, 443), not every service on it.
    let standard = matches!(url.port_or_known_default(), Some(80 | 443));
    allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(&origin) || (standard && a.eq_ignore_ascii_case(&host)))
}

/// Read a response body, refusing more than `limit` bytes.
pub async fn read_limited(resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
    if let Some(len) = resp.content_length()
        && len > limit
    {
        return Err(format!(
            "the page is {len} bytes, over the {limit}-byte limit (max_page_bytes)"
        ));
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.without_url().to_string())?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(format!(
                "the page is over the {limit}-byte limit (max_page_bytes)"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The simple-API media type of a Content-Type header, if it is one.
fn page_kind(ct: Option<&str>) -> Option<bool> {
    let mt = ct?.split(';').next()?.trim().to_ascii_lowercase();
    match mt.as_str() {
        "application/vnd.pypi.simple.v1+json" | "application/vnd.pypi.simple.latest+json" => {
            Some(true)
        }
        "application/vnd.pypi.simple.v1+html"
        | "application/vnd.pypi.simple.latest+html"
        | "text/html" => Some(false),
        _ => None,
    }
}

/// Classify a 200 answer's body (see the module header).
pub fn classify(body: &[u8], json: bool, name: &str) -> Result<Option<Project>, String> {
    let mut p = if json {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not a PEP 691 page: {e}"))?;
        let api = v
            .pointer("/meta/api-version")
            .and_then(serde_json::Value::as_str);
        if !api.is_some_and(|a| a.starts_with("1.")) {
            return Err("not a PEP 691 page: no meta.api-version 1.x".into());
        }
        if !v.get("files").is_some_and(serde_json::Value::is_array) {
            return Err("not a PEP 691 page: no files array".into());
        }
        let page_name = v.get("name").and_then(serde_json::Value::as_str);
        if page_name.map(normalize).as_deref() != Some(name) {
            return Err(format!(
                "the page is for project {:?}, not {name:?}",
                page_name.unwrap_or("")
            ));
        }
        parse_json(body).map_err(|e| e.to_string())?
    } else {
        let text = std::str::from_utf8(body).map_err(|_| "the page is not UTF-8".to_string())?;
        let p = parse_html(text, name).map_err(|e| e.to_string())?;
        if p.files.is_empty() {
            // "Empty" is the one answer that can let a name go public, so it
            // must be certain: a page this parser reads no link from, but
            // whose raw text holds anchor tags an installer's parser would
            // read (<A HREF>, <a/href>, links after a stray '<'), or that was
            // cut off before its end, is not empty: it is unreadable.
            if anchor_tags(text) > 0 {
                return Err(format!(
                    "the page holds {} anchor tag(s) this reader could not parse: not taken as empty",
                    anchor_tags(text)
                ));
            }
            let lower = text.to_ascii_lowercase();
            if !(lower.contains("</body>") || lower.contains("</html>")) {
                return Err(
                    "the page ends before </body> or </html> (cut off?): not taken as empty".into(),
                );
            }
            if !looks_like_index_page(text, name) {
                return Err(
                    "answered 200 with an HTML page that lists no files and is not a simple-API \
                     project page (no pypi:repository-version meta, no \"Links for\" title)"
                        .into(),
                );
            }
        }
        p
    };
    let listed = p.files.len();
    p.files.retain(|f| is_distribution_of(&f.filename, name));
    if p.files.is_empty() {
        if listed > 0 {
            return Err(format!(
                "the page lists {listed} link(s), none a distribution file of {name}: not an index page for it"
            ));
        }
        return Ok(None);
    }
    Ok(Some(p))
}

/// An HTML page with no links still counts as an (empty) index page when it
/// says it is one: the PEP 629 version meta, or the PEP 503 customary title.
fn looks_like_index_page(text: &str, name: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    if lower.contains("<meta name=\"pypi:repository-version\"") {
        return true;
    }
    // "Links for <name>" in a title or heading, with the project's own name.
    lower.match_indices("links for ").any(|(i, m)| {
        let rest = &lower[i + m.len()..];
        let end = rest.find('<').unwrap_or(rest.len());
        normalize(rest[..end].trim()) == name
    })
}

/// Anchor start tags in raw HTML, counted as a lenient HTML tokenizer (such
/// as Python's html.parser, which pip uses) would see them: `<a` in any case,
/// followed by whitespace, `/` or `>`.
fn anchor_tags(text: &str) -> usize {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(2))
        .filter(|&i| {
            b[i] == b'<'
                && (b[i + 1] | 0x20) == b'a'
                && matches!(
                    b[i + 2],
                    b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'/' | b'>'
                )
        })
        .count()
}

/// Ask `up` for `name`'s page with `client` (whose redirect policy enforces
/// the upstream's host allowlist).
/// Seconds an upstream asked to be left alone (`Retry-After`: seconds or an
/// HTTP date), at most `MAX_BACKOFF`.
pub fn retry_after(h: &reqwest::header::HeaderMap) -> Option<u64> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let secs = match v.parse::<u64>() {
        Ok(n) => n,
        Err(_) => {
            let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822)
                .ok()?;
            (t - time::OffsetDateTime::now_utc()).whole_seconds().max(0) as u64
        }
    };
    Some(secs.min(MAX_BACKOFF))
}

/// The longest an upstream's `Retry-After` keeps it from being asked.
pub const MAX_BACKOFF: u64 = 300;

/// A project page from an upstream, and how long (seconds) the upstream
/// asked not to be asked again when it refused (429/503 `Retry-After`).
pub async fn fetch_project(
    client: &reqwest::Client,
    up: &Upstream,
    name: &str,
) -> (Fetch, Option<u64>) {
    let mut wait = None;
    let f = fetch_project_inner(client, up, name, &mut wait).await;
    (f, wait)
}

async fn fetch_project_inner(
    client: &reqwest::Client,
    up: &Upstream,
    name: &str,
    wait: &mut Option<u64>,
) -> Fetch {
    let base = if up.url.ends_with('/') {
        up.url.clone()
    } else {
        format!("{}/", up.url)
    };
    let url = format!("{base}{name}/");
    let timeout = std::time::Duration::from_secs(up.timeout_secs);
    let resp = client
        .get(&url)
        .header(reqwest::header::ACCEPT, ACCEPT)
        .timeout(timeout)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Fetch::Error(format!(
                "{}: no answer within {} s (timeout_secs)",
                up.name, up.timeout_secs
            ));
        }
        Err(e) if e.is_redirect() => {
            return Fetch::Error(format!(
                "{}: redirected to a host that is not allowed for it (file_hosts)",
                up.name
            ));
        }
        Err(e) => return Fetch::Error(format!("{}: {}", up.name, e.without_url())),
    };
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
        // A private index must say "not here" in both formats: one that
        // routes on Accept could 404 the JSON request and serve HTML.
        if up.private {
            let html = client
                .get(&url)
                .header(reqwest::header::ACCEPT, "text/html")
                .timeout(timeout)
                .send()
                .await;
            match html {
                Ok(r) if matches!(r.status().as_u16(), 404 | 410) => {}
                Ok(r) => {
                    return Fetch::Error(format!(
                        "{}: answered 404 to the JSON request but HTTP {} to the HTML one",
                        up.name,
                        r.status().as_u16()
                    ));
                }
                Err(e) => return Fetch::Error(format!("{}: {}", up.name, e.without_url())),
            }
        }
        return Fetch::NotFound;
    }
    if status != reqwest::StatusCode::OK {
        if matches!(status.as_u16(), 429 | 503) {
            *wait = retry_after(resp.headers());
        }
        return Fetch::Error(match wait {
            Some(n) => format!(
                "{}: HTTP {} (it asked to wait {n} s)",
                up.name,
                status.as_u16()
            ),
            None => format!("{}: HTTP {}", up.name, status.as_u16()),
        });
    }
    let page_url = resp.url().clone();
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(json) = page_kind(ct.as_deref()) else {
        return Fetch::Error(format!(
            "{}: answered with content type {:?}, not a simple-API page",
            up.name,
            ct.as_deref().unwrap_or("(none)")
        ));
    };
    let body = match tokio::time::timeout(timeout, read_limited(resp, up.max_page_bytes)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Fetch::Error(format!("{}: {e}", up.name)),
        Err(_) => {
            return Fetch::Error(format!(
                "{}: the page did not arrive within {} s (timeout_secs)",
                up.name, up.timeout_secs
            ));
        }
    };
    let mut p = match classify(&body, json, name) {
        Ok(Some(p)) => p,
        Ok(None) => return Fetch::Empty,
        Err(e) => return Fetch::Error(format!("{}: {e}", up.name)),
    };
    // Absolute file URLs, resolved against the page.
    for f in &mut p.files {
        match page_url.join(&f.url) {
            Ok(u) => f.url = u.to_string(),
            Err(_) => return Fetch::Error(format!("{}: bad file URL {:?}", up.name, f.url)),
        }
    }
    Fetch::Found(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_names() {
        assert!(is_distribution_of(
            "acme_internal-1.0.0-py3-none-any.whl",
            "acme-internal"
        ));
        assert!(is_distribution_of(
            "Acme.Internal-1.0.tar.gz",
            "acme-internal"
        ));
        assert!(is_distribution_of("foo-1.0-beta.tar.gz", "foo"));
        assert!(is_distribution_of("foo-bar-2.0.zip", "foo-bar"));
        assert!(is_distribution_of("foo-1.0-py3.8.egg", "foo"));
        assert!(!is_distribution_of("foo-1.0.tar.gz", "foo-bar"));
        assert!(!is_distribution_of("status", "foo"));
        assert!(!is_distribution_of("foo-.tar.gz", "foo"));
        assert!(!is_distribution_of("foo-1.0-py3.whl", "foo"));
        assert!(!is_distribution_of("../foo-1.0.tar.gz", "foo"));
        assert!(!is_distribution_of("other-1.0-py3-none-any.whl", "foo"));
    }

    #[test]
    fn answers_that_are_not_index_pages() {
        let t = "torchtriton";
        // Empty body, maintenance page, JSON without the required fields, JSON for another name.
        assert!(classify(b"", false, t).is_err());
        assert!(
            classify(
                b"<html><body><h1>Down for maintenance</h1></body></html>",
                false,
                t
            )
            .is_err()
        );
        assert!(classify(br#"{"files": []}"#, true, t).is_err());
        assert!(
            classify(
                br#"{"meta":{"api-version":"1.1"},"name":"other","files":[]}"#,
                true,
                t
            )
            .is_err()
        );
        assert!(classify(b"not json", true, t).is_err());
        // Links, none of them a distribution of the project.
        assert!(
            classify(
                b"<html><a href=\"/status\">status</a><a href=\"x-1.0.tar.gz\">x</a></html>",
                false,
                t
            )
            .is_err()
        );
    }

    #[test]
    fn pages_an_installer_reads_links_from_are_never_empty() {
        let t = "torchtriton";
        for page in [
            "<HTML><HEAD><TITLE>Links for torchtriton</TITLE></HEAD><BODY><A HREF=\"/f/torchtriton-1.0.0-py3-none-any.whl#sha256=bb\">torchtriton-1.0.0-py3-none-any.whl</A></BODY></HTML>",
            "<html><head><title>Links for torchtriton</title></head><body><a HREF=\"/f/torchtriton-1.0.0-py3-none-any.whl\">x</a></body></html>",
            "<html><head><title>Links for torchtriton</title></head><body>a < b<a href=\"/f/torchtriton-1.0.0-py3-none-any.whl\">x</a></body></html>",
            "<html><head><title>Links for torchtriton</title></head><body><a/href=\"/f/torchtriton-1.0.0-py3-none-any.whl\">x</a></body></html>",
            // Cut off before the body.
            "<html><head><title>Links for torchtriton</title></head>",
            // The meta name mentioned in a comment is not the meta tag.
            "<html><!-- pypi:repository-version --><body></body></html>",
        ] {
            match classify(page.as_bytes(), false, t) {
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => panic!("taken as an empty project page: {page}"),
            }
        }
    }

    #[test]
    fn explicit_empty_and_real_pages() {
        let t = "torchtriton";
        assert!(matches!(
            classify(
                br#"{"meta":{"api-version":"1.1"},"name":"TorchTriton","files":[]}"#,
                true,
                t
            ),
            Ok(None)
        ));
        assert!(matches!(
            classify(
                b"<!DOCTYPE html><html><head><meta name=\"pypi:repository-version\" content=\"1.0\"></head><body></body></html>",
                false,
                t
            ),
            Ok(None)
        ));
        assert!(matches!(
            classify(
                b"<html><head><title>Links for torchtriton</title></head><body></body></html>",
                false,
                t
            ),
            Ok(None)
        ));
        assert!(matches!(
            classify(
                b"<!DOCTYPE html><html><head><meta name=\"pypi:repository-version\" content=\"1.0\"></head><body></body></html>",
                false,
                t
            ),
            Ok(None)
        ));
        // "Links for" another project is not an empty page for this one.
        assert!(
            classify(
                b"<html><head><title>Links for other</title></head></html>",
                false,
                t
            )
            .is_err()
        );
        let p = classify(
            b"<html><a href=\"../../f/torchtriton-2.0.0-py3-none-any.whl#sha256=00\">torchtriton-2.0.0-py3-none-any.whl</a><a href=\"/help\">help</a></html>",
            false,
            t,
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.files.len(), 1, "non-distribution links are dropped");
    }

    #[test]
    fn host_allowlist() {
        let u = reqwest::Url::parse("https://files.pythonhosted.org/packages/x.whl").unwrap();
        assert!(host_allowed(&u, &["files.pythonhosted.org".into()]));
        assert!(host_allowed(&u, &["files.pythonhosted.org:443".into()]));
        assert!(!host_allowed(&u, &["files.pythonhosted.org:80".into()]));
        assert!(!host_allowed(&u, &["pypi.org".into()]));
        let l = reqwest::Url::parse("http://127.0.0.1:9/x").unwrap();
        assert!(!host_allowed(&l, &["127.0.0.1:8080".into()]));
        // A bare host allows its standard ports only (not Redis on 6379).
        let r = reqwest::Url::parse("http://files.example:6379/a").unwrap();
        assert!(!host_allowed(&r, &["files.example".into()]));
        let h = reqwest::Url::parse("http://files.example/a").unwrap();
        assert!(host_allowed(&h, &["files.example".into()]));
    }
}
