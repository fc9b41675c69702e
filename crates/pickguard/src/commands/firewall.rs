//! `pickguard firewall serve` and `pickguard firewall hash-token`.

use crate::cli::FirewallServeArgs;
use anyhow::{Context, Result};
use pickguard_firewall::Config;

pub fn serve(args: FirewallServeArgs) -> Result<u8> {
    let mut cfg = match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Config::from_toml(&text).with_context(|| format!("configuration {}", p.display()))?
        }
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    // Operational logs to stderr: upstream failures, hash mismatches, refused
    // uploads, claim failures. RUST_LOG filters (default: info).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let installed = match args.log_format {
        crate::cli::LogFormat::Json => builder.json().try_init(),
        crate::cli::LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = installed {
        eprintln!("pickguard: warning: operational logs are off: {e}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(pickguard_firewall::serve(cfg))?;
    Ok(0)
}

/// Hash the secret on standard input (one line; surrounding whitespace ignored).
pub fn hash_token() -> Result<u8> {
    let mut secret = String::new();
    std::io::stdin()
        .read_line(&mut secret)
        .context("reading the secret from standard input")?;
    let secret = secret.trim();
    anyhow::ensure!(
        secret.len() >= 16,
        "the secret is {} characters; use at least 16 (e.g. `openssl rand -hex 32`)",
        secret.len()
    );
    println!("sha256:{}", pickguard_firewall::hash_secret(secret));
    Ok(0)
}
