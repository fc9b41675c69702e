/*!
The PyPI simple repository API, as installers use it: PEP 503 (HTML),
PEP 691 (JSON), PEP 592 (yanked), PEP 658/714 (core metadata), PEP 700
(versions, size, upload-time), PEP 708 (tracks, alternate locations) and
PEP 792 (project status). Parsing is tolerant (what real indexes serve);
rendering is exact.
*/

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// PEP 503 normalisation: runs of `-`, `_`, `.` become `-`, lower case.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// A valid project name (PEP 508): ASCII letters and digits, with `._-` inside.
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 200
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// PEP 592: not yanked, yanked, or yanked with a reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Yanked {
    #[default]
    No,
    Reason(String),
}

impl Yanked {
    pub fn is_yanked(&self) -> bool {
        !matches!(self, Yanked::No)
    }
}

/// One distribution file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct File {
    pub filename: String,
    /// As the upstream gives it (absolute, or relative to the project page).
    pub url: String,
    /// Hash name -> lowercase hex.
    pub hashes: BTreeMap<String, String>,
    pub requires_python: Option<String>,
    /// PEP 658/714: `None` not advertised, `Some(None)` advertised without
    /// a hash, `Some(Some(sha256))` with one.
    pub core_metadata: Option<Option<String>>,
    pub yanked: Yanked,
    pub size: Option<u64>,
    /// PEP 700, RFC 3339 UTC as the upstream wrote it.
    pub upload_time: Option<String>,
}

impl File {
    pub fn sha256(&self) -> Option<&str> {
        self.hashes.get("sha256").map(String::as_str)
    }

    /// The version part of this file's name, read as pip reads it for
    /// `project` (`None`: not a distribution of `project` pip would take).
    pub fn version(&self, project: &str) -> Option<&str> {
        version_of(&self.filename, project)
    }
}

/// Source-distribution extensions pip or uv accept.
const SDIST_EXTENSIONS: &[&str] = &[
    ".tar.gz",
    ".tar.bz2",
    ".tar.xz",
    ".tar.zst",
    ".tar.lzma",
    ".tar.lz",
    ".tar",
    ".tgz",
    ".tbz",
    ".txz",
    ".tlz",
    ".zip",
];

/// Version from a distribution file name of `project`, split as pip splits
/// it: a wheel's second dash-separated field when its first names the
/// project; an sdist's stem after the first dash whose prefix normalises to
/// the project (`pkg-1.0-2.tar.gz` is version `1.0-2`, which pip reads as
/// `1.0.post2`; `my-pkg-1.0.tar.gz` of `my-pkg` is `1.0`). `None` for files
/// of another project or of no distribution format: callers judging a file
/// by version treat that as unknown.
pub fn version_of<'a>(filename: &'a str, project: &str) -> Option<&'a str> {
    let want = normalize(project);
    if let Some(stem) = filename.strip_suffix(".whl") {
        let mut parts = stem.split('-');
        let name = parts.next()?;
        let version = parts.next()?;
        return (normalize(name) == want && !version.is_empty()).then_some(version);
    }
    let lower = filename.to_ascii_lowercase();
    let ext = SDIST_EXTENSIONS.iter().find(|e| lower.ends_with(**e))?;
    let stem = &filename[..filename.len() - ext.len()];
    stem.match_indices('-')
        .map(|(i, _)| i)
        .find(|&i| normalize(&stem[..i]) == want)
        .map(|i| &stem[i + 1..])
        .filter(|v| !v.is_empty())
}

/// PEP 792 status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A project page.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Project {
    /// Normalised name.
    pub name: String,
    pub files: Vec<File>,
    /// PEP 708 `tracks`.
    pub tracks: Vec<String>,
    pub alternate_locations: Vec<String>,
    pub status: Option<Status>,
    /// `meta._last-serial`, when the upstream gives one.
    pub last_serial: Option<i64>,
}

#[derive(Debug)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ParseError {}

fn hash_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.to_lowercase(), s.to_lowercase())))
                .collect()
        })
        .unwrap_or_default()
}

