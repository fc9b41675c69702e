//! `pickguard rules`: every rule id any command reports, from the one registry.

use crate::cli::{PlainFormat as Format, RulesArgs};
use anyhow::{Result, bail};
use pickguard_findings::RuleInfo;
use std::fmt::Write;

/// Every rule of every command, in id order within each command.
pub fn registry() -> Vec<RuleInfo> {
    pickguard_scan::Rule::ALL
        .iter()
        .map(|r| r.info())
        .chain(pickguard_audit::Rule::ALL.iter().map(|r| r.info()))
        .collect()
}

pub fn run(args: RulesArgs) -> Result<u8> {
    let all = registry();
    let chosen: Vec<&RuleInfo> = match &args.id {
        None => all.iter().collect(),
        Some(q) => {
            let q = q.to_ascii_lowercase();
            // A full id, or its prefix up to the number (PG101, aud004).
            let hits: Vec<&RuleInfo> = all
                .iter()
                .filter(|r| {
                    let id = r.id.to_ascii_lowercase();
                    id == q || id.split('-').next() == Some(q.as_str())
                })
                .collect();
            if hits.is_empty() {
                let near: Vec<&str> = all
                    .iter()
                    .filter(|r| r.id.to_ascii_lowercase().contains(&q))
                    .map(|r| r.id)
                    .collect();
                if near.is_empty() {
                    bail!("no rule {q:?} (`pickguard rules` lists them all)");
                }
                bail!("no rule {q:?}; did you mean {}?", near.join(", "));
            }
            hits
        }
    };
    let mut out = String::new();
    match args.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&chosen)?)?,
        Format::Text => {
            for r in &chosen {
                if args.id.is_some() {
                    writeln!(out, "{}  [{} · {}]", r.id, r.command, r.severity.as_str())?;
                    writeln!(out, "  {}", r.summary)?;
                    if let Some(f) = r.fix {
                        writeln!(out, "  fix: {f}")?;
                    }
                    writeln!(out, "  docs: {}", pickguard_sarif::help_uri(r.id))?;
                } else {
                    writeln!(
                        out,
                        "{:<40} {:<6} {:<9} {}",
                        r.id,
                        r.command,
                        r.severity.as_str(),
                        r.summary
                    )?;
                }
            }
        }
    }
    crate::printer::write(&out)?;
    Ok(0)
}
