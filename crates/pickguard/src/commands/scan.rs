//! `pickguard scan`.

use crate::cli::{Color, FailOn, Format, ScanArgs};
use crate::input;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use pickguard_scan::report::{json, sarif, text};
use pickguard_scan::{FileReport, Finding, Location, Policy, Rule, ScanOptions, Scanner, Verdict};
use rayon::prelude::*;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

enum Target {
    File(PathBuf),
    Stdin,
}

fn collect(args: &ScanArgs) -> Result<(Vec<Target>, Vec<FileReport>)> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for p in &args.paths {
        if p.as_os_str() == "-" {
            out.push(Target::Stdin);
            continue;
        }
        let (files, errs) = crate::api::walk(std::slice::from_ref(p), !args.no_follow);
        out.extend(files.into_iter().map(Target::File));
        errors.extend(errs);
    }
    Ok((out, errors))
}

fn load_policy(args: &ScanArgs) -> Result<Policy> {
    crate::api::policy(args.config.as_deref(), &args.allow)
}

fn scan_one(scanner: &Scanner, target: &Target, timeout: Duration) -> FileReport {
    let mut scanner = scanner.clone();
    let deadline = Instant::now() + timeout;
    scanner.options.pickle.limits.deadline = Some(deadline);
    match target {
        Target::Stdin => match input::stdin(deadline) {
            Ok(b) if b.is_empty() => {
                FileReport::error("-", "standard input was empty: nothing was scanned".into())
            }
            Ok(b) => scanner.scan_bytes("-", &b),
            Err(e) => FileReport::error("-", format!("reading standard input: {e}")),
        },
        Target::File(p) => crate::api::scan_file(&scanner, p, timeout),
    }
}

/// `--verify-signature`: one report entry for the signature check.
fn signature_entry(args: &ScanArgs) -> Result<Option<FileReport>> {
    let Some(sig) = &args.verify_signature else {
        return Ok(None);
    };
    if args.paths.len() != 1 {
        bail!("--verify-signature checks one model: give exactly one PATH");
    }
    let trust = crate::commands::sign::trust(args.public_key.as_ref(), &args.cert_chain)?;
    let r = crate::commands::sign::verify_report(&args.paths[0], sig, &trust, &Default::default())?;
    let mut entry = FileReport::error(&sig.display().to_string(), String::new());
    entry.error = None;
    entry.format = "model-signature".into();
    entry.verdict = if r.ok {
        Verdict::Clean
    } else {
        Verdict::Malicious
    };
    if !r.ok {
        for line in crate::commands::sign::describe(&r) {
            entry.findings.push(Finding::new(
                Rule::SignatureMismatch,
                line,
                Location::default(),
            ));
        }
    }
    Ok(Some(entry))
}

pub fn run(args: ScanArgs) -> Result<u8> {
    let policy = load_policy(&args)?;
    let signature = signature_entry(&args)?;
    let mut options = ScanOptions::default();
    policy
        .user
        .limits
        .clone()
        .then(&args.budgets.budgets()?)
        .apply(&mut options);
    let scanner = Scanner::new(policy, options);
    let (targets, mut reports) = collect(&args)?;
    if let Some(n) = args.threads {
        // Only fails if a pool exists already; then the default one is used.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global();
    }
    let timeout = Duration::from_secs(args.timeout.max(1));
    let show_progress = !args.no_progress && targets.len() > 1 && std::io::stderr().is_terminal();
    let bar = if show_progress {
        let b = ProgressBar::new(targets.len() as u64);
        b.set_style(
            ProgressStyle::with_template("{spinner} {pos}/{len} files [{elapsed}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        Some(b)
    } else {
        None
    };
    let scanned: Vec<FileReport> = targets
        .par_iter()
        .map(|t| {
            let r = scan_one(&scanner, t, timeout);
            if let Some(b) = &bar {
                b.inc(1);
                if r.verdict == Verdict::Malicious {
                    b.set_message(format!("malicious: {}", r.path));
                }
            }
            r
        })
        .collect();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    reports.extend(scanned);
    reports.extend(signature);

    let color = match args.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            args.output.is_none()
                && std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none()
        }
    };
    let body = match args.format {
        Format::Json => json::render(&reports) + "\n",
        Format::Sarif => sarif::render(&reports) + "\n",
        Format::Text => {
            let style = text::Style { color };
            let mut s = String::new();
            let mut skipped = 0;
            for r in &reports {
                if r.format == "other" && r.verdict == Verdict::Clean && !args.all && !args.verbose
                {
                    skipped += 1;
                    continue;
                }
                s.push_str(&text::render_file(r, style, args.verbose));
            }
            s.push_str(&text::summary(&reports, skipped));
            s.push('\n');
            s
        }
    };
    write_out(args.output.as_deref(), &body)?;
    // Nothing that is a model was read: say so, and do not pass.
    let models = reports
        .iter()
        .filter(|r| !(r.format == "other" && r.verdict == Verdict::Clean))
        .count();
    if models == 0 {
        eprintln!(
            "pickguard: no model file found in {} file(s): nothing was checked (exit 2)",
            reports.len()
        );
        return Ok(2);
    }

    let fails = |v: Verdict| match args.fail_on {
        FailOn::Malicious => v == Verdict::Malicious,
        FailOn::NeedsTrust => matches!(v, Verdict::Malicious | Verdict::NeedsTrust),
        FailOn::Never => false,
    };
    Ok(if reports.iter().any(|r| fails(r.verdict)) {
        1
    } else if reports
        .iter()
        .any(|r| matches!(r.verdict, Verdict::Error | Verdict::Inconclusive))
    {
        2
    } else {
        0
    })
}

fn write_out(path: Option<&Path>, body: &str) -> Result<()> {
    match path {
        Some(p) => std::fs::write(p, body).with_context(|| format!("writing {}", p.display())),
        None => {
            let mut o = std::io::stdout().lock();
            o.write_all(body.as_bytes())?;
            o.flush()?;
            Ok(())
        }
    }
}