fn metadata_field(v: Option<&Value>) -> Option<Option<String>> {
    match v? {
        Value::Bool(true) => Some(None),
        Value::Object(o) => Some(
            o.get("sha256")
                .and_then(Value::as_str)
                .map(str::to_lowercase),
        ),
        _ => None,
    }
}

/// Parse a PEP 691 JSON project page.
pub fn parse_json(body: &[u8]) -> Result<Project, ParseError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ParseError(format!("project JSON: {e}")))?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ParseError("project JSON has no name".into()))?;
    let mut files = Vec::new();
    for f in v
        .get("files")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let (Some(filename), Some(url)) = (
            f.get("filename").and_then(Value::as_str),
            f.get("url").and_then(Value::as_str),
        ) else {
            return Err(ParseError(format!(
                "file entry without filename or url: {f}"
            )));
        };
        let yanked = match f.get("yanked") {
            Some(Value::Bool(true)) => Yanked::Reason(String::new()),
            Some(Value::String(r)) => Yanked::Reason(r.clone()),
            _ => Yanked::No,
        };
        files.push(File {
            filename: filename.to_owned(),
            url: url.to_owned(),
            hashes: hash_map(f.get("hashes")),
            requires_python: f
                .get("requires-python")
                .and_then(Value::as_str)
                .map(str::to_owned),
            core_metadata: metadata_field(f.get("core-metadata"))
                .or_else(|| metadata_field(f.get("data-dist-info-metadata")))
                .or_else(|| metadata_field(f.get("dist-info-metadata"))),
            yanked,
            size: f.get("size").and_then(Value::as_u64),
            upload_time: f
                .get("upload-time")
                .and_then(Value::as_str)
                .map(str::to_owned),
        });
    }
    let meta = v.get("meta");
    Ok(Project {
        name: normalize(name),
        files,
        tracks: meta
            .and_then(|m| m.get("tracks"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        alternate_locations: v
            .get("alternate-locations")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        status: v
            .get("project-status")
            .and_then(|s| serde_json::from_value(s.clone()).ok()),
        last_serial: meta
            .and_then(|m| m.get("_last-serial"))
            .and_then(Value::as_i64),
    })
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

/// Parse a PEP 503 HTML project page.
pub fn parse_html(body: &str, name: &str) -> Result<Project, ParseError> {
    let dom = tl::parse(body, tl::ParserOptions::default())
        .map_err(|e| ParseError(format!("project HTML: {e}")))?;
    let parser = dom.parser();
    let mut files = Vec::new();
    let mut tracks = Vec::new();
    let mut alternate = Vec::new();
    for node in dom.nodes() {
        let Some(tag) = node.as_tag() else { continue };
        let attr = |k: &str| {
            tag.attributes()
                .get(k)
                .flatten()
                .map(|v| unescape(&v.as_utf8_str()))
        };
        let has = |k: &str| tag.attributes().contains(k);
        match tag.name().as_utf8_str().as_ref() {
            "meta" => match attr("name").as_deref() {
                Some("pypi:tracks") => tracks.extend(attr("content")),
                Some("pypi:alternate-locations") => alternate.extend(attr("content")),
                _ => {}
            },
            "a" => {
                let Some(href) = attr("href") else { continue };
                let (url, frag) = match href.split_once('#') {
                    Some((u, f)) => (u.to_owned(), Some(f.to_owned())),
                    None => (href.clone(), None),
                };
                let mut hashes = BTreeMap::new();
                if let Some((alg, hex)) = frag.as_deref().and_then(|f| f.split_once('=')) {
                    hashes.insert(alg.to_lowercase(), hex.to_lowercase());
                }
                let text = unescape(tag.inner_text(parser).trim());
                let filename = if text.is_empty() {
                    url.rsplit('/').next().unwrap_or("").to_owned()
                } else {
                    text
                };
                let md = attr("data-core-metadata").or_else(|| attr("data-dist-info-metadata"));
                let core_metadata = match md.as_deref() {
                    None if has("data-core-metadata") || has("data-dist-info-metadata") => {
                        Some(None)
                    }
                    None => None,
                    Some("true") => Some(None),
                    Some(v) => v
                        .split_once('=')
                        .filter(|(a, _)| a.eq_ignore_ascii_case("sha256"))
                        .map(|(_, h)| Some(h.to_lowercase())),
                };
                let yanked = if has("data-yanked") {
                    Yanked::Reason(attr("data-yanked").unwrap_or_default())
                } else {
                    Yanked::No
                };
                files.push(File {
                    filename,
                    url,
                    hashes,
                    requires_python: attr("data-requires-python"),
                    core_metadata,
                    yanked,
                    size: None,
                    upload_time: None,
                });
            }
            _ => {}
        }
    }
    Ok(Project {
        name: normalize(name),
        files,
        tracks,
        alternate_locations: alternate,
        status: None,
        last_serial: None,
    })
}

/// API version the rendered pages declare: 1.4 with PEP 708/792 fields;
/// otherwise 1.1 (PEP 700) when every file's size is known (1.1 makes `size`
/// mandatory in JSON), else 1.0 — an HTML upstream gives no sizes.
fn api_version(p: &Project) -> &'static str {
    if p.status.is_some() || !p.tracks.is_empty() || !p.alternate_locations.is_empty() {
        "1.4"
    } else if p.files.iter().all(|f| f.size.is_some()) {
        "1.1"
    } else {
        "1.0"
    }
}

/// Versions of a project, in first-seen order, deduplicated.
pub fn versions(p: &Project) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    p.files
        .iter()
        .filter_map(|f| f.version(&p.name))
        .filter(|v| seen.insert(v.to_string()))
        .map(str::to_owned)
        .collect()
}

