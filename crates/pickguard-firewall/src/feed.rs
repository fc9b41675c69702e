//! Known-malicious (or otherwise blocked) packages from OSV advisories.
//!
//! The input is the OSV schema (<https://ossf.github.io/osv-schema/>): the
//! `MAL-` records of the OpenSSF malicious-packages data set, or any OSV file
//! for the PyPI ecosystem. A record is compiled, at import, into a [`Spec`]
//! per affected project; matching a file's version against it never fails
//! open: a range whose versions cannot be read, a record that names no
//! versions at all, and a file whose version cannot be read are all treated
//! as affected.

use pep440_rs::Version;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest OSV JSON document read (records are a few KB; all of PyPI's
/// advisories in one array would be far below this).
pub const MAX_RECORD_BYTES: u64 = 16 << 20;
/// Largest archive or download read.
pub const MAX_ARCHIVE_BYTES: u64 = 1 << 30;
/// Most files read from one directory or archive.
pub const MAX_FILES: usize = 2_000_000;

#[derive(Deserialize)]
struct OsvRecord {
    id: String,
    modified: String,
    #[serde(default)]
    withdrawn: Option<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    affected: Vec<OsvAffected>,
}

#[derive(Deserialize)]
struct OsvAffected {
    #[serde(default)]
    package: Option<OsvPackage>,
    #[serde(default)]
    ranges: Vec<OsvRange>,
    #[serde(default)]
    versions: Vec<String>,
}

#[derive(Deserialize)]
struct OsvPackage {
    ecosystem: String,
    name: String,
}

#[derive(Deserialize)]
struct OsvRange {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    events: Vec<OsvEvent>,
}

#[derive(Deserialize)]
struct OsvEvent {
    introduced: Option<String>,
    fixed: Option<String>,
    last_affected: Option<String>,
    /// GIT ranges only; an ECOSYSTEM event that is only a limit is skipped.
    limit: Option<String>,
    /// Keys this version of the schema does not know.
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// One event of an ECOSYSTEM range, versions already checked to parse.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
}

/// Which versions of one project an advisory covers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Every version (the usual shape of a `MAL-` record, and what anything
    /// unreadable compiles to).
    pub all: bool,
    /// Listed versions.
    #[serde(default)]
    pub versions: Vec<String>,
    /// ECOSYSTEM ranges.
    #[serde(default)]
    pub ranges: Vec<Vec<Event>>,
    /// Why `all` was set although the record did not say so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An advisory as stored: one row per affected project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Advisory {
    pub id: String,
    /// PEP 503-normalised.
    pub project: String,
    pub modified: String,
    pub withdrawn: Option<String>,
    pub summary: String,
    pub spec: Spec,
    /// Where it was imported from.
    pub source: String,
}

fn parse_version(v: &str) -> Option<Version> {
    v.trim().parse().ok()
}

impl Spec {
    /// Does this spec cover `version` (`None`: the file's version could not
    /// be read from its name)?
    pub fn covers(&self, version: Option<&str>) -> bool {
        if self.all {
            return true;
        }
        let Some(v) = version else {
            // Fail closed: some versions are affected and this one is unknown.
            return true;
        };
        let parsed = parse_version(v);
        // A local build (`1.0+evil`) is the listed release to pip's `==1.0`,
        // and to anyone reading the advisory: judged by its public part too.
        let public = parsed.as_ref().map(|p| p.clone().without_local());
        if self.versions.iter().any(|x| {
            x == v
                || match parse_version(x) {
                    Some(a) => parsed.as_ref() == Some(&a) || public.as_ref() == Some(&a),
                    None => false,
                }
        }) {
            return true;
        }
        let (Some(v), Some(public)) = (parsed, public) else {
            // An unreadable version cannot be told apart from a listed one
            // (pip may read `1.0-post1` as a listed `1.0.post1`): covered.
            return true;
        };
        if self.ranges.is_empty() {
            return false;
        }
        self.ranges
            .iter()
            .any(|r| in_range(&v, r) || in_range(&public, r))
    }
}

