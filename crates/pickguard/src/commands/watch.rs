//! `pickguard watch`.

use crate::cli::{WatchArgs, WatchFormat};
use anyhow::{Context, Result, bail};
use pickguard_scan::Scanner;
use pickguard_watch::{AllowRule, DEFAULT_RULES, Event, Rules, WatchOptions, stop, watch};
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;

pub fn run(args: WatchArgs) -> Result<u8> {
    if args.print_rules {
        crate::printer::write(DEFAULT_RULES)?;
        return Ok(0);
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
    let format = args.format;
    if args.stop {
        let n = stop(|ev| {
            let _ = writeln!(out, "{}", render(&ev, format));
        })
        .map_err(anyhow::Error::msg)?;
        let _ = out.flush();
        eprintln!(
            "pickguard watch: {}",
            if n == 0 {
                "no sensor was running or pinned".to_string()
            } else {
                format!("stopped {n} sensor(s); nothing of pickguard watch is attached now")
            }
        );
        return Ok(0);
    }
    let mut rules = match &args.rules {
        Some(p) => Rules::load(p).map_err(anyhow::Error::msg)?,
        None => Rules::default(),
    };
    if let Some(w) = args.window {
        rules.window = w;
    }
    if !args.shells.is_empty() {
        rules.shells = args.shells.clone();
    }
    if !args.model_exts.is_empty() {
        rules.models = args.model_exts.clone();
    }
    rules.validate().map_err(anyhow::Error::msg)?;
    let allow = args
        .allow
        .iter()
        .map(|a| AllowRule::parse(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    if args.quarantine.is_some() && args.no_scan {
        bail!(
            "--quarantine moves only what the scan does not call clean: it needs the scan (drop --no-scan)"
        );
    }
    if let Some(q) = &args.quarantine {
        std::fs::create_dir_all(q)
            .with_context(|| format!("creating the quarantine directory {}", q.display()))?;
    }
    let opts = WatchOptions {
        enforce: args.enforce,
        rules,
        verbose: args.verbose,
        allow,
        pin: !args.no_pin,
        public_only: args.public_only,
    };
    let scanner = Scanner::default();
    let mut alerts = 0u64;
    let result = watch(
        &opts,
        |m| {
            eprintln!(
                "pickguard watch: ready; enforcement: {} ({})",
                m.name, m.description
            );
        },
        |mut ev| {
            let is_alert = ev.event == "alert" || ev.event == "signal-sensor";
            if ev.event == "alert" {
                if !args.no_scan {
                    for m in &mut ev.models {
                        m.scan = Some(scan_verdict(&scanner, &m.path));
                    }
                    // The alert names the latest model the scan does not call
                    // clean: a payload's decoy opens of clean files do not
                    // take the blame.
                    if let Some(m) = ev
                        .models
                        .iter()
                        .rev()
                        .find(|m| m.scan.as_deref().is_some_and(|v| v != "clean"))
                    {
                        ev.model = m.path.clone();
                    }
                }
                if let Some(q) = &args.quarantine
                    && ev.verdict != "allowed"
                {
                    quarantine(&mut ev, q);
                }
            }
            let line = render(&ev, format);
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            if args.syslog && is_alert {
                let _ = std::process::Command::new("logger")
                    .args(["-t", "pickguard-watch", &line])
                    .status();
            }
            if is_alert && ev.verdict != "allowed" {
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

fn scan_verdict(scanner: &Scanner, path: &str) -> String {
    match crate::input::open(Path::new(path)) {
        Ok(bytes) => {
            let r = scanner.scan_bytes(path, &bytes);
            match serde_json::to_value(r.verdict) {
                Ok(Value::String(s)) => s,
                Ok(v) => v.to_string(),
                Err(_) => "unknown".into(),
            }
        }
        Err(e) => format!("unreadable: {e}"),
    }
}

/// Move each model of an alert aside, with a manifest (the event) next to it.
fn quarantine(ev: &mut Event, dir: &Path) {
    let snapshot = serde_json::to_value(&*ev).unwrap_or(Value::Null);
    for m in &mut ev.models {
        let src = Path::new(&m.path);
        // Only what the scan does not call clean (or could not scan) moves:
        // a payload that opens other files must not get them moved away.
        if !src.is_file() || m.scan.as_deref() == Some("clean") {
            continue;
        }
        let base = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let tag = m.sha256.as_deref().map(|h| &h[..16]).unwrap_or("unhashed");
        let dest = dir.join(format!("{}-{tag}-{base}", ev.ts_ns));
        let moved = std::fs::rename(src, &dest).is_ok()
            || (std::fs::copy(src, &dest).is_ok() && std::fs::remove_file(src).is_ok());
        if moved {
            m.quarantined_to = Some(dest.display().to_string());
            let manifest = json!({
                "original_path": m.path,
                "quarantined_to": dest.display().to_string(),
                "sha256": m.sha256,
                "size": m.size,
                "event": snapshot,
            });
            let mpath = dest.with_file_name(format!(
                "{}.json",
                dest.file_name().unwrap_or_default().to_string_lossy()
            ));
            let _ = std::fs::write(
                mpath,
                serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
            );
        }
    }
}

fn render(ev: &Event, format: WatchFormat) -> String {
    match format {
        WatchFormat::Text if ev.kind == Some("distributed-exposure") => format!(
            "{} ALERT pid {} [{}] distributed-exposure: {} ({}) listens on {} port {} ({}{}){}: {}",
            ev.unix_time,
            ev.pid,
            ev.verdict,
            ev.component.as_deref().unwrap_or("torch.distributed"),
            ev.cmdline.as_deref().unwrap_or(&ev.name),
            ev.address.as_deref().unwrap_or("?"),
            ev.port.unwrap_or(0),
            if ev.reachable_beyond_host == Some(true) {
                "reachable beyond the host"
            } else {
                "this host only"
            },
            if ev.public == Some(true) {
                ", public"
            } else {
                ", private range"
            },
            if ev.unattended {
                " (recorded unattended)"
            } else {
                ""
            },
            ev.evidence.first().map(String::as_str).unwrap_or("")
        ),
        WatchFormat::Text => {
            let what = match ev.event {
                "alert" => format!(
                    "{} ran {} {} ({})",
                    ev.kind.unwrap_or("?"),
                    if ev.program.is_empty() {
                        &ev.name
                    } else {
                        &ev.program
                    },
                    ev.argv
                        .iter()
                        .skip(1)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" "),
                    ev.comm
                ),
                "signal-sensor" => format!("sent signal {} to the sensor", ev.signal.unwrap_or(0)),
                other => format!("{other} {}", ev.model),
            };
            format!(
                "{} {} pid {} [{}] {} after {} opened {}{}",
                ev.unix_time,
                ev.event.to_uppercase(),
                ev.pid,
                ev.verdict,
                what,
                ev.origin_pid,
                ev.model,
                if ev.unattended {
                    " (recorded unattended)"
                } else {
                    ""
                }
            )
        }
        WatchFormat::Json => serde_json::to_string(ev).unwrap_or_default(),
        WatchFormat::Ecs => serde_json::to_string(&ecs(ev)).unwrap_or_default(),
    }
}

/// The event in Elastic Common Schema field names (the full pickguard event
/// is kept under `pickguard`).
fn ecs(ev: &Event) -> Value {
    let secs: f64 = ev.unix_time.parse().unwrap_or(0.0);
    let ts = time::OffsetDateTime::from_unix_timestamp_nanos((secs * 1e9) as i128)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    if ev.kind == Some("distributed-exposure") {
        return json!({
            "@timestamp": ts,
            "ecs": {"version": "8.11.0"},
            "event": {
                "kind": "alert",
                "category": ["network", "intrusion_detection"],
                "type": ["info"],
                "action": ev.event,
                "outcome": "success",
                "module": "pickguard",
                "dataset": "pickguard.watch",
                "reason": ev.kind,
            },
            "rule": {"name": ev.kind, "ruleset": "pickguard-watch"},
            "server": {"address": ev.address, "ip": ev.address, "port": ev.port},
            "network": {"transport": "tcp", "type": ev.family},
            "process": {
                "pid": ev.pid,
                "name": ev.name,
                "executable": ev.process.as_ref().and_then(|p| p.exe.clone()),
                "args": ev.argv,
                "command_line": ev.cmdline,
                "thread": {"id": ev.tid, "name": ev.comm},
                "parent": {"pid": ev.ppid},
                "user": {"id": ev.uid.to_string()},
                "group": {"id": ev.gid.to_string()},
            },
            "user": {"id": ev.uid.to_string()},
            "host": {"hostname": ev.hostname},
            "container": {"id": ev.process.as_ref().and_then(|o| o.container.clone())},
            "pickguard": ev,
        });
    }
    let model = ev.models.last();
    json!({
        "@timestamp": ts,
        "ecs": {"version": "8.11.0"},
        "event": {
            "kind": if ev.event == "alert" || ev.event == "signal-sensor" { "alert" } else { "event" },
            "category": ["process", "intrusion_detection"],
            "type": if ev.event == "alert" { json!(["start", "denied"]) } else { json!(["info"]) },
            "action": ev.event,
            "outcome": match ev.verdict { "killed" | "denied" => "failure", _ => "success" },
            "module": "pickguard",
            "dataset": "pickguard.watch",
            "reason": ev.kind,
        },
        "rule": {"name": ev.kind, "ruleset": "pickguard-watch"},
        "process": {
            "pid": ev.pid,
            "name": ev.name,
            "executable": ev.program,
            "args": ev.argv,
            "command_line": ev.cmdline,
            "parent": {"pid": ev.ppid, "command_line": ev.parent_cmdline},
            "user": {"id": ev.uid.to_string()},
            "group": {"id": ev.gid.to_string()},
        },
        "user": {"id": ev.uid.to_string()},
        "host": {"hostname": ev.hostname},
        "container": {"id": ev.origin.as_ref().and_then(|o| o.container.clone())},
        "file": model.map(|m| json!({
            "path": m.path,
            "size": m.size,
            "mtime": m.mtime,
            "hash": {"sha256": m.sha256},
        })),
        "pickguard": ev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposure() -> Event {
        Event {
            event: "alert",
            kind: Some("distributed-exposure"),
            pid: 42,
            verdict: "detected",
            cmdline: Some("python train.py".into()),
            address: Some("::".into()),
            port: Some(29500),
            family: Some("ipv6"),
            reachable_beyond_host: Some(true),
            public: Some(false),
            component: Some("TCPStore".into()),
            evidence: vec!["listen(2) called from torch's code".into()],
            ..Event::default()
        }
    }

    #[test]
    fn an_exposure_renders_its_address_in_every_format() {
        let ev = exposure();
        let text = render(&ev, WatchFormat::Text);
        assert!(
            text.contains("TCPStore (python train.py) listens on :: port 29500"),
            "{text}"
        );
        assert!(
            text.contains("reachable beyond the host, private range"),
            "{text}"
        );
        let ecs: Value = serde_json::from_str(&render(&ev, WatchFormat::Ecs)).unwrap();
        assert_eq!(ecs["server"]["port"], 29500);
        assert_eq!(ecs["server"]["address"], "::");
        assert_eq!(ecs["network"]["type"], "ipv6");
        assert_eq!(ecs["event"]["kind"], "alert");
        assert_eq!(ecs["pickguard"]["public"], false);
        let json: Value = serde_json::from_str(&render(&ev, WatchFormat::Json)).unwrap();
        assert_eq!(json["kind"], "distributed-exposure");
        assert_eq!(json["reachable_beyond_host"], true);
        // Fields of other kinds stay out of an exposure, and vice versa.
        assert!(json.get("models").is_none() && json.get("program").is_none());
        let shell = Event {
            event: "alert",
            kind: Some("shell"),
            ..Event::default()
        };
        let json: Value = serde_json::from_str(&render(&shell, WatchFormat::Json)).unwrap();
        assert!(json.get("address").is_none() && json.get("evidence").is_none());
    }
}
