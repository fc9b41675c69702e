//! `pickguard firewall serve`, `hash-token` and `feed`.

use crate::cli::{FeedImportArgs, FeedStateArgs, FeedStatusArgs, FirewallServeArgs};
use anyhow::{Context, Result};
use pickguard_firewall::Config;

fn load_config(path: Option<&std::path::Path>) -> Result<Config> {
    Ok(match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Config::from_toml(&text).with_context(|| format!("configuration {}", p.display()))?
        }
        None => Config::default(),
    })
}

pub fn serve(args: FirewallServeArgs) -> Result<u8> {
    let mut cfg = load_config(args.config.as_deref())?;
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

/// The state database of the firewall a configuration describes.
fn open_state(a: &FeedStateArgs) -> Result<(Config, pickguard_firewall::state::Db)> {
    let mut cfg = load_config(a.config.as_deref())?;
    if let Some(d) = &a.data_dir {
        cfg.data_dir = d.clone();
    }
    cfg.validate()?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let path = cfg.data_dir.join("state.sqlite");
    let db = pickguard_firewall::state::Db::open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok((cfg, db))
}

pub fn feed_import(args: FeedImportArgs) -> Result<u8> {
    let (cfg, db) = open_state(&args.state)?;
    let sources = if args.sources.is_empty() {
        cfg.feed.sources.clone()
    } else {
        args.sources.clone()
    };
    anyhow::ensure!(
        !sources.is_empty(),
        "nothing to import: give a SOURCE, or set [feed] sources in the configuration"
    );
    let malicious_only = args.malicious_only || cfg.feed.malicious_only;
    let r = pickguard_firewall::feed::import(&db, &sources, malicious_only);
    if args.state.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "read {} document(s): {} PyPI record(s); stored {} row(s), {} unchanged; {} withdrawn; \
             skipped {} for other ecosystems{}",
            r.documents,
            r.records,
            r.stored,
            r.unchanged,
            r.withdrawn,
            r.other_ecosystems,
            if malicious_only {
                format!(", {} not MAL-", r.not_malicious)
            } else {
                String::new()
            }
        );
    }
    for n in &r.notes {
        eprintln!("pickguard: note: {n}");
    }
    for e in &r.errors {
        eprintln!("pickguard: error: {e}");
    }
    if !r.errors.is_empty() {
        eprintln!(
            "pickguard: {} error(s): the feed is incomplete (what could be read was imported)",
            r.errors.len()
        );
        return Ok(2);
    }
    Ok(0)
}

pub fn feed_status(args: FeedStatusArgs) -> Result<u8> {
    let (cfg, db) = open_state(&args.state)?;
    if let Some(p) = &args.project {
        let name = pickguard_firewall::normalize(p);
        let a = db.advisories(&name)?;
        if args.state.json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"project": name, "advisories": a})
                )?
            );
        } else if a.is_empty() {
            println!("{name}: no advisory stored");
        } else {
            for x in &a {
                let state = if x.withdrawn.is_some() {
                    "withdrawn"
                } else if cfg.feed.ignore.contains(&x.id) {
                    "ignored by [feed] ignore"
                } else {
                    "enforced"
                };
                let versions = x.spec.describe();
                println!(
                    "{} {name} ({state}): {versions}; {} [{}]",
                    x.id, x.summary, x.source
                );
            }
        }
        return Ok(0);
    }
    let (advisories, projects, withdrawn, last) = db.feed_counts()?;
    if args.state.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "advisories": advisories, "projects": projects, "withdrawn_rows": withdrawn,
                "last_stored": last, "sources": cfg.feed.sources, "ignored": cfg.feed.ignore,
            }))?
        );
    } else {
        println!(
            "{advisories} advisor{} for {projects} project(s) ({withdrawn} withdrawn row(s)); last stored: {}",
            if advisories == 1 { "y" } else { "ies" },
            last.as_deref().unwrap_or("never")
        );
    }
    Ok(0)
}
