//! `pickguard firewall serve`.

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
