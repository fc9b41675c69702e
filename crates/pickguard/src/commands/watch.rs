//! `pickguard watch`.

use crate::cli::{Format, WatchArgs};
use anyhow::{Context, Result, bail};
use pickguard_watch::{WatchOptions, watch};
use std::io::Write;

pub fn run(args: WatchArgs) -> Result<u8> {
    let mut opts = WatchOptions {
        enforce: args.enforce,
        window_secs: args.window,
        verbose: args.verbose,
        allow: args.allow.clone(),
        ..Default::default()
    };
    if !args.shells.is_empty() {
        opts.shells = args.shells.clone();
    }
    if !args.model_exts.is_empty() {
        opts.extensions = args.model_exts.clone();
    }
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let mut alerts = 0u64;
    let result = watch(
        &opts,
        |m| {
            eprintln!(
                "pickguard watch: ready; enforcement: {} ({})",
                m.name, m.description
            );
        },
        |ev| {
            let line = match args.format {
                Format::Text => format!(
                    "{} {} pid {} ({}) ran {} after opening {} [{}]",
                    ev.unix_time,
                    ev.event.to_uppercase(),
                    ev.pid,
                    ev.cmdline.clone().unwrap_or_else(|| ev.comm.clone()),
                    ev.name,
                    ev.model,
                    ev.verdict
                ),
                _ => serde_json::to_string(&ev).unwrap_or_default(),
            };
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            if args.syslog && ev.event == "alert" {
                let _ = std::process::Command::new("logger")
                    .args(["-t", "pickguard-watch", &line])
                    .status();
            }
            if ev.event == "alert" {
                alerts += 1;
            }
            args.max_alerts.is_none_or(|m| alerts < m)
        },
    );
    if let Err(e) = result {
        bail!("{e}");
    }
    Ok(0)
}