/// Render a PEP 691 JSON project page.
pub fn render_json(p: &Project) -> String {
    let files: Vec<Value> = p
        .files
        .iter()
        .map(|f| {
            let mut o = json!({"filename": f.filename, "url": f.url, "hashes": f.hashes});
            if let Some(rp) = &f.requires_python {
                o["requires-python"] = json!(rp);
            }
            if let Some(md) = &f.core_metadata {
                let v = match md {
                    Some(h) => json!({"sha256": h}),
                    None => json!(true),
                };
                // PEP 714: `core-metadata`, and the old JSON key (no `data-`
                // prefix: that is the HTML attribute) for older clients.
                o["core-metadata"] = v.clone();
                o["dist-info-metadata"] = v;
            }
            o["yanked"] = match &f.yanked {
                Yanked::No => json!(false),
                Yanked::Reason(r) if r.is_empty() => json!(true),
                Yanked::Reason(r) => json!(r),
            };
            if let Some(s) = f.size {
                o["size"] = json!(s);
            }
            if let Some(t) = &f.upload_time {
                o["upload-time"] = json!(t);
            }
            o
        })
        .collect();
    let mut meta = json!({"api-version": api_version(p)});
    if !p.tracks.is_empty() {
        meta["tracks"] = json!(p.tracks);
    }
    if let Some(s) = p.last_serial {
        meta["_last-serial"] = json!(s);
    }
    let mut doc = json!({"meta": meta, "name": p.name, "versions": versions(p), "files": files});
    if !p.alternate_locations.is_empty() {
        doc["alternate-locations"] = json!(p.alternate_locations);
    }
    if let Some(s) = &p.status {
        doc["project-status"] = json!(s);
    }
    doc.to_string()
}

/// HTML attribute escaping.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#x27;"),
            c => o.push(c),
        }
    }
    o
}