impl Spec {
    /// The versions covered, in words ("every version", "2.0.0, 1.0 up to
    /// before 1.2.3").
    pub fn describe(&self) -> String {
        if self.all {
            return "every version".into();
        }
        let mut parts = self.versions.clone();
        for r in &self.ranges {
            let mut open: Option<&str> = None;
            let mut out = Vec::new();
            for e in r {
                match e {
                    Event::Introduced(v) => open = Some(v),
                    Event::Fixed(v) => {
                        out.push(match open.take() {
                            Some("0") | None => format!("before {v}"),
                            Some(o) => format!("{o} up to before {v}"),
                        });
                    }
                    Event::LastAffected(v) => {
                        out.push(match open.take() {
                            Some("0") | None => format!("up to {v}"),
                            Some(o) => format!("{o} up to {v}"),
                        });
                    }
                }
            }
            match open {
                Some("0") => out.push("every version".into()),
                Some(o) => out.push(format!("{o} and later")),
                None => {}
            }
            parts.extend(out);
        }
        parts.join(", ")
    }
}

/// The OSV evaluation of one range: events in version order ("0" first);
/// `introduced` opens, `fixed` closes at the version, `last_affected` after it.
fn in_range(v: &Version, events: &[Event]) -> bool {
    let key = |e: &Event| -> Option<Version> {
        let s = match e {
            Event::Introduced(s) | Event::Fixed(s) | Event::LastAffected(s) => s,
        };
        if s == "0" { None } else { parse_version(s) }
    };
    let mut sorted: Vec<(Option<Version>, &Event)> = events.iter().map(|e| (key(e), e)).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut affected = false;
    for (at, e) in sorted {
        match e {
            Event::Introduced(_) => {
                if at.as_ref().is_none_or(|a| v >= a) {
                    affected = true;
                }
            }
            Event::Fixed(_) => {
                if at.as_ref().is_some_and(|a| v >= a) {
                    affected = false;
                }
            }
            Event::LastAffected(_) => {
                if at.as_ref().is_some_and(|a| v > a) {
                    affected = false;
                }
            }
        }
    }
    affected
}

/// Compile one affected entry. Never fails: what cannot be read widens the
/// spec to every version, with a note saying why.
fn compile(a: &OsvAffected) -> Spec {
    let mut spec = Spec {
        versions: a.versions.clone(),
        ..Spec::default()
    };
    let mut unreadable = Vec::new();
    for r in &a.ranges {
        match r.kind.as_str() {
            "ECOSYSTEM" | "SEMVER" => {
                let mut events = Vec::new();
                for e in &r.events {
                    let (ctor, s): (fn(String) -> Event, &String) =
                        match (&e.introduced, &e.fixed, &e.last_affected) {
                            (Some(s), None, None) => (Event::Introduced, s),
                            (None, Some(s), None) => (Event::Fixed, s),
                            (None, None, Some(s)) => (Event::LastAffected, s),
                            // `limit` (git only): skipped. Anything else
                            // (a key a later schema adds) cannot be read.
                            (None, None, None) if e.limit.is_some() && e.other.is_empty() => {
                                continue;
                            }
                            (None, None, None) => {
                                let keys: Vec<&str> = e.other.keys().map(String::as_str).collect();
                                unreadable.push(format!("an event with unknown keys {keys:?}"));
                                continue;
                            }
                            _ => {
                                unreadable.push("an event with more than one kind".to_owned());
                                continue;
                            }
                        };
                    if s != "0" && parse_version(s).is_none() {
                        unreadable.push(format!("version {s:?} is not PEP 440"));
                        continue;
                    }
                    events.push(ctor(s.clone()));
                }
                if !events.iter().any(|e| matches!(e, Event::Introduced(_))) {
                    unreadable.push("a range with no introduced event".to_owned());
                }
                spec.ranges.push(events);
            }
            // GIT ranges are commits: meaningful only beside versions or
            // ECOSYSTEM ranges, which the record then also has.
            _ => {}
        }
    }
    if !unreadable.is_empty() {
        spec.all = true;
        spec.ranges.clear();
        spec.note = Some(format!(
            "every version treated as affected: {}",
            unreadable.join("; ")
        ));
    } else if spec.versions.is_empty() && spec.ranges.is_empty() {
        spec.all = true;
        if !a.ranges.is_empty() {
            spec.note = Some(
                "every version treated as affected: the record gives no versions and no \
                 ECOSYSTEM range"
                    .into(),
            );
        }
    }
    spec
}

