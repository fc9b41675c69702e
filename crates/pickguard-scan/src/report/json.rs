//! `--format json`: versioned, one object for the whole run.

use crate::FileReport;
use serde::Serialize;

#[derive(Serialize)]
struct Doc<'a> {
    /// Bumped when a field changes meaning.
    schema: u32,
    tool: &'static str,
    version: &'static str,
    files: &'a [FileReport],
    summary: Summary,
}

#[derive(Serialize, Default)]
struct Summary {
    files: usize,
    clean: usize,
    needs_trust: usize,
    inconclusive: usize,
    malicious: usize,
    error: usize,
}

pub fn render(files: &[FileReport]) -> String {
    let mut s = Summary {
        files: files.len(),
        ..Default::default()
    };
    for f in files {
        match f.verdict {
            crate::Verdict::Clean => s.clean += 1,
            crate::Verdict::NeedsTrust => s.needs_trust += 1,
            crate::Verdict::Inconclusive => s.inconclusive += 1,
            crate::Verdict::Malicious => s.malicious += 1,
            crate::Verdict::Error => s.error += 1,
        }
    }
    let doc = Doc {
        schema: 1,
        tool: "pickguard",
        version: env!("CARGO_PKG_VERSION"),
        files,
        summary: s,
    };
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
