//! `pickguard audit`.

use crate::cli::{AuditArgs, AuditCheck, Format};
use anyhow::{Context, Result, bail};
use pickguard_audit::{Check, Options, Report, Rule, audit, claims_json};
use serde_json::json;

fn firewall_claims(url: &str, token: Option<&str>) -> Result<Vec<String>> {
    let token = token
        .map(str::to_owned)
        .or_else(|| std::env::var("PICKGUARD_ADMIN_TOKEN").ok())
        .context("--firewall needs --firewall-token or PICKGUARD_ADMIN_TOKEN")?;
    let url = format!("{}/admin/claims", url.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let doc: serde_json::Value = rt
        .block_on(async {
            let r = reqwest::Client::new()
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await?
                .error_for_status()?;
            r.json::<serde_json::Value>().await
        })
        .with_context(|| format!("reading claims from {url}"))?;
    Ok(claims_from_json(&doc))
}

/// Names, pages and their failures, from the network (`--online`).
struct Net {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

/// An answer body is read to this size at most.
const MAX_ONLINE_BODY: usize = 64 << 20;
/// Private names asked of the public index at most.
const MAX_ONLINE_NAMES: usize = 5000;

impl Net {
    fn new() -> Result<Net> {
        Ok(Net {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            client: reqwest::Client::builder()
                .user_agent(concat!("pickguard-audit/", env!("CARGO_PKG_VERSION")))
                // An index that sends the audit elsewhere (a login page, a
                // mirror) is not answering for itself.
                .redirect(reqwest::redirect::Policy::custom(|a| {
                    let same = a.previous().first().is_some_and(|first| {
                        first.host_str() == a.url().host_str()
                            && first.port_or_known_default() == a.url().port_or_known_default()
                    });
                    if a.previous().len() >= 5 {
                        a.error("too many redirects")
                    } else if same {
                        a.follow()
                    } else {
                        a.error("redirected to another host")
                    }
                }))
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
        })
    }

    /// (status, content type, body) of a GET asking for PEP 691 JSON first.
    fn get(&self, url: &str) -> Result<(u16, String, Vec<u8>), String> {
        self.rt.block_on(async {
            let mut r = self
                .client
                .get(url)
                .header(
                    "Accept",
                    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01",
                )
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            let status = r.status().as_u16();
            let ctype = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let mut body = Vec::new();
            while let Some(c) = r.chunk().await.map_err(|e| e.without_url().to_string())? {
                body.extend_from_slice(&c);
                if body.len() > MAX_ONLINE_BODY {
                    return Err(format!("the answer passed {MAX_ONLINE_BODY} bytes"));
                }
            }
            Ok((status, ctype, body))
        })
    }
}

/// The project names a simple-API root lists (PEP 691 JSON or PEP 503 HTML).
/// Strict: an answer that is not an index root (a login or error page, JSON
/// of another shape) is an error, and so is a root that lists nothing — the
/// audit cannot tell "serves nothing" from "did not say" (a pickguard
/// firewall lists its claims only to its admin token).
fn root_names(ctype: &str, body: &[u8]) -> Result<Vec<String>, String> {
    let ctype = ctype.to_ascii_lowercase();
    let names = if ctype.contains("json") {
        let doc: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not a PEP 691 index: {e}"))?;
        let list = doc["projects"]
            .as_array()
            .ok_or("not a PEP 691 index: no \"projects\" list")?;
        let mut out = Vec::with_capacity(list.len());
        for p in list {
            match p["name"].as_str() {
                Some(n) if pickguard_index::is_valid_name(n) => {
                    out.push(pickguard_index::normalize(n))
                }
                _ => {
                    return Err(format!(
                        "not a PEP 691 index: a project entry {p} has no valid name"
                    ));
                }
            }
        }
        out
    } else if ctype.contains("html") {
        // PEP 503: one anchor per project, its href the project's URL (a
        // path ending in '/', whose last segment normalises to the text).
        let text = String::from_utf8_lossy(body);
        let mut out = Vec::new();
        let mut rest = text.as_ref();
        while let Some(i) = rest.find("<a") {
            rest = &rest[i + 2..];
            let Some(gt) = rest.find('>') else { break };
            let Some(end) = rest[gt..].find("</a>") else {
                break;
            };
            let attrs = &rest[..gt];
            let name = rest[gt + 1..gt + end].trim();
            let href = attrs
                .split("href=")
                .nth(1)
                .map(|h| h.trim_start_matches(['"', '\'']))
                .and_then(|h| h.split(['"', '\'']).next())
                .unwrap_or("");
            let segment = href.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            let project_link = href.ends_with('/')
                && pickguard_index::is_valid_name(name)
                && pickguard_index::normalize(segment) == pickguard_index::normalize(name);
            if !project_link {
                return Err(format!(
                    "not a PEP 503 index: a link {name:?} -> {href:?} is not a project's"
                ));
            }
            out.push(pickguard_index::normalize(name));
            rest = &rest[gt + end..];
        }
        out
    } else {
        return Err(format!("not a simple-API index (content type {ctype:?})"));
    };
    if names.is_empty() {
        return Err("the index lists no projects (an index that lists its names only to some users, such as a pickguard firewall without its admin token, cannot be audited this way: use --firewall, or --private)".into());
    }
    Ok(names)
}

/// Is this answer a project page (what the public index serves for a name
/// it has), as opposed to an error or maintenance page?
fn project_page(ctype: &str, body: &[u8], name: &str) -> Result<pickguard_index::Project, String> {
    let ctype = ctype.to_ascii_lowercase();
    if ctype.contains("json") {
        return pickguard_index::parse_json(body).map_err(|e| e.0);
    }
    if !ctype.contains("html") {
        return Err(format!("not a project page (content type {ctype:?})"));
    }
    let text = String::from_utf8_lossy(body);
    let p = pickguard_index::parse_html(&text, name).map_err(|e| e.0)?;
    // PyPI and PEP 629 indexes mark their pages; a page with files is one
    // too. Anything else (a maintenance page) says nothing of the name.
    if p.files.is_empty() && !text.contains("pypi:repository-version") {
        return Err("not a project page (no files and no pypi:repository-version)".into());
    }
    Ok(p)
}

/// `--online`: names the private indexes serve become private names (the
/// audit runs again with them), then the public index is asked about each.
fn online(args: &AuditArgs, mut opts: Options, mut report: Report) -> Result<Report> {
    let net = Net::new()?;
    let mut failures = Vec::new();
    let mut served = Vec::new();
    for idx in report.inputs.private_indexes.clone() {
        let url = format!("{}/", idx.trim_end_matches('/'));
        match net.get(&url) {
            Ok((200, ctype, body)) => match root_names(&ctype, &body) {
                Ok(names) => served.extend(names),
                Err(e) => failures.push(format!(
                    "private index {}: {e}",
                    pickguard_audit::redact(&url)
                )),
            },
            Ok((status, ..)) => failures.push(format!(
                "private index {}: answered HTTP {status} for its list of names",
                pickguard_audit::redact(&url)
            )),
            Err(e) => failures.push(format!(
                "private index {}: {e}",
                pickguard_audit::redact(&url)
            )),
        }
    }
    let known: std::collections::BTreeSet<String> = report.private_names.iter().cloned().collect();
    let new: Vec<String> = served.into_iter().filter(|n| !known.contains(n)).collect();
    if !new.is_empty() {
        opts.private.extend(new.iter().cloned());
        let again = audit(&args.dir, &opts);
        report = again;
        for n in &new {
            if !report.private_names.contains(n) {
                report.private_names.push(n.clone());
            }
        }
        report.private_names.sort();
        report.private_names.dedup();
    }
    let patterns: Vec<&str> = opts
        .private
        .iter()
        .filter(|p| p.contains(['*', '?', '[']))
        .map(String::as_str)
        .collect();
    if !patterns.is_empty() {
        report.inputs.warnings.push(format!(
            "--online asks the public index about names, not patterns: {} was not asked (names matching it that the project uses were)",
            patterns.join(", ")
        ));
    }
    let public = format!("{}/", args.online_index.trim_end_matches('/'));
    let mut answers = Vec::new();
    let names: Vec<String> = report.private_names.clone();
    if names.len() > MAX_ONLINE_NAMES {
        failures.push(format!(
            "{} private names; only the first {MAX_ONLINE_NAMES} were asked of the public index",
            names.len()
        ));
    }
    for name in names.iter().take(MAX_ONLINE_NAMES) {
        let url = format!("{public}{name}/");
        match net.get(&url) {
            Ok((404, ..)) => answers.push((name.clone(), pickguard_audit::PublicState::Absent)),
            Ok((200, ctype, body)) => match project_page(&ctype, &body, name) {
                Ok(p) => {
                    let first = p.files.iter().filter_map(|f| f.upload_time.clone()).min();
                    answers.push((
                        name.clone(),
                        pickguard_audit::PublicState::Present {
                            versions: pickguard_index::versions(&p),
                            first_upload: first,
                        },
                    ));
                }
                Err(e) => failures.push(format!("{}: {e}", pickguard_audit::redact(&url))),
            },
            Ok((status, ..)) => failures.push(format!(
                "{}: answered HTTP {status}",
                pickguard_audit::redact(&url)
            )),
            Err(e) => failures.push(format!("{}: {e}", pickguard_audit::redact(&url))),
        }
    }
    pickguard_audit::add_online(&mut report, &public, &answers);
    for f in failures {
        report
            .inputs
            .warnings
            .push(format!("{f}{}", pickguard_audit::ONLINE_UNREAD));
    }
    Ok(report)
}

fn claims_from_json(doc: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = doc["claims"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for key in ["patterns", "names"] {
        out.extend(
            doc[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        );
    }
    out
}

pub fn run(args: AuditArgs) -> Result<u8> {
    if !args.dir.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    let mut private = args.private.clone();
    let mut private_indexes = args.private_index.clone();
    if let Some(f) = &args.claims {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(doc) => private.extend(claims_from_json(&doc)),
            Err(_) => private.extend(
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or("").trim().to_owned())
                    .filter(|l| !l.is_empty()),
            ),
        }
    }
    if let Some(url) = &args.firewall {
        private.extend(firewall_claims(url, args.firewall_token.as_deref())?);
        // The firewall's own simple API is a private index.
        private_indexes.push(format!("{}/simple/", url.trim_end_matches('/')));
    }
    let opts = Options {
        private,
        public_indexes: args.public_index.clone(),
        private_indexes,
        host_config: args.host_config,
        checks: args
            .check
            .iter()
            .map(|c| match c {
                AuditCheck::Confusion => Check::Confusion,
                AuditCheck::Distributed => Check::Distributed,
                AuditCheck::Release => Check::Release,
            })
            .collect(),
    };
    let mut report = audit(&args.dir, &opts);
    if args.online {
        report = online(&args, opts, report)?;
    }
    if let Some(p) = &args.export_claims {
        std::fs::write(p, claims_json(&report) + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
    }
    for w in &report.inputs.warnings {
        eprintln!("pickguard: warning: {w}");
    }
    let shown = match args.format {
        Format::Text => text(&report),
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Sarif => sarif(&report) + "\n",
    };
    // A closed pipe (`| head`) ends the output, not the verdict.
    crate::printer::write(&shown)?;
    if report.exposed() {
        return Ok(1);
    }
    // Something that decides the answer could not be read: not "no finding".
    if !report.unread().is_empty() {
        return Ok(2);
    }
    // None of the checks found anything to read: nothing was checked.
    if !report.checks.iter().any(|c| report.checked(*c)) {
        return Ok(2);
    }
    Ok(0)
}

fn text(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    for c in &r.checks {
        let checked = r.checked(*c);
        let found = r.findings.iter().filter(|f| f.check == *c).count();
        let line = match (c, checked, found) {
            (Check::Confusion, false, _) => format!(
                "dependency confusion: nothing to audit, no pip, uv, poetry, pdm or pipenv configuration, requirements, lockfile or install command found ({} file(s) read)",
                r.inputs.files.len()
            ),
            (Check::Confusion, true, 0) if r.confusion_unread() > 0 => format!(
                "dependency confusion: incomplete, {} file(s) or index(es) could not be read or asked (see the warnings); nothing is said of them ({} place(s) that choose indexes were read, {} private name(s))",
                r.confusion_unread(),
                r.inputs.contexts.len(),
                r.private_names.len()
            ),
            (Check::Confusion, true, 0) => format!(
                "no dependency-confusion exposure found: {} place(s) that choose indexes, none merges an undeclared index with a public one ({} file(s) read, {} private name(s){})",
                r.inputs.contexts.len(),
                r.inputs.files.len(),
                r.private_names.len(),
                if r.private_names.is_empty() {
                    ", none needed"
                } else {
                    ""
                }
            ),
            (Check::Distributed, false, _) if !r.distributed.unread.is_empty() => format!(
                "distributed exposure: not checked, {} file(s) could not be read",
                r.distributed.unread.len()
            ),
            (Check::Distributed, false, _) => format!(
                "distributed exposure: not checked, no torchrun/torch.distributed launch, TCPStore, init_process_group or MASTER_ADDR found ({} file(s) read)",
                r.distributed.files_read
            ),
            (Check::Distributed, true, 0) => {
                let unknown = r
                    .distributed
                    .sites
                    .iter()
                    .filter(|s| s.reach == pickguard_audit::Reach::Unknown)
                    .count();
                format!(
                    "distributed exposure: no exposed endpoint among {} launch site(s){}; their stores still listen on every interface of the master, so keep the rendezvous ports closed to untrusted networks",
                    r.distributed.sites.len(),
                    if unknown > 0 {
                        format!(
                            ", {unknown} with an address set at run time (a variable or host name) that was not judged"
                        )
                    } else {
                        String::new()
                    }
                )
            }
            (Check::Release, false, _) if !r.release.unread.is_empty() => format!(
                "release pipeline: not checked, {} workflow file(s) could not be read",
                r.release.unread.len()
            ),
            (Check::Release, false, _) => {
                "release pipeline: not checked, no GitHub Actions workflow or .gitlab-ci.yml found"
                    .to_string()
            }
            (Check::Release, true, 0) if r.release.release_jobs.is_empty() => format!(
                "release pipeline: {} workflow file(s) read, none builds or uploads a release",
                r.release.workflows_read
            ),
            (Check::Release, true, 0) => format!(
                "release pipeline: no finding in {} release job(s) of {} workflow file(s)",
                r.release.release_jobs.len(),
                r.release.workflows_read
            ),
            (_, _, n) => format!("{}: {n} finding(s)", c.name()),
        };
        let _ = writeln!(o, "{line}");
    }
    for f in r.unread() {
        let _ = writeln!(
            o,
            "incomplete: {f} could not be read (see the warning): its settings were not checked"
        );
    }
    if !r.findings.is_empty() {
        let _ = writeln!(o);
    }
    for f in &r.findings {
        let _ = writeln!(
            o,
            "{:<8} {} {}",
            f.severity.as_str().to_uppercase(),
            f.rule.id(),
            f.origin
        );
        let _ = writeln!(o, "    {}", f.message);
        let _ = writeln!(o, "    fix: {}", f.fix);
    }
    if !r.predictions.is_empty() {
        let _ = writeln!(o, "\nwhere private packages would come from:");
        for p in &r.predictions {
            let leak = if p.public_queried && p.resolves_from == "private" {
                " (name sent to a public index)"
            } else {
                ""
            };
            let _ = writeln!(
                o,
                "  {:<30} {:<8} {:<8} {}{leak}",
                p.package,
                format!("{:?}", p.client).to_lowercase(),
                p.resolves_from,
                p.origin
            );
        }
    }
    o
}

fn sarif(r: &Report) -> String {
    use pickguard_sarif as sarif;
    let level = |sev: &str| match sev {
        "critical" | "high" => sarif::Level::Error,
        "medium" => sarif::Level::Warning,
        _ => sarif::Level::Note,
    };
    let rules: Vec<sarif::Rule> = Rule::ALL
        .iter()
        .map(|u| sarif::Rule {
            id: u.id().into(),
            summary: u.summary().into(),
            help: u.fix().map(Into::into),
            level: level(u.severity().as_str()),
            properties: json!({"severity": u.severity()}),
        })
        .collect();
    let results: Vec<sarif::Finding> = r
        .findings
        .iter()
        .map(|f| sarif::Finding {
            rule_id: f.rule.id().into(),
            level: level(f.severity.as_str()),
            message: format!("{} Fix: {}", f.message, f.fix),
            path: f.file.clone(),
            line: f.line.map(|l| l as u64),
            byte_offset: None,
            properties: json!({"check": f.check, "client": f.client, "packages": f.packages}),
        })
        .collect();
    let incomplete: Vec<String> = r
        .unread()
        .iter()
        .map(|f| format!("{f} could not be read: its settings were not checked"))
        .collect();
    sarif::render_run(&rules, &results, &incomplete)
}

#[cfg(test)]
mod tests {
    use super::{project_page, root_names};

    #[test]
    fn root_listings_in_both_formats() {
        let json = br#"{"meta": {"api-version": "1.1"}, "projects": [{"name": "Acme_Tools"}, {"name": "x"}]}"#;
        assert_eq!(
            root_names("application/vnd.pypi.simple.v1+json", json).unwrap(),
            ["acme-tools", "x"]
        );
        let html = b"<!DOCTYPE html><html><body><a href=\"acme-tools/\">acme-tools</a>\n<a href=\"/simple/Foo.Bar/\">Foo.Bar</a></body></html>";
        assert_eq!(
            root_names("text/html", html).unwrap(),
            ["acme-tools", "foo-bar"]
        );
        assert!(root_names("application/vnd.pypi.simple.v1+json", b"{}").is_err());
        assert!(root_names("text/plain", b"Service unavailable").is_err());
        // Nothing listed: the audit cannot tell "serves nothing" from "would
        // not say" (a firewall without its admin token).
        assert!(root_names("text/html", b"<html><body></body></html>").is_err());
        assert!(
            root_names(
                "application/vnd.pypi.simple.v1+json",
                br#"{"projects": []}"#
            )
            .is_err()
        );
        // Other shapes: strings for entries, a login page's links.
        assert!(root_names("application/json", br#"{"projects": ["acme-tools"]}"#).is_err());
        assert!(
            root_names(
                "text/html",
                b"<html><a href=\"/help\">Help</a> <a href=\"/privacy\">Privacy</a></html>"
            )
            .is_err()
        );
        assert!(
            root_names(
                "text/html",
                b"<html><body>Sign in to continue</body></html>"
            )
            .is_err()
        );
    }

    #[test]
    fn only_a_project_page_says_taken() {
        assert!(
            project_page(
                "text/html",
                b"<html><body>Down for maintenance</body></html>",
                "x"
            )
            .is_err()
        );
        assert!(project_page("text/plain", b"rate limited", "x").is_err());
        let pep629 = b"<html><head><meta name=\"pypi:repository-version\" content=\"1.0\"></head><body></body></html>";
        assert!(
            project_page("text/html", pep629, "x")
                .unwrap()
                .files
                .is_empty()
        );
    }
}