/// What one import did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    /// Documents read (files, archive members, downloads).
    pub documents: u64,
    /// Records for PyPI.
    pub records: u64,
    /// Rows (advisory, project) that are new or newer than what was stored.
    pub stored: u64,
    /// Rows already stored with the same or a later `modified`.
    pub unchanged: u64,
    /// Records marked withdrawn (kept, not enforced).
    pub withdrawn: u64,
    /// Records with no PyPI package.
    pub other_ecosystems: u64,
    /// Records skipped by `malicious_only`.
    pub not_malicious: u64,
    /// Sources or documents that could not be read, with why. A non-empty
    /// list means the feed is incomplete.
    pub errors: Vec<String>,
    /// What an operator should know that does not make the feed incomplete
    /// (blocks kept although a later record version dropped them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Parse one OSV document (a record, or an array of records) into stored
/// rows. `source` names the document in errors and rows.
pub fn parse_document(
    bytes: &[u8],
    source: &str,
    malicious_only: bool,
    report: &mut ImportReport,
) -> Vec<Advisory> {
    report.documents += 1;
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            report.errors.push(format!("{source}: not JSON: {e}"));
            return vec![];
        }
    };
    let items = match value {
        serde_json::Value::Array(a) => a,
        v => vec![v],
    };
    let mut out = Vec::new();
    for item in items {
        let rec: OsvRecord = match serde_json::from_value(item.clone()) {
            Ok(r) => r,
            Err(e) => {
                // The package names may still be readable: a record that
                // names a PyPI project blocks all of it rather than nothing.
                let rows = salvage(&item, source, &e.to_string(), malicious_only);
                report.errors.push(format!(
                    "{source}: not an OSV record: {e}{}",
                    if rows.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; every version of {} blocked",
                            rows.iter()
                                .map(|r| r.project.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ));
                report.records += u64::from(!rows.is_empty());
                out.extend(rows);
                continue;
            }
        };
        let pypi: Vec<&OsvAffected> = rec
            .affected
            .iter()
            .filter(|a| {
                a.package
                    .as_ref()
                    .is_some_and(|p| p.ecosystem.trim().eq_ignore_ascii_case("pypi"))
            })
            .collect();
        if pypi.is_empty() {
            report.other_ecosystems += 1;
            continue;
        }
        if malicious_only && !rec.id.starts_with("MAL-") {
            report.not_malicious += 1;
            continue;
        }
        let rfc3339 = |t: &str| {
            time::OffsetDateTime::parse(t.trim(), &time::format_description::well_known::Rfc3339)
                .is_ok()
        };
        if !rfc3339(&rec.modified) {
            // A garbage date would win or lose every later comparison: the
            // record's names are blocked entirely, dated as old as can be,
            // so any readable version of the record replaces it.
            let rows = salvage(&item, source, "its modified time is not RFC 3339", false);
            report.errors.push(format!(
                "{source}: {}: modified {:?} is not an RFC 3339 time; every version of the projects it names is blocked until a readable version of the record arrives",
                rec.id, rec.modified
            ));
            report.records += u64::from(!rows.is_empty());
            out.extend(rows);
            continue;
        }
        let mut withdrawn = rec.withdrawn.clone();
        if withdrawn.as_deref().is_some_and(|w| !rfc3339(w)) {
            report.errors.push(format!(
                "{source}: {}: withdrawn {:?} is not an RFC 3339 time; the record is kept in force",
                rec.id, rec.withdrawn
            ));
            withdrawn = None;
        }
        report.records += 1;
        if withdrawn.is_some() {
            report.withdrawn += 1;
        }
        let summary = rec
            .summary
            .clone()
            .or_else(|| {
                rec.details
                    .as_deref()
                    .map(|d| d.lines().next().unwrap_or("").to_owned())
            })
            .unwrap_or_default();
        let summary: String = summary.chars().take(300).collect();
        // One row per project: entries for the same project are merged.
        let mut rows: Vec<Advisory> = Vec::new();
        for a in pypi {
            let Some(p) = &a.package else { continue };
            let project = pickguard_index::normalize(p.name.trim());
            if project.is_empty() {
                report
                    .errors
                    .push(format!("{source}: {}: an empty package name", rec.id));
                continue;
            }
            let spec = compile(a);
            match rows.iter_mut().find(|r| r.project == project) {
                Some(r) => merge(&mut r.spec, spec),
                None => rows.push(Advisory {
                    id: rec.id.clone(),
                    project,
                    modified: rec.modified.clone(),
                    withdrawn: withdrawn.clone(),
                    summary: summary.clone(),
                    spec,
                    source: source.to_owned(),
                }),
            }
        }
        out.extend(rows);
    }
    out
}

