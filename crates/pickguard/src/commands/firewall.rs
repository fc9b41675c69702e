//! `pickguard firewall serve`, `hash-token` and `feed`.

use crate::cli::{
    FeedImportArgs, FeedStateArgs, FeedStatusArgs, FirewallMigrateArgs, FirewallServeArgs,
};
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
    outln!("sha256:{}", pickguard_firewall::hash_secret(secret))?;
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
    let db = cfg
        .open_db()
        .with_context(|| format!("opening the registry ({})", redact(&cfg.database_url())))?;
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
        outln!("{}", serde_json::to_string_pretty(&r)?)?;
    } else {
        outln!(
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
        )?;
    }
    for n in &r.notes {
        eprintln!("pickguard: note: {n}");
    }
    for e in &r.errors {
        eprintln!("pickguard: error: {e}");
    }
    if !r.errors.is_empty() {
        let unstored = r.errors.iter().any(|e| e.contains(": storing: "));
        eprintln!(
            "pickguard: {} error(s): the feed is incomplete ({})",
            r.errors.len(),
            if unstored {
                "a source's records could not be stored: none of that source was imported"
            } else {
                "what could be read was imported"
            }
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
            outln!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"project": name, "advisories": a})
                )?
            )?;
        } else if a.is_empty() {
            outln!("{name}: no advisory stored")?;
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
                outln!(
                    "{} {name} ({state}): {versions}; {} [{}]",
                    x.id,
                    x.summary,
                    x.source
                )?;
            }
        }
        return Ok(0);
    }
    let (advisories, projects, withdrawn, last) = db.feed_counts()?;
    if args.state.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "advisories": advisories, "projects": projects, "withdrawn_rows": withdrawn,
                "last_stored": last, "sources": cfg.feed.sources, "ignored": cfg.feed.ignore,
            }))?
        )?;
    } else {
        outln!(
            "{advisories} advisor{} for {projects} project(s) ({withdrawn} withdrawn row(s)); last stored: {}",
            if advisories == 1 { "y" } else { "ies" },
            last.as_deref().unwrap_or("never")
        )?;
    }
    Ok(0)
}

pub fn migrate(args: FirewallMigrateArgs) -> Result<u8> {
    let (cfg, from) = open_state(&args.state)?;
    let to_url = args.to.trim();
    anyhow::ensure!(
        to_url.starts_with("postgres://")
            || to_url.starts_with("postgresql://")
            || to_url.starts_with("sqlite:"),
        "--to must be a postgres:// URL or sqlite:PATH, not {:?}",
        redact(to_url)
    );
    anyhow::ensure!(
        to_url != cfg.database_url(),
        "--to is the registry the configuration already uses"
    );
    let to = pickguard_firewall::db::Db::connect_tls(
        to_url,
        2,
        cfg.storage.database_ca.as_deref(),
        cfg.database_client_cert()?,
    )
    .with_context(|| format!("opening the target {}", redact(to_url)))?;
    to.check_empty()
        .with_context(|| format!("checking {}", redact(to_url)))?;
    let dump = from.dump().context("reading the registry")?;
    // Files first: a failure there leaves the target registry empty, and a
    // second run skips the files already copied.
    let files = match &args.files_to {
        Some(dir) => Some(copy_files(&cfg.files_root(), dir)?),
        None => None,
    };
    let objects = match &args.objects_to {
        Some(url) => {
            let mut options = std::collections::BTreeMap::new();
            for kv in &args.objects_options {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--objects-option {kv:?} is not KEY=VALUE"))?;
                options.insert(k.trim().to_owned(), v.to_owned());
            }
            Some(
                pickguard_firewall::migrate_files_into_objects(url, &options, &cfg.files_root())
                    .with_context(|| format!("copying files into {url}"))?,
            )
        }
        None => None,
    };
    let copied = to
        .load(&dump)
        .with_context(|| format!("writing {}", redact(to_url)))?;
    let mut counts = serde_json::Map::new();
    for (table, _, rows) in &dump {
        counts.insert((*table).into(), rows.len().into());
    }
    if args.state.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "from": redact(&cfg.database_url()),
                "to": redact(to_url),
                "rows": counts,
                "inserted": copied,
                "files": files.map(|(n, skipped)| serde_json::json!({"copied": n, "left_out": skipped})),
                "objects": objects,
            }))?
        )?;
    } else {
        let list: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        outln!(
            "copied {} into {}: {}",
            redact(&cfg.database_url()),
            redact(to_url),
            list.join(", ")
        )?;
        if let (Some((n, skipped)), Some(dir)) = (files, &args.files_to) {
            outln!(
                "copied {n} file(s) into {} ({skipped} left out: partial downloads, cached metadata, unrecorded uploads)",
                dir.display()
            )?;
        }
        if let (Some(m), Some(url)) = (&objects, &args.objects_to) {
            outln!(
                "copied {} file(s) into {url} ({} there already with the same bytes, {} left out: partial downloads, cached metadata, unrecorded uploads)",
                m.copied,
                m.present,
                m.left_out
            )?;
        }
        outln!(
            "next: set [storage] database (and files_dir or objects) in the configuration, then start the replicas"
        )?;
    }
    Ok(0)
}

