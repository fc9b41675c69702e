/*!
SARIF 2.1.0, written in one place for every command (`scan`, `audit`...).

Callers describe their rules ([`Rule`]) and results ([`Finding`]) in plain
terms; this crate writes the document: one run, tool `pickguard`, rules
deduplicated and indexed, each with a `helpUri` into docs/rules.md, and
artifact URIs escaped.
*/

use serde_json::{Value, json};

/// Where rule documentation lives: docs/rules.md, one section per rule id.
pub fn help_uri(rule_id: &str) -> String {
    format!(
        "https://github.com/pickguard/pickguard/blob/main/docs/rules.md#{}",
        rule_id.to_lowercase()
    )
}

/// A SARIF level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Note,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Note => "note",
        }
    }
}

/// A rule, as reported in `tool.driver.rules`.
#[derive(Clone, Debug)]
pub struct Rule {
    pub id: String,
    pub summary: String,
    /// How to fix it, when the rule has a fix.
    pub help: Option<String>,
    pub level: Level,
    pub properties: Value,
}

/// One result.
#[derive(Clone, Debug)]
pub struct Finding {
    pub rule_id: String,
    pub level: Level,
    pub message: String,
    /// Artifact path, relative to the checkout or absolute.
    pub path: String,
    pub line: Option<u64>,
    pub byte_offset: Option<u64>,
    pub properties: Value,
}

/// A path as a URI reference: relative paths stay relative (resolved
/// against the checkout); every byte a URI cannot hold is escaped.
pub fn uri(path: &str) -> String {
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

/// The document, pretty-printed. Rules not used by any finding are left out;
/// a finding whose rule is not in `rules` gets `ruleIndex` only when known.
pub fn render(rules: &[Rule], findings: &[Finding]) -> String {
    render_run(rules, findings, &[])
}

/// Like [`render`], with what the run could not do: each note becomes a
/// `toolExecutionNotifications` entry and the invocation is marked
/// unsuccessful, so a dashboard does not show an incomplete run as clean.
pub fn render_run(rules: &[Rule], findings: &[Finding], incomplete: &[String]) -> String {
    let mut used: Vec<&Rule> = rules
        .iter()
        .filter(|r| findings.iter().any(|f| f.rule_id == r.id))
        .collect();
    used.sort_by(|a, b| a.id.cmp(&b.id));
    used.dedup_by(|a, b| a.id == b.id);
    let rules_json: Vec<Value> = used
        .iter()
        .map(|r| {
            let mut v = json!({
                "id": r.id,
                "name": r.id.split_once('-').map(|(_, n)| n).unwrap_or(&r.id),
                "shortDescription": {"text": r.summary},
                "fullDescription": {"text": r.summary},
                "helpUri": help_uri(&r.id),
                "defaultConfiguration": {"level": r.level.as_str()},
                "properties": r.properties,
            });
            if let Some(h) = &r.help {
                v["help"] = json!({"text": h});
            }
            v
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut physical = json!({"artifactLocation": {"uri": uri(&f.path)}});
            let mut region = serde_json::Map::new();
            if let Some(l) = f.line {
                region.insert("startLine".into(), json!(l.max(1)));
            }
            if let Some(o) = f.byte_offset {
                region.insert("byteOffset".into(), json!(o));
            }
            if !region.is_empty() {
                physical["region"] = Value::Object(region);
            }
            let mut r = json!({
                "ruleId": f.rule_id,
                "level": f.level.as_str(),
                "message": {"text": f.message},
                "locations": [{"physicalLocation": physical}],
                "properties": f.properties,
            });
            if let Some(i) = used.iter().position(|u| u.id == f.rule_id) {
                r["ruleIndex"] = json!(i);
            }
            r
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "pickguard",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/pickguard/pickguard",
                "rules": rules_json
            }},
            "results": results,
            "invocations": [{
                "executionSuccessful": incomplete.is_empty(),
                "toolExecutionNotifications": incomplete
                    .iter()
                    .map(|n| json!({"level": "error", "message": {"text": n}}))
                    .collect::<Vec<_>>(),
            }]
        }]
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_document_shape() {
        let rules = vec![Rule {
            id: "AUD001-merged-indexes".into(),
            summary: "s".into(),
            help: Some("fix".into()),
            level: Level::Error,
            properties: json!({}),
        }];
        let f = Finding {
            rule_id: "AUD001-merged-indexes".into(),
            level: Level::Error,
            message: "m".into(),
            path: "Docker file".into(),
            line: Some(197),
            byte_offset: None,
            properties: json!({}),
        };
        let doc: Value = serde_json::from_str(&render(&rules, &[f])).unwrap();
        let run = &doc["runs"][0];
        assert_eq!(run["tool"]["driver"]["name"], "pickguard");
        assert_eq!(
            run["tool"]["driver"]["rules"][0]["helpUri"],
            help_uri("AUD001-merged-indexes")
        );
        let loc = &run["results"][0]["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "Docker%20file");
        assert_eq!(loc["region"]["startLine"], 197);
        assert_eq!(run["results"][0]["ruleIndex"], 0);
    }
}