/// The oldest RFC 3339 time: what a salvaged record is dated.
const EPOCH: &str = "1970-01-01T00:00:00Z";

/// The PyPI rows of a record that does not follow the schema: every named
/// project, every version, dated [`EPOCH`] so a readable record replaces it.
fn salvage(
    item: &serde_json::Value,
    source: &str,
    why: &str,
    malicious_only: bool,
) -> Vec<Advisory> {
    let id = item
        .get("id")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("unreadable record in {source}"));
    if malicious_only && !id.starts_with("MAL-") && item.get("id").is_some_and(|v| v.is_string()) {
        return vec![];
    }
    let mut rows: Vec<Advisory> = Vec::new();
    let Some(affected) = item.get("affected").and_then(|a| a.as_array()) else {
        return rows;
    };
    for a in affected {
        let pkg = a.get("package");
        let eco = pkg
            .and_then(|p| p.get("ecosystem"))
            .and_then(|e| e.as_str());
        let name = pkg.and_then(|p| p.get("name")).and_then(|n| n.as_str());
        let (Some(eco), Some(name)) = (eco, name) else {
            continue;
        };
        if !eco.trim().eq_ignore_ascii_case("pypi") {
            continue;
        }
        let project = pickguard_index::normalize(name.trim());
        if project.is_empty() || rows.iter().any(|r| r.project == project) {
            continue;
        }
        rows.push(Advisory {
            id: id.clone(),
            project,
            modified: EPOCH.into(),
            withdrawn: None,
            summary: item
                .get("summary")
                .and_then(|s| s.as_str())
                .unwrap_or("")
                .chars()
                .take(300)
                .collect(),
            spec: Spec {
                all: true,
                note: Some(format!(
                    "every version treated as affected: the record could not be read ({why})"
                )),
                ..Spec::default()
            },
            source: source.to_owned(),
        });
    }
    rows
}

fn merge(into: &mut Spec, other: Spec) {
    if other.all {
        into.all = true;
        into.note = into.note.take().or(other.note);
    }
    into.versions.extend(other.versions);
    into.ranges.extend(other.ranges);
}

fn read_bounded(r: impl Read, limit: u64, what: &str) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    r.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{what}: {e}"))?;
    if buf.len() as u64 > limit {
        return Err(format!("{what}: larger than {limit} bytes"));
    }
    Ok(buf)
}

