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
    let mut unquarantined = 0;
    if let Some(dir) = &args.quarantine {
        for (t, r) in targets.iter().zip(&scanned) {
            let Target::File(p) = t else { continue };
            if r.verdict != Verdict::Malicious {
                continue;
            }
            match quarantine(&scanner, timeout, dir, p, r) {
                Ok(to) => eprintln!(
                    "pickguard: quarantined {} -> {} (manifest {})",
                    p.display(),
                    to.display(),
                    dir.join("manifest.jsonl").display()
                ),
                Err(e) => {
                    unquarantined += 1;
                    eprintln!(
                        "pickguard: error: {} was not quarantined: {e:#}",
                        p.display()
                    );
                }
            }
        }
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

    if unquarantined > 0 {
        eprintln!("pickguard: {unquarantined} malicious file(s) are still in place (see above)");
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

/// Move a malicious file into `dir` (see `--quarantine`); where it went.
///
/// Deleting is the dangerous half: the file may have been swapped (for a
/// link to something precious) since it was scanned. So the copy is
/// scanned again and must be malicious itself, and the name removed must
/// still be the very file that was copied (same device and inode).
fn quarantine(
    scanner: &Scanner,
    timeout: Duration,
    dir: &Path,
    path: &Path,
    report: &FileReport,
) -> Result<PathBuf> {
    use sha2::Digest;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    // What a loader would open: the link's target.
    let real =
        std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Copy under a temporary name in the quarantine, hashing on the way.
    let tmp = dir.join(format!(".incoming-{}-{name}", std::process::id()));
    let (sha, size, id) = (|| -> Result<(String, u64, (u64, u64))> {
        let mut input =
            std::fs::File::open(&real).with_context(|| format!("reading {}", real.display()))?;
        let meta = input.metadata()?;
        anyhow::ensure!(meta.is_file(), "{} is not a regular file", real.display());
        let id = (meta.dev(), meta.ino());
        let mut out = std::fs::File::create_new(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let (mut h, mut buf, mut n) = (sha2::Sha256::new(), vec![0u8; 1 << 20], 0u64);
        loop {
            let k = input.read(&mut buf)?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            out.write_all(&buf[..k])?;
            n += k as u64;
        }
        out.sync_all()?;
        Ok((hex::encode(h.finalize()), n, id))
    })()
    .inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    let again = crate::api::scan_file(scanner, &tmp, timeout);
    if again.verdict != Verdict::Malicious {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!(
            "it changed since it was scanned (its bytes now scan {:?}); left in place",
            again.verdict
        );
    }
    let slot = dir.join(&sha);
    std::fs::create_dir_all(&slot).with_context(|| format!("creating {}", slot.display()))?;
    let dest = slot.join(&name);
    if dest.exists() {
        // The same bytes were quarantined before (the name holds its hash).
        let _ = std::fs::remove_file(&tmp);
    } else {
        std::fs::rename(&tmp, &dest)
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
            .with_context(|| format!("moving into {}", dest.display()))?;
    }
    let rules: Vec<&str> = report.findings.iter().map(|f| f.rule.id()).collect();
    let line = serde_json::json!({
        "time": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        "path": path.display().to_string(),
        "resolved": real.display().to_string(),
        "stored": dest.display().to_string(),
        "sha256": sha,
        "size": size,
        "format": report.format,
        "verdict": "malicious",
        "rules": rules,
    })
    .to_string()
        + "\n";
    // One write of a whole line to an append-only file.
    let mut m = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("manifest.jsonl"))
        .with_context(|| format!("opening {}", dir.join("manifest.jsonl").display()))?;
    m.write_all(line.as_bytes())
        .and_then(|_| m.sync_all())
        .context("writing the manifest")?;
    // Only now, with a durable copy and its record, does the file go, and
    // only if the name still holds the file that was copied.
    let now =
        std::fs::symlink_metadata(&real).with_context(|| format!("checking {}", real.display()))?;
    anyhow::ensure!(
        now.is_file() && (now.dev(), now.ino()) == id,
        "{} was replaced while it was being quarantined; left in place (a copy of what was there is in {})",
        real.display(),
        dest.display()
    );
    std::fs::remove_file(&real).with_context(|| {
        format!(
            "removing {} (a copy is in {})",
            real.display(),
            dest.display()
        )
    })?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that no longer scans malicious (swapped after the scan, say
    /// for something precious) is never removed, and nothing of it is kept.
    #[test]
    fn quarantine_deletes_only_what_it_proves_malicious() {
        let d = tempfile::tempdir().unwrap();
        let precious = d.path().join("precious.txt");
        std::fs::write(&precious, b"not a model, and not yours to delete").unwrap();
        let mut report = FileReport::error("x", String::new());
        report.verdict = Verdict::Malicious;
        let scanner = Scanner::new(Policy::default(), ScanOptions::default());
        let q = d.path().join("q");
        let err = quarantine(&scanner, Duration::from_secs(10), &q, &precious, &report)
            .expect_err("a clean file was quarantined");
        assert!(
            format!("{err:#}").contains("changed since it was scanned"),
            "{err:#}"
        );
        assert!(precious.exists());
        let left: Vec<_> = std::fs::read_dir(&q).unwrap().flatten().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
