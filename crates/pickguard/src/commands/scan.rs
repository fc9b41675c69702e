//! `pickguard scan`.

use crate::cli::{Color, FailOn, Format, ScanArgs};
use crate::input;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use pickguard_scan::report::{json, sarif, text};
use pickguard_scan::{FileReport, Finding, Location, Policy, Rule, ScanOptions, Scanner, Verdict};
use rayon::prelude::*;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

enum Target {
    File(PathBuf),
    Stdin,
    Remote(Box<pickguard_remote::Object>),
}

fn collect(
    args: &ScanArgs,
    remote: &pickguard_remote::Options,
) -> Result<(Vec<Target>, Vec<FileReport>)> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for p in &args.paths {
        if p.as_os_str() == "-" {
            out.push(Target::Stdin);
            continue;
        }
        if let Some(objects) = crate::remote::objects(p.as_os_str(), remote) {
            match objects {
                Ok(objects) => out.extend(objects.into_iter().map(|o| Target::Remote(Box::new(o)))),
                Err(report) => errors.push(*report),
            }
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

fn scan_one(
    scanner: &Scanner,
    target: &Target,
    timeout: Duration,
    remote: &pickguard_remote::Options,
) -> FileReport {
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
        Target::Remote(o) => crate::remote::scan(&scanner, (**o).clone(), remote, timeout),
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
    let remote = pickguard_remote::Options {
        max_fetch: crate::size::parse_size(&args.max_fetch)
            .map_err(|e| anyhow::anyhow!("--max-fetch: {e}"))?,
        ..Default::default()
    };
    let (targets, mut reports) = collect(&args, &remote)?;
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
    // One file reached by several names (a Hugging Face cache's revisions
    // sharing a blob, links in a tree) is read once and reported under each
    // name that would be judged alike: the same file name (a verdict can
    // depend on it), and not ONNX (whose verdict depends on the directory).
    let mut first: std::collections::HashMap<(PathBuf, std::ffi::OsString), usize> =
        Default::default();
    let same_as: Vec<Option<usize>> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| match t {
            Target::File(p) => {
                let base = p.file_name()?.to_owned();
                if base
                    .to_string_lossy()
                    .to_ascii_lowercase()
                    .contains(".onnx")
                {
                    return None;
                }
                let c = (std::fs::canonicalize(p).ok()?, base);
                match first.get(&c) {
                    Some(&j) => Some(j),
                    None => {
                        first.insert(c, i);
                        None
                    }
                }
            }
            _ => None,
        })
        .collect();
    let scanned: Vec<Option<FileReport>> = targets
        .par_iter()
        .zip(same_as.par_iter())
        .map(|(t, same)| {
            if same.is_some() {
                return None;
            }
            let r = scan_one(&scanner, t, timeout, &remote);
            if let Some(b) = &bar {
                b.inc(1);
                if r.verdict == Verdict::Malicious {
                    b.set_message(format!("malicious: {}", r.path));
                }
            }
            Some(r)
        })
        .collect();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let scanned: Vec<FileReport> = scanned
        .iter()
        .zip(&same_as)
        .zip(&targets)
        .map(|((r, same), t)| match (r, same, t) {
            (Some(r), _, _) => r.clone(),
            (None, Some(j), Target::File(p)) => {
                let first = scanned[*j]
                    .as_ref()
                    .expect("the first of a group is scanned");
                if first.format == "onnx" {
                    // External data is looked for beside each name.
                    return scan_one(&scanner, t, timeout, &remote);
                }
                let mut r = first.clone();
                r.path = pickguard_scan::report::display_path(p);
                r
            }
            // Not grouped (cannot happen: only files are): scan it alone.
            (None, _, t) => scan_one(&scanner, t, timeout, &remote),
        })
        .collect();
    let mut unquarantined = 0;
    if let Some(dir) = &args.quarantine {
        // A file reached by several names is moved once (by its first name).
        let malicious: Vec<(&Target, &FileReport)> = targets
            .iter()
            .zip(&scanned)
            .zip(&same_as)
            .filter(|((_, r), same)| r.verdict == Verdict::Malicious && same.is_none())
            .map(|(tr, _)| tr)
            .collect();
        match crate::commands::quarantine::Quarantine::open(dir) {
            Err(e) if !malicious.is_empty() => {
                unquarantined = malicious.len();
                eprintln!("pickguard: error: quarantine {:?}: {e:#}", dir);
            }
            Err(_) => {}
            Ok(q) => {
                for (t, r) in malicious {
                    let p = match t {
                        Target::File(p) => p,
                        Target::Stdin => {
                            unquarantined += 1;
                            eprintln!(
                                "pickguard: error: standard input cannot be quarantined (nothing was kept of it)"
                            );
                            continue;
                        }
                        Target::Remote(o) => {
                            unquarantined += 1;
                            eprintln!(
                                "pickguard: error: {} is remote and cannot be quarantined: remove it where it is stored",
                                o.display
                            );
                            continue;
                        }
                    };
                    match q.put(&scanner, timeout, p, r) {
                        Ok((to, note)) => {
                            eprintln!("pickguard: quarantined {p:?} -> {to:?}");
                            if let Some(n) = note {
                                eprintln!("pickguard: warning: {p:?}: {n}");
                            }
                        }
                        Err(e) => {
                            unquarantined += 1;
                            eprintln!("pickguard: error: {p:?} was not quarantined: {e:#}");
                        }
                    }
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
        // A closed pipe ends the output; the exit status stays the verdict.
        None => Ok(crate::printer::write(body)?),
    }
}

#[cfg(test)]
mod quarantine_tests {
    use super::*;
    use crate::commands::quarantine::Quarantine;

    fn evil_sample() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/corpus/mal-getattr-import.pkl"
        ))
        .unwrap()
    }

    fn report() -> FileReport {
        let mut r = FileReport::error("x", String::new());
        r.verdict = Verdict::Malicious;
        r
    }

    /// A file that no longer scans malicious (swapped after the scan, say
    /// for something precious) is never removed, and nothing of it is kept.
    #[test]
    fn only_what_is_proven_malicious_is_deleted() {
        let d = tempfile::tempdir().unwrap();
        let precious = d.path().join("precious.txt");
        std::fs::write(&precious, b"not a model, and not yours to delete").unwrap();
        let scanner = Scanner::new(Policy::default(), ScanOptions::default());
        let q = Quarantine::open(&d.path().join("q")).unwrap();
        let err = q
            .put(&scanner, Duration::from_secs(10), &precious, &report())
            .expect_err("a clean file was quarantined");
        assert!(
            format!("{err:#}").contains("changed since it was scanned"),
            "{err:#}"
        );
        assert!(precious.exists());
        assert_eq!(std::fs::read_dir(d.path().join("q")).unwrap().count(), 0);
    }

    /// A quarantine someone else may write into, or a link, is refused.
    #[test]
    fn an_untrusted_quarantine_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(Quarantine::open(&open).is_err());
        std::os::unix::fs::symlink(d.path(), d.path().join("link")).unwrap();
        assert!(Quarantine::open(&d.path().join("link")).is_err());
        let made = d.path().join("new/q");
        Quarantine::open(&made).unwrap();
        assert_eq!(
            std::fs::metadata(&made).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    /// Planted entries inside the quarantine are neither followed nor
    /// overwritten, and a file inside the quarantine is never "moved" onto
    /// itself (which would delete the only copy).
    #[test]
    fn nothing_planted_or_kept_is_lost() {
        let d = tempfile::tempdir().unwrap();
        let scanner = Scanner::new(Policy::default(), ScanOptions::default());
        let evil = evil_sample();
        let qdir = d.path().join("q");
        let q = Quarantine::open(&qdir).unwrap();
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(&evil));
        // A link planted where the copy would go, and one as the manifest.
        std::fs::create_dir(qdir.join(&sha)).unwrap();
        let victim = d.path().join("victim.conf");
        std::fs::write(&victim, b"keep me").unwrap();
        std::os::unix::fs::symlink(&victim, qdir.join(&sha).join("m.pkl")).unwrap();
        std::os::unix::fs::symlink(&victim, qdir.join("manifest.jsonl")).unwrap();
        let m = d.path().join("m.pkl");
        std::fs::write(&m, &evil).unwrap();
        let r = q.put(&scanner, Duration::from_secs(10), &m, &report());
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"keep me",
            "a planted link was followed"
        );
        assert!(r.is_err(), "a planted manifest link was written through");
        assert!(m.exists(), "deleted without a record");
        std::fs::remove_file(qdir.join("manifest.jsonl")).unwrap();
        let (dest, _) = q
            .put(&scanner, Duration::from_secs(10), &m, &report())
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), evil);
        assert_ne!(
            dest,
            qdir.join(&sha).join("m.pkl"),
            "written over the planted link"
        );
        assert!(!m.exists());
        // Scanning the quarantine itself leaves its files alone.
        let err = q
            .put(&scanner, Duration::from_secs(10), &dest, &report())
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("inside the quarantine"),
            "{err:#}"
        );
        assert_eq!(std::fs::read(&dest).unwrap(), evil);
    }

    /// A directory swapped for a link to another one while files are being
    /// quarantined (the race an attacker with a writable directory in the
    /// scanned tree can run) never deletes anything in the other one.
    #[test]
    fn a_swapped_directory_never_redirects_the_unlink() {
        let d = tempfile::tempdir().unwrap();
        let scanner = Scanner::new(Policy::default(), ScanOptions::default());
        let evil = evil_sample();
        let (tree, victim) = (d.path().join("tree"), d.path().join("victim"));
        std::fs::create_dir_all(tree.join("d")).unwrap();
        std::fs::create_dir_all(&victim).unwrap();
        for i in 0..150 {
            std::fs::write(tree.join(format!("d/f{i}")), &evil).unwrap();
            std::fs::write(victim.join(format!("f{i}")), b"precious").unwrap();
        }
        let q = Quarantine::open(&d.path().join("q")).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let racer = {
            let (tree, victim, stop) = (tree.clone(), victim.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if std::fs::rename(tree.join("d"), tree.join("d.real")).is_ok()
                        && std::os::unix::fs::symlink(&victim, tree.join("d")).is_ok()
                    {
                        swaps += 1;
                    }
                    std::thread::yield_now();
                    let _ = std::fs::remove_file(tree.join("d"));
                    let _ = std::fs::rename(tree.join("d.real"), tree.join("d"));
                }
                swaps
            })
        };
        for i in 0..149 {
            let _ = q.put(
                &scanner,
                Duration::from_secs(10),
                &tree.join(format!("d/f{i}")),
                &report(),
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let swaps = racer.join().unwrap();
        assert!(
            swaps > 0,
            "the directory was never swapped: the race was not run"
        );
        // Whatever the race did to the others, the last file, quarantined
        // with no race, is moved (so the test sees a quarantine that works).
        q.put(
            &scanner,
            Duration::from_secs(10),
            &tree.join("d/f149"),
            &report(),
        )
        .unwrap();
        assert!(!tree.join("d/f149").exists());
        for i in 0..150 {
            assert_eq!(
                std::fs::read(victim.join(format!("f{i}"))).unwrap(),
                b"precious",
                "f{i} in the other directory was deleted"
            );
        }
    }
}