/// Read the OSV documents of a zip archive (OSV's `all.zip` per ecosystem).
pub fn read_zip(
    bytes: &[u8],
    source: &str,
    malicious_only: bool,
    report: &mut ImportReport,
) -> Vec<Advisory> {
    let mut zip = match zip::ZipArchive::new(std::io::Cursor::new(bytes)) {
        Ok(z) => z,
        Err(e) => {
            report
                .errors
                .push(format!("{source}: not a readable zip: {e}"));
            return vec![];
        }
    };
    if zip.len() > MAX_FILES {
        report.errors.push(format!(
            "{source}: {} members, more than {MAX_FILES}",
            zip.len()
        ));
        return vec![];
    }
    let mut out = Vec::new();
    let mut total = 0u64;
    for i in 0..zip.len() {
        let mut f = match zip.by_index(i) {
            Ok(f) => f,
            Err(e) => {
                report.errors.push(format!("{source}: member {i}: {e}"));
                continue;
            }
        };
        if f.is_dir() || !f.name().ends_with(".json") {
            continue;
        }
        let name = format!("{source}!{}", f.name());
        match read_bounded(&mut f, MAX_RECORD_BYTES, &name) {
            Ok(b) => {
                total += b.len() as u64;
                if total > 4 * MAX_ARCHIVE_BYTES {
                    report.errors.push(format!(
                        "{source}: expands past {} bytes; stopped",
                        4 * MAX_ARCHIVE_BYTES
                    ));
                    break;
                }
                out.extend(parse_document(&b, &name, malicious_only, report));
            }
            Err(e) => report.errors.push(e),
        }
    }
    out
}

/// Read a file, a directory (recursively; `.json` files and `.zip`
/// archives; symbolic links are not followed), or an `http(s)://` URL.
pub fn read_source(source: &str, malicious_only: bool, report: &mut ImportReport) -> Vec<Advisory> {
    if source.starts_with("http://") || source.starts_with("https://") {
        return match fetch_url(source) {
            Ok(b) => read_bytes(&b, source, malicious_only, report),
            Err(e) => {
                report.errors.push(format!("{source}: {e}"));
                vec![]
            }
        };
    }
    let root = PathBuf::from(source);
    let meta = match std::fs::metadata(&root) {
        Ok(m) => m,
        Err(e) => {
            report.errors.push(format!("{source}: {e}"));
            return vec![];
        }
    };
    if !meta.is_dir() {
        return read_file(&root, malicious_only, report);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) => {
                report.errors.push(format!("{}: {e}", d.display()));
                continue;
            }
        };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                let n = p.to_string_lossy();
                if n.ends_with(".json") || n.ends_with(".zip") {
                    seen += 1;
                    if seen > MAX_FILES {
                        report
                            .errors
                            .push(format!("{source}: more than {MAX_FILES} files; stopped"));
                        return out;
                    }
                    out.extend(read_file(&p, malicious_only, report));
                }
            }
        }
    }
    out
}

fn read_file(p: &Path, malicious_only: bool, report: &mut ImportReport) -> Vec<Advisory> {
    let name = p.display().to_string();
    let limit = if name.ends_with(".zip") {
        MAX_ARCHIVE_BYTES
    } else {
        MAX_RECORD_BYTES
    };
    match std::fs::File::open(p)
        .map_err(|e| format!("{name}: {e}"))
        .and_then(|f| read_bounded(f, limit, &name))
    {
        Ok(b) => read_bytes(&b, &name, malicious_only, report),
        Err(e) => {
            report.errors.push(e);
            vec![]
        }
    }
}

fn read_bytes(
    b: &[u8],
    source: &str,
    malicious_only: bool,
    report: &mut ImportReport,
) -> Vec<Advisory> {
    if b.starts_with(b"PK\x03\x04") || b.starts_with(b"PK\x05\x06") {
        read_zip(b, source, malicious_only, report)
    } else {
        parse_document(b, source, malicious_only, report)
    }
}

fn fetch_url(url: &str) -> Result<Vec<u8>, String> {
    // A blocking client on a thread of its own: imports run from the CLI and
    // from a blocking task of the server.
    let url = url.to_owned();
    std::thread::spawn(move || -> Result<Vec<u8>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let client = reqwest::Client::builder()
                .user_agent(concat!("pickguard-firewall/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(std::time::Duration::from_secs(15))
                .read_timeout(std::time::Duration::from_secs(60))
                .build()
                .map_err(|e| e.to_string())?;
            let mut resp = client.get(&url).send().await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("answered {}", resp.status()));
            }
            let mut out = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
                out.extend_from_slice(&chunk);
                if out.len() as u64 > MAX_ARCHIVE_BYTES {
                    return Err(format!("larger than {MAX_ARCHIVE_BYTES} bytes"));
                }
            }
            Ok(out)
        })
    })
    .join()
    .map_err(|_| "the download thread panicked".to_owned())?
}

