//! `pickguard inspect`.

use crate::cli::{InspectArgs, PlainFormat as Format};
use crate::input;
use anyhow::{Context, Result};
use pickguard_convert::{ConvertError, load, named_tensors};
use pickguard_scan::Scanner;
use serde_json::json;

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

pub fn run(args: InspectArgs) -> Result<u8> {
    let name = args.file.display().to_string();
    let bytes = input::open(&args.file).with_context(|| format!("reading {name}"))?;
    let scanner = Scanner::default();
    let ck = match load(&name, &bytes, &scanner) {
        Ok(ck) => ck,
        Err(e @ ConvertError::Refused { .. }) => {
            match args.format {
                Format::Text => outln!("{e}")?,
                _ => {
                    let r = scanner.scan_bytes(&name, &bytes);
                    outln!(
                        "{}",
                        serde_json::to_string_pretty(
                            &json!({"path": name, "verdict": r.verdict, "format": r.format, "findings": r.findings, "tensors": null})
                        )?
                    )?;
                }
            }
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    let (named, _) = named_tensors(&ck, Some("."))?;
    let total: u64 = named.iter().map(|(_, t)| ck.tensors[*t].nbytes()).sum();
    let mut storages: Vec<&str> = ck.tensors.iter().map(|t| t.storage.as_str()).collect();
    storages.sort_unstable();
    storages.dedup();
    match args.format {
        Format::Text => {
            let w = named
                .iter()
                .map(|(n, _)| n.len())
                .max()
                .unwrap_or(4)
                .clamp(4, 60);
            outln!("{name}: {} (clean)", ck.format)?;
            outln!(
                "{:<w$}  {:<7} {:<20} {:>12}  storage",
                "name",
                "dtype",
                "shape",
                "bytes"
            )?;
            for (n, t) in &named {
                let t = &ck.tensors[*t];
                let shape = format!("{:?}", t.shape);
                let view = if t.is_contiguous() && t.offset == 0 {
                    String::new()
                } else {
                    format!(" (view at {}, strides {:?})", t.offset, t.strides)
                };
                outln!(
                    "{n:<w$}  {:<7} {shape:<20} {:>12}  {}{view}",
                    t.dtype.safetensors_name(),
                    t.nbytes(),
                    t.storage
                )?;
            }
            outln!(
                "{} tensors, {} ({} bytes) in {} storages",
                named.len(),
                human(total),
                total,
                storages.len()
            )?;
        }
        _ => {
            let tensors: Vec<_> = named
                .iter()
                .map(|(n, t)| {
                    let t = &ck.tensors[*t];
                    json!({"name": n, "dtype": t.dtype.safetensors_name(), "shape": t.shape, "bytes": t.nbytes(),
                           "storage": t.storage, "offset": t.offset, "strides": t.strides, "contiguous": t.is_contiguous()})
                })
                .collect();
            outln!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"path": name, "format": ck.format, "verdict": "clean",
                "tensors": tensors, "total_bytes": total, "storages": storages.len()})
                )?
            )?;
        }
    }
    Ok(0)
}