/// Render a PEP 503 HTML project page.
pub fn render_html(p: &Project) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html>\n<head>\n<meta name=\"pypi:repository-version\" content=\"{}\">\n",
        api_version(p)
    );
    for t in &p.tracks {
        let _ = writeln!(o, "<meta name=\"pypi:tracks\" content=\"{}\">", escape(t));
    }
    for a in &p.alternate_locations {
        let _ = writeln!(
            o,
            "<meta name=\"pypi:alternate-locations\" content=\"{}\">",
            escape(a)
        );
    }
    if let Some(s) = &p.status {
        let _ = writeln!(
            o,
            "<meta name=\"pypi:project-status\" content=\"{}\">",
            escape(&s.status)
        );
        if let Some(r) = &s.reason {
            let _ = writeln!(
                o,
                "<meta name=\"pypi:project-status-reason\" content=\"{}\">",
                escape(r)
            );
        }
    }
    let _ = write!(
        o,
        "<title>Links for {}</title>\n</head>\n<body>\n<h1>Links for {}</h1>\n",
        escape(&p.name),
        escape(&p.name)
    );
    for f in &p.files {
        let mut href = f.url.clone();
        if let Some(h) = f.sha256() {
            let _ = write!(href, "#sha256={h}");
        }
        let _ = write!(o, "<a href=\"{}\"", escape(&href));
        if let Some(rp) = &f.requires_python {
            let _ = write!(o, " data-requires-python=\"{}\"", escape(rp));
        }
        match &f.core_metadata {
            Some(Some(h)) => {
                let _ = write!(
                    o,
                    " data-core-metadata=\"sha256={h}\" data-dist-info-metadata=\"sha256={h}\""
                );
            }
            Some(None) => {
                o.push_str(" data-core-metadata=\"true\" data-dist-info-metadata=\"true\"")
            }
            None => {}
        }
        if let Yanked::Reason(r) = &f.yanked {
            let _ = write!(o, " data-yanked=\"{}\"", escape(r));
        }
        let _ = writeln!(o, ">{}</a><br>", escape(&f.filename));
    }
    o.push_str("</body>\n</html>\n");
    o
}

/// The root index (`/simple/`), JSON.
pub fn render_index_json(names: &[String]) -> String {
    json!({"meta": {"api-version": "1.1"}, "projects": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()}).to_string()
}

/// The root index (`/simple/`), HTML.
pub fn render_index_html(names: &[String]) -> String {
    let mut o = String::from(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta name=\"pypi:repository-version\" content=\"1.1\">\n<title>Simple index</title>\n</head>\n<body>\n",
    );
    for n in names {
        let _ = writeln!(o, "<a href=\"{}/\">{}</a><br>", escape(n), escape(n));
    }
    o.push_str("</body>\n</html>\n");
    o
}

/// Response formats of the simple API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Html,
    /// Legacy `text/html`, same content as `Html`.
    TextHtml,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/vnd.pypi.simple.v1+json",
            Format::Html => "application/vnd.pypi.simple.v1+html",
            Format::TextHtml => "text/html",
        }
    }
}