/// Read every source and store what it holds. Sources that fail are in
/// `errors`; what the others hold is stored all the same.
pub fn import(db: &crate::state::Db, sources: &[String], malicious_only: bool) -> ImportReport {
    let mut report = ImportReport::default();
    for s in sources {
        let rows = read_source(s, malicious_only, &mut report);
        match db.store_advisories(&rows) {
            Ok((stored, unchanged, kept)) => {
                report.stored += stored;
                report.unchanged += unchanged;
                report.notes.extend(kept);
            }
            Err(e) => report.errors.push(format!("{s}: storing: {e}")),
        }
    }
    if report.documents == 0 && !sources.is_empty() {
        // An empty checkout, or a directory of symbolic links (not followed).
        report
            .errors
            .push("no .json or .zip document was found in the sources".into());
    }
    report
}

/// The last scheduled import, for `/admin/feed`.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub finished: String,
    pub report: ImportReport,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(json: &str) -> (Vec<Advisory>, ImportReport) {
        let mut r = ImportReport::default();
        let a = parse_document(json.as_bytes(), "t.json", false, &mut r);
        (a, r)
    }

    #[test]
    fn a_mal_record_covers_every_version() {
        let (a, r) = one(
            r#"{"id":"MAL-2022-7355","modified":"2024-01-01T00:00:00Z","summary":"Malicious code in torchtriton (PyPI)",
                "affected":[{"package":{"ecosystem":"PyPI","name":"TorchTriton"},
                "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}]}"#,
        );
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].project, "torchtriton");
        for v in ["0.0.1", "3.0.0", "99"] {
            assert!(a[0].spec.covers(Some(v)), "{v}");
        }
        assert!(a[0].spec.covers(None));
    }

    #[test]
    fn ranges_follow_osv_and_pep440() {
        let (a, _) = one(
            r#"{"id":"PYSEC-1","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"PyPI","name":"x"},
                "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"1.0"},{"fixed":"1.2.3"},{"introduced":"2.0rc1"},{"last_affected":"2.1"}]}],
                "versions":["0.5"]}]}"#,
        );
        let s = &a[0].spec;
        assert!(!s.all);
        for (v, want) in [
            ("0.4", false),
            ("0.5", true),
            ("0.5.0", true),
            ("1.0", true),
            ("1.2.2", true),
            ("1.2.3", false),
            ("1.9", false),
            ("2.0rc1", true),
            ("2.1", true),
            ("2.1.post1", false),
            ("3", false),
            // Local builds are judged by their public part as well.
            ("0.5+evil", true),
            ("2.1+vendor.1", true),
            ("1.2.3+x", false),
            ("0.4+x", false),
        ] {
            assert_eq!(s.covers(Some(v)), want, "{v}");
        }
        // Unknown or unreadable versions fail closed.
        assert!(s.covers(None));
        assert!(s.covers(Some("not-a-version")));
        let listed = Spec {
            versions: vec!["1.0.post1".into()],
            ..Spec::default()
        };
        assert!(
            listed.covers(Some("post1")),
            "an unreadable version with a list"
        );
        assert!(!listed.covers(Some("1.0")));
        assert!(listed.covers(Some("1.0.post1+evil")));
        assert_eq!(
            s.describe(),
            "0.5, 1.0 up to before 1.2.3, 2.0rc1 up to 2.1"
        );
    }

    #[test]
    fn unreadable_records_widen_never_narrow() {
        let (a, _) = one(
            r#"{"id":"MAL-x","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"PyPI","name":"x"},
                "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"1.0"},{"fixed":"what?"}]}]}]}"#,
        );
        assert!(a[0].spec.all);
        assert!(a[0].spec.note.as_deref().unwrap().contains("what?"));
        let (a, _) = one(
            r#"{"id":"MAL-y","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"PyPI","name":"y"},
                "ranges":[{"type":"GIT","repo":"https://x","events":[{"introduced":"abc"}]}]}]}"#,
        );
        assert!(a[0].spec.all);
        let (a, _) = one(
            r#"{"id":"MAL-z","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"PyPI","name":"z"}}]}"#,
        );
        assert!(a[0].spec.all);
        // A range that only fixes (no introduced) is not read as "nothing".
        let (a, _) = one(
            r#"{"id":"MAL-w","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"PyPI","name":"w"},
                "ranges":[{"type":"ECOSYSTEM","events":[{"fixed":"2.0"}]}]}]}"#,
        );
        assert!(a[0].spec.all);
    }

    #[test]
    fn other_ecosystems_malformed_and_filtered_records_are_counted() {
        let mut r = ImportReport::default();
        let a = parse_document(
            br#"[{"id":"MAL-1","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"x"}}]},
                 {"id":"PYSEC-2","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"PyPI","name":"x"}}]},
                 {"nope":1}]"#,
            "t.json",
            true,
            &mut r,
        );
        assert!(a.is_empty());
        assert_eq!(r.other_ecosystems, 1);
        assert_eq!(r.not_malicious, 1);
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        parse_document(b"{", "bad.json", false, &mut r);
        assert_eq!(r.errors.len(), 2);
        // Careless spellings still count; a garbage date blocks the names
        // entirely, dated so that any readable version replaces it.
        let a = parse_document(
            br#"[{"id":"MAL-3","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"pypi","name":" spacepkg "}}]},
                 {"id":"MAL-4","modified":"withdrawn","affected":[{"package":{"ecosystem":"PyPI","name":"x"}}]},
                 {"id":"MAL-5","modified":"2024-01-01T00:00:00Z","withdrawn":"yes","affected":[{"package":{"ecosystem":"PyPI","name":"y"}}]}]"#,
            "t.json",
            false,
            &mut r,
        );
        assert_eq!(a.len(), 3, "{a:?}");
        assert_eq!(a[0].project, "spacepkg");
        assert!(a[1].id == "MAL-4" && a[1].spec.all && a[1].modified == EPOCH);
        assert_eq!(
            a[2].withdrawn, None,
            "an unreadable withdrawn date keeps the record in force"
        );
        assert_eq!(r.errors.len(), 4, "{:?}", r.errors);
    }

    #[test]
    fn records_off_the_schema_still_block_the_names_they_give() {
        // `versions: null`, no `modified`, an event with a key this schema
        // does not know: the names are readable, so they are blocked.
        let (a, r) = one(
            r#"[{"id":"MAL-n","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"PyPI","name":"nullpkg"},"versions":null}]},
                {"id":"MAL-m","affected":[{"package":{"ecosystem":"PyPI","name":"Nomod_Pkg"},"versions":["1.0"]},
                                          {"package":{"ecosystem":"npm","name":"other"}}]},
                {"id":"MAL-e","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"PyPI","name":"evpkg"},
                  "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"2.0"},{"introduced_again":"3.0"}]}]}]},
                {"id":"MAL-l","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"PyPI","name":"limitpkg"},
                  "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"2.0"},{"limit":"*"}]}]}]}]"#,
        );
        assert_eq!(a.len(), 4, "{a:?}");
        assert!(a[0].project == "nullpkg" && a[0].spec.all, "{:?}", a[0]);
        assert!(a[1].project == "nomod-pkg" && a[1].spec.all && a[1].modified == EPOCH);
        assert!(a[2].project == "evpkg" && a[2].spec.all, "{:?}", a[2]);
        assert!(
            a[2].spec
                .note
                .as_deref()
                .unwrap()
                .contains("introduced_again")
        );
        assert!(a[2].spec.covers(Some("5.0")));
        assert!(
            !a[3].spec.all && !a[3].spec.covers(Some("2.0")),
            "a limit is not unknown"
        );
        assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
        assert!(
            r.errors.iter().all(|e| e.contains("blocked")),
            "{:?}",
            r.errors
        );
    }
}
