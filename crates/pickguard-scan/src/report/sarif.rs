//! `--format sarif`: SARIF 2.1.0, one run, rules deduplicated from findings.

use crate::FileReport;
use crate::finding::{Rule, Severity, Verdict};
use serde_json::{Value, json};

fn level(rule: Rule, sev: Severity) -> &'static str {
    match rule.verdict() {
        Verdict::Malicious => "error",
        Verdict::NeedsTrust | Verdict::Inconclusive => "warning",
        _ if sev >= Severity::Medium => "warning",
        _ => "note",
    }
}

fn uri(path: &str) -> String {
    // Relative paths stay relative (resolved against the checkout); escape
    // what a URI cannot hold.
    let mut out = String::new();
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn render(files: &[FileReport]) -> String {
    let mut used: Vec<Rule> = files
        .iter()
        .flat_map(|f| f.findings.iter().map(|x| x.rule))
        .collect();
    used.sort();
    used.dedup();
    let rules: Vec<Value> = used
        .iter()
        .map(|r| {
            json!({
                "id": r.id(),
                "name": r.id().split_once('-').map(|(_, n)| n).unwrap_or(r.id()),
                "shortDescription": {"text": r.summary()},
                "fullDescription": {"text": r.summary()},
                "helpUri": format!("https://github.com/pickguard/pickguard/blob/main/docs/rules.md#{}", r.id().to_lowercase()),
                "defaultConfiguration": {"level": level(*r, r.default_severity())},
                "properties": {"verdict": r.verdict().as_str()}
            })
        })
        .collect();
    let mut results = Vec::new();
    for f in files {
        for x in &f.findings {
            let mut text = x.message.clone();
            if let Some(m) = &x.location.member {
                text.push_str(&format!(" [member {m}]"));
            }
            if let Some(o) = x.location.offset {
                text.push_str(&format!(" [offset {o}]"));
            }
            for c in &x.calls {
                text.push_str(&format!("\n  {c}"));
            }
            let mut region = json!({});
            if x.location.member.is_none()
                && let Some(o) = x.location.offset
            {
                region = json!({"byteOffset": o});
            }
            let mut physical = json!({"artifactLocation": {"uri": uri(&f.path)}});
            if region.as_object().is_some_and(|r| !r.is_empty()) {
                physical["region"] = region;
            }
            results.push(json!({
                "ruleId": x.rule.id(),
                "ruleIndex": used.iter().position(|r| *r == x.rule).unwrap_or(0),
                "level": level(x.rule, x.severity),
                "message": {"text": text},
                "locations": [{"physicalLocation": physical}],
                "properties": {"verdict": f.verdict.as_str(), "severity": x.severity}
            }));
        }
        if let Some(e) = &f.error {
            results.push(json!({
                "ruleId": "PG000-read-error",
                "level": "error",
                "message": {"text": format!("could not read: {e}")},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri(&f.path)}}}]
            }));
        }
    }
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "pickguard",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/pickguard/pickguard",
                "rules": rules
            }},
            "results": results
        }]
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}
