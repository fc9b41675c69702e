//! Human output: one line per file, then its findings with call chains.

use super::safe_text;
use crate::FileReport;
use crate::finding::{Severity, Verdict};
use std::fmt::Write as _;

/// ANSI colours, or none.
#[derive(Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
    fn verdict(self, v: Verdict) -> String {
        let code = match v {
            Verdict::Clean => "32",
            Verdict::NeedsTrust => "33",
            Verdict::Inconclusive => "35",
            Verdict::Malicious => "1;31",
            Verdict::Error => "31",
        };
        self.paint(code, &v.as_str().to_uppercase())
    }
}

/// One file's block. `verbose` adds info-level findings and the globals table.
pub fn render_file(f: &FileReport, style: Style, verbose: bool) -> String {
    let mut out = String::new();
    let extra = match (f.tensors, &f.error) {
        (_, Some(e)) => format!(" — {}", safe_text(e)),
        (Some(t), _) => format!(" ({}, {t} tensors)", f.format),
        _ => format!(" ({})", f.format),
    };
    // The path is already shown losslessly (report::display_path) when it
    // comes from the file system; escape again for names given otherwise.
    let _ = writeln!(
        out,
        "{:<13} {}{}",
        style.verdict(f.verdict),
        safe_text(&f.path),
        extra
    );
    if let Some(x) = &f.fetched {
        let pct = if f.size > 0 {
            x.bytes as f64 * 100.0 / f.size as f64
        } else {
            100.0
        };
        let _ = writeln!(
            out,
            "    fetched {} of {} bytes ({pct:.2}%) in {} request(s)",
            x.bytes, f.size, x.requests
        );
    }
    for x in &f.findings {
        if x.severity <= Severity::Info && !verbose {
            continue;
        }
        let mut parts: Vec<String> = Vec::new();
        if let Some(m) = &x.location.member {
            parts.push(safe_text(m));
        }
        if let Some(st) = x.location.stream.filter(|&st| st > 0) {
            parts.push(format!("stream {st}"));
        }
        if let Some(o) = x.location.offset {
            parts.push(format!("offset {o}"));
        }
        if let Some(v) = x.location.view {
            parts.push(v.describe());
        }
        let place = parts.join(", ");
        let _ = writeln!(
            out,
            "  {} {}{}",
            style.paint("2", x.rule.id()),
            safe_text(&x.message),
            if place.is_empty() {
                String::new()
            } else {
                format!(" [{place}]")
            }
        );
        for c in &x.calls {
            let _ = writeln!(out, "      ↳ {}", style.paint("1", &safe_text(c)));
        }
    }
    if verbose && !f.globals.is_empty() {
        let _ = writeln!(out, "  globals:");
        for g in &f.globals {
            let _ = writeln!(
                out,
                "    {:<14} {}.{} (imported {}×, called {}×)",
                g.class,
                safe_text(&g.module),
                safe_text(&g.name),
                g.imports,
                g.calls
            );
        }
    }
    out
}

/// The closing summary line.
pub fn summary(files: &[FileReport], skipped: usize) -> String {
    let count = |v| files.iter().filter(|f| f.verdict == v).count();
    let mut s = format!(
        "{} file(s): {} clean, {} needs-trust, {} malicious, {} inconclusive, {} error",
        files.len(),
        count(Verdict::Clean),
        count(Verdict::NeedsTrust),
        count(Verdict::Malicious),
        count(Verdict::Inconclusive),
        count(Verdict::Error)
    );
    if skipped > 0 {
        let _ = write!(s, "; {skipped} non-model file(s) skipped");
    }
    s
}
