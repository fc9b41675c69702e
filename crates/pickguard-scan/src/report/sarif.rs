//! `--format sarif`: the scan's findings through the one SARIF writer
//! (`pickguard-sarif`).

use crate::FileReport;
use crate::finding::{Rule, Severity, Verdict};
use pickguard_sarif as sarif;
use serde_json::json;

fn level(rule: Rule, sev: Severity) -> sarif::Level {
    match rule.verdict() {
        Verdict::Malicious | Verdict::Error => sarif::Level::Error,
        Verdict::NeedsTrust | Verdict::Inconclusive => sarif::Level::Warning,
        _ if sev >= Severity::Medium => sarif::Level::Warning,
        _ => sarif::Level::Note,
    }
}

pub fn render(files: &[FileReport]) -> String {
    let rules: Vec<sarif::Rule> = Rule::ALL
        .iter()
        .map(|r| sarif::Rule {
            id: r.id().into(),
            summary: r.summary().into(),
            help: None,
            level: level(*r, r.default_severity()),
            properties: json!({"verdict": r.verdict().as_str()}),
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
            results.push(sarif::Finding {
                rule_id: x.rule.id().into(),
                level: level(x.rule, x.severity),
                message: text,
                path: f.path.clone(),
                line: None,
                // A byte offset is into the file itself only outside archive members.
                byte_offset: x.location.offset.filter(|_| x.location.member.is_none()),
                properties: json!({"verdict": f.verdict.as_str(), "severity": x.severity}),
            });
        }
        if let Some(e) = &f.error {
            results.push(sarif::Finding {
                rule_id: Rule::ReadError.id().into(),
                level: sarif::Level::Error,
                message: format!("could not read: {e}"),
                path: f.path.clone(),
                line: None,
                byte_offset: None,
                properties: json!({"verdict": "error"}),
            });
        }
    }
    sarif::render(&rules, &results)
}