/// PEP 691 content negotiation over an `Accept` header: the acceptable
/// format with the highest q-value, JSON first on ties, then versioned HTML,
/// then `text/html`. No header means `*/*`. `None`: nothing acceptable (406).
pub fn negotiate(accept: Option<&str>) -> Option<Format> {
    let accept = accept.unwrap_or("*/*");
    let mut best: Option<(f32, u8, Format)> = None;
    for part in accept.split(',') {
        let mut it = part.split(';');
        let mt = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = 1.0f32;
        for p in it {
            if let Some(v) = p.trim().strip_prefix("q=") {
                q = v.trim().parse().unwrap_or(0.0);
            }
        }
        if q <= 0.0 {
            continue;
        }
        let cands: &[(u8, Format)] =
            match mt.as_str() {
                "application/vnd.pypi.simple.v1+json"
                | "application/vnd.pypi.simple.latest+json" => &[(3, Format::Json)],
                "application/vnd.pypi.simple.v1+html"
                | "application/vnd.pypi.simple.latest+html" => &[(2, Format::Html)],
                "text/html" | "text/*" => &[(1, Format::TextHtml)],
                // A wildcard takes the server's preference, JSON.
                "*/*" | "application/*" => &[(0, Format::Json)],
                _ => &[],
            };
        for &(rank, f) in cands {
            if best.is_none_or(|(bq, br, _)| q > bq || (q == bq && rank > br)) {
                best = Some((q, rank, f));
            }
        }
    }
    best.map(|(_, _, f)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalize("Acme_Internal"), "acme-internal");
        assert_eq!(normalize("acme..internal"), "acme-internal");
        assert_eq!(normalize("ACME-._internal"), "acme-internal");
        assert!(is_valid_name("a.b-c_d"));
        assert!(!is_valid_name("../etc"));
        assert!(!is_valid_name("-a"));
    }

    #[test]
    fn negotiation_matches_pep_691() {
        let pip = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";
        assert_eq!(negotiate(Some(pip)), Some(Format::Json));
        assert_eq!(
            negotiate(Some("application/vnd.pypi.simple.v1+json, */*;q=0.1")),
            Some(Format::Json)
        );
        assert_eq!(negotiate(Some("text/html")), Some(Format::TextHtml));
        assert_eq!(
            negotiate(Some(
                "application/vnd.pypi.simple.v1+html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.2"
            )),
            Some(Format::Html)
        );
        assert_eq!(negotiate(Some("image/png")), None);
        assert_eq!(negotiate(None), Some(Format::Json));
        assert_eq!(
            negotiate(Some("application/vnd.pypi.simple.v1+json;q=0")),
            None
        );
    }

    #[test]
    fn html_round_trip() {
        let p = Project {
            name: "x".into(),
            files: vec![File {
                filename: "x-1.0-py3-none-any.whl".into(),
                url: "/files/x-1.0-py3-none-any.whl".into(),
                hashes: [("sha256".to_string(), "ab".to_string())].into(),
                requires_python: Some(">=3.8".into()),
                core_metadata: Some(Some("cd".into())),
                yanked: Yanked::Reason("bad <build>".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let html = render_html(&p);
        assert!(html.contains("data-requires-python=\"&gt;=3.8\""));
        let back = parse_html(&html, "X").unwrap();
        assert_eq!(back.files, p.files);
        let rendered = render_json(&p);
        let doc: Value = serde_json::from_str(&rendered).unwrap();
        assert!(doc["files"][0].get("dist-info-metadata").is_some());
        assert!(doc["files"][0].get("data-dist-info-metadata").is_none());
        // No size known: the page cannot claim PEP 700's 1.1.
        assert_eq!(doc["meta"]["api-version"], "1.0");
        let mut sized = p.clone();
        sized.files[0].size = Some(3);
        assert!(render_json(&sized).contains("\"api-version\":\"1.1\""));
        let js = parse_json(rendered.as_bytes()).unwrap();
        assert_eq!(js.files[0].yanked, p.files[0].yanked);
        assert_eq!(js.files[0].core_metadata, p.files[0].core_metadata);
        assert_eq!(version_of("x_y-2.0.1.tar.gz", "x-y"), Some("2.0.1"));
        assert_eq!(
            version_of("x_y-2.0-cp311-cp311-linux_x86_64.whl", "X.Y"),
            Some("2.0")
        );
    }

    #[test]
    fn versions_are_split_after_the_project_name_as_pip_splits_them() {
        // The version may hold a dash (pip reads `1.0-2` as 1.0.post2): it
        // is not the part after the last dash.
        assert_eq!(version_of("pkg-1.0-2.tar.gz", "pkg"), Some("1.0-2"));
        assert_eq!(version_of("my-pkg-1.0.tar.gz", "my_pkg"), Some("1.0"));
        assert_eq!(version_of("My.Pkg-1.0.ZIP", "my-pkg"), Some("1.0"));
        assert_eq!(version_of("my-pkg-1.0.tar.zst", "my-pkg"), Some("1.0"));
        // Another project's files, or no distribution format: unknown.
        assert_eq!(version_of("other-1.0.tar.gz", "pkg"), None);
        assert_eq!(version_of("other-1.0-py3-none-any.whl", "pkg"), None);
        assert_eq!(version_of("pkg-1.0.egg", "pkg"), None);
        assert_eq!(version_of("pkg-.tar.gz", "pkg"), None);
        assert_eq!(version_of("pkg-1.0-1-py3-none-any.whl", "pkg"), Some("1.0"));
    }
}