/// Copy `files/` and `hosted/` from `from` into `to`, each file verified
/// against the sha256 the firewall knows it by (a cached file's directory
/// name, an upload's sidecar) and written under a temporary name, then
/// renamed: an interrupted copy leaves nothing under a name a replica
/// serves. Uploads' sidecars (which make a file visible) go last; partial
/// downloads, incoming uploads, lock files, cached `.metadata` (fetched
/// again, verified, on demand) and uploads without a sidecar are left out.
/// A file already at the target must have the same bytes. Returns (copied,
/// left out).
fn copy_files(from: &std::path::Path, to: &std::path::Path) -> Result<(u64, u64)> {
    let (mut data, mut sidecars, mut left_out) = (Vec::new(), Vec::new(), 0u64);
    for top in ["files", "hosted"] {
        let root = from.join(top);
        if !root.exists() {
            continue;
        }
        for e in walkdir::WalkDir::new(&root).follow_links(false) {
            let e = e.with_context(|| format!("reading {}", root.display()))?;
            if !e.file_type().is_file() {
                continue;
            }
            let rel = e
                .path()
                .strip_prefix(from)
                .unwrap_or(e.path())
                .to_path_buf();
            let name = e.file_name().to_string_lossy().into_owned();
            let hidden = rel
                .components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
            if hidden || name.ends_with(".part") {
                left_out += 1;
                continue;
            }
            if top == "hosted" && name.ends_with(".pickguard.json") {
                sidecars.push((rel, None));
                continue;
            }
            let want = if top == "files" {
                let dir = e
                    .path()
                    .parent()
                    .and_then(|p| p.file_name())
                    .map(|d| d.to_string_lossy().into_owned());
                match dir {
                    Some(d)
                        if !name.ends_with(".metadata")
                            && d.len() == 64
                            && d.bytes().all(|b| b.is_ascii_hexdigit()) =>
                    {
                        d
                    }
                    _ => {
                        left_out += 1;
                        continue;
                    }
                }
            } else {
                let sc = e.path().with_file_name(format!("{name}.pickguard.json"));
                let sha = std::fs::read(&sc)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v["sha256"].as_str().map(str::to_owned));
                match sha {
                    Some(s) => s,
                    None => {
                        left_out += 1;
                        continue;
                    }
                }
            };
            data.push((rel, Some(want)));
        }
    }
    let mut n = 0;
    for (rel, want) in data.into_iter().chain(sidecars) {
        let (src, dest) = (from.join(&rel), to.join(&rel));
        if dest.exists() {
            // Copied by an earlier run (or by hand): the same bytes, and
            // those bytes must still be what they are served as.
            anyhow::ensure!(
                same_bytes(&src, &dest).with_context(|| format!("comparing {}", dest.display()))?,
                "{} exists with other contents; nothing is overwritten",
                dest.display()
            );
            if let Some(w) = &want {
                let got =
                    sha256_file(&dest).with_context(|| format!("reading {}", dest.display()))?;
                anyhow::ensure!(
                    got.eq_ignore_ascii_case(w),
                    "{} has sha256 {got}, not the {w} it is served as; not copied (the source is damaged)",
                    src.display()
                );
            }
            continue;
        }
        let parent = dest.parent().unwrap_or(to);
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let tmp = parent.join(format!(
            ".{}.migrate.part",
            dest.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let copied = (|| -> Result<()> {
            use sha2::Digest;
            use std::io::{Read, Write};
            let mut input =
                std::fs::File::open(&src).with_context(|| format!("reading {}", src.display()))?;
            let mut out = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            let (mut h, mut buf) = (sha2::Sha256::new(), vec![0u8; 1 << 20]);
            loop {
                let k = input
                    .read(&mut buf)
                    .with_context(|| format!("reading {}", src.display()))?;
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
                out.write_all(&buf[..k])
                    .with_context(|| format!("writing {}", tmp.display()))?;
            }
            out.sync_all()
                .with_context(|| format!("writing {}", tmp.display()))?;
            if let Some(w) = &want {
                let got = hex::encode(h.finalize());
                anyhow::ensure!(
                    got.eq_ignore_ascii_case(w),
                    "{} has sha256 {got}, not the {w} it is served as; not copied (the source is damaged)",
                    src.display()
                );
            }
            std::fs::rename(&tmp, &dest)
                .with_context(|| format!("renaming into {}", dest.display()))?;
            Ok(())
        })();
        if copied.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        copied?;
        n += 1;
    }
    Ok((n, left_out))
}

fn sha256_file(p: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(p)?;
    let (mut h, mut buf) = (sha2::Sha256::new(), vec![0u8; 1 << 20]);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Do two files hold the same bytes (read in chunks, never whole)?
fn same_bytes(a: &std::path::Path, b: &std::path::Path) -> std::io::Result<bool> {
    use std::io::Read;
    let (fa, fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ra, mut rb) = (std::io::BufReader::new(fa), std::io::BufReader::new(fb));
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = ra.read(&mut x)?;
        if n == 0 {
            return Ok(true);
        }
        rb.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((auth, host)) => {
            let user = auth.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_owned(),
    }
}
