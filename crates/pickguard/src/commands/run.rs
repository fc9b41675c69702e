//! `pickguard run`.

use crate::cli::RunArgs;
use crate::size::parse_size;
use anyhow::{Context, Result, bail};

/// Exit status when the sandbox blocked an action (and --no-fail-on-block is not given).
pub const BLOCKED_EXIT: u8 = 126;

#[cfg(target_os = "linux")]
pub fn run(args: RunArgs) -> Result<u8> {
    use pickguard_guard::sandbox::{Blocked, Policy, protections, run};
    use std::io::Write;
    let timeout = match args.timeout {
        Some(t) if t.is_finite() && t > 0.0 => Some(std::time::Duration::from_secs_f64(t)),
        Some(t) => bail!("--timeout {t}: must be a positive number of seconds"),
        None => None,
    };
    let mut policy = Policy {
        allow_read: args.allow_read,
        allow_write: args.allow_write,
        allow_network: args.allow_network,
        env: args.env,
        timeout,
        memory: args.memory.as_deref().map(parse_size).transpose()?,
        pids: args.pids,
        no_namespaces: args.no_namespaces,
        tmp_size: args.tmp_size.as_deref().map(parse_size).transpose()?,
    };
    if !policy.no_namespaces
        && let Err(why) = pickguard_guard::ns::available()
    {
        eprintln!(
            "pickguard run: namespaces unavailable ({why}): falling back to Landlock and seccomp"
        );
        policy.no_namespaces = true;
    }
    if !args.quiet {
        for p in protections(&policy) {
            eprintln!("pickguard run: {p}");
        }
    }
    let report = match &args.report {
        Some(p) => Some(std::sync::Mutex::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let report = std::sync::Arc::new(report);
    let r2 = report.clone();
    let quiet = args.quiet;
    let stragglers_note = "WARNING";
    let outcome = run(&args.command, &policy, move |b: &Blocked| {
        if !b.probe {
            eprintln!("pickguard run: blocked: {} (pid {})", b.what, b.pid);
        } else if !quiet {
            // Probes are summarised at the end.
        }
        if let Some(f) = r2.as_ref()
            && let Ok(mut f) = f.lock()
            && let Ok(line) = serde_json::to_string(b)
        {
            let _ = writeln!(f, "{line}");
        }
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    for p in outcome
        .protections
        .iter()
        .filter(|p| p.starts_with(stragglers_note))
    {
        eprintln!("pickguard run: {p}");
    }
    let probes: Vec<&Blocked> = outcome.blocked.iter().filter(|b| b.probe).collect();
    let real = outcome.blocked.len() - probes.len();
    if !probes.is_empty() && !args.quiet {
        let mut names: Vec<String> = probes
            .iter()
            .map(|b| b.target.rsplit('/').next().unwrap_or("").to_owned())
            .collect();
        names.sort();
        names.dedup();
        eprintln!(
            "pickguard run: {} library probe(s) refused ({}): harmless, made by ctypes.util.find_library and the like",
            probes.len(),
            names.join(", ")
        );
    }
    if outcome.oom_killed {
        eprintln!(
            "pickguard run: the kernel killed a sandboxed process for using more than --memory"
        );
    }
    if outcome.timed_out {
        eprintln!("pickguard run: timed out; the sandbox was killed (exit status 124)");
        return Ok(124);
    }
    if real > 0 {
        if args.no_fail_on_block {
            eprintln!(
                "pickguard run: {real} action(s) blocked; exit status {} (the command's)",
                outcome.code
            );
        } else {
            eprintln!(
                "pickguard run: {real} action(s) blocked; exit status {BLOCKED_EXIT} (the command exited {})",
                outcome.code
            );
            return Ok(BLOCKED_EXIT);
        }
    }
    Ok(outcome.code.clamp(0, 255) as u8)
}

#[cfg(not(target_os = "linux"))]
pub fn run(_args: RunArgs) -> Result<u8> {
    anyhow::bail!("pickguard run needs Linux (namespaces, Landlock and seccomp)")
}
