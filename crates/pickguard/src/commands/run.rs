//! `pickguard run`.

use crate::cli::RunArgs;
use anyhow::Result;

#[cfg(target_os = "linux")]
pub fn run(args: RunArgs) -> Result<u8> {
    use pickguard_guard::sandbox::{Policy, protections, run};
    let policy = Policy {
        allow_read: args.allow_read,
        allow_write: args.allow_write,
        allow_network: args.allow_network,
    };
    if !args.quiet {
        for p in protections(&policy) {
            eprintln!("pickguard run: {p}");
        }
    }
    let outcome = run(&args.command, &policy, |b| {
        eprintln!("pickguard run: blocked: {} (pid {})", b.what, b.pid)
    })?;
    if !outcome.blocked.is_empty() && !args.quiet {
        eprintln!(
            "pickguard run: {} action(s) blocked; exit status {}",
            outcome.blocked.len(),
            outcome.code
        );
    }
    Ok(outcome.code.clamp(0, 255) as u8)
}

#[cfg(not(target_os = "linux"))]
pub fn run(_args: RunArgs) -> Result<u8> {
    anyhow::bail!("pickguard run needs Linux (Landlock and seccomp)")
}
