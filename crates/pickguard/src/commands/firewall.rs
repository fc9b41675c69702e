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
