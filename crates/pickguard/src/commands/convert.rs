//! `pickguard convert`.

use crate::cli::{ConvertArgs, PlainFormat as Format, SharedArg};
use crate::input;
use anyhow::{Context, Result, bail};
use pickguard_convert::{ConvertError, Shared, WriteOptions, WriteReport, load, write_safetensors};
use pickguard_scan::Scanner;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Serialize)]
pub struct Outcome {
    pub input: String,
    #[serde(flatten)]
    pub result: OutcomeResult,
}

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum OutcomeResult {
    Converted(WriteReport),
    Refused { message: String },
    Error { message: String },
}

fn convert_file(
    scanner: &Scanner,
    input: &Path,
    output: &Path,
    opts: &WriteOptions,
) -> OutcomeResult {
    let name = input.display().to_string();
    let run = || -> Result<WriteReport, ConvertError> {
        let bytes = input::open(input).map_err(ConvertError::io(format!("reading {name}")))?;
        let ck = load(&name, &bytes, scanner)?;
        let src = File::open(input).map_err(ConvertError::io(format!("reading {name}")))?;
        write_safetensors(&ck, &src, output, opts)
    };
    match run() {
        Ok(r) => OutcomeResult::Converted(r),
        Err(e @ ConvertError::Refused { .. }) => OutcomeResult::Refused {
            message: e.to_string(),
        },
        Err(e) => OutcomeResult::Error {
            message: e.to_string(),
        },
    }
}

/// `pytorch_model-00001-of-00002.bin` -> `model-00001-of-00002.safetensors`.
fn shard_output_name(shard: &str) -> String {
    let stem = shard.rsplit_once('.').map(|(s, _)| s).unwrap_or(shard);
    let stem = stem.strip_prefix("pytorch_").unwrap_or(stem);
    format!("{stem}.safetensors")
}

fn find_index(dir: &Path) -> Option<PathBuf> {
    let preferred = dir.join("pytorch_model.bin.index.json");
    if preferred.is_file() {
        return Some(preferred);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".index.json") && !n.contains("safetensors"))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

pub fn run(args: ConvertArgs) -> Result<u8> {
    let opts = WriteOptions {
        key: args.key.clone(),
        strip_prefixes: args.strip_prefix.clone(),
        shared: match args.shared {
            SharedArg::Alias => Shared::Alias,
            SharedArg::Copy => Shared::Copy,
            SharedArg::Refuse => Shared::Refuse,
        },
        extra_json: args.extra_json.clone(),
        overwrite: args.force,
    };
    let mut options = pickguard_scan::ScanOptions::default();
    args.budgets.budgets()?.apply(&mut options);
    let scanner = Scanner::new(Default::default(), options);
    let outcomes = outcomes(&args.input, args.output.as_deref(), &opts, &scanner)?;
    report(&outcomes, args.format)?;
    let refused = outcomes
        .iter()
        .any(|o| matches!(o.result, OutcomeResult::Refused { .. }));
    let failed = outcomes
        .iter()
        .any(|o| matches!(o.result, OutcomeResult::Error { .. }));
    Ok(if refused {
        1
    } else if failed {
        2
    } else {
        0
    })
}

/// Convert `input` (a checkpoint, a sharded checkpoint directory, or a
/// directory of checkpoints) and say what happened to each file.
pub fn outcomes(
    input: &Path,
    output: Option<&Path>,
    opts: &WriteOptions,
    scanner: &Scanner,
) -> Result<Vec<Outcome>> {
    let meta = std::fs::metadata(input).with_context(|| format!("reading {}", input.display()))?;
    let mut outcomes = Vec::new();
    if meta.is_dir() {
        let out_dir = output
            .map(Path::to_path_buf)
            .unwrap_or_else(|| input.to_path_buf());
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("creating {}", out_dir.display()))?;
        if opts.extra_json.is_some() {
            bail!(
                "--extra-json names one file; it is for converting one checkpoint, not a directory"
            );
        }
        if let Some(index) = find_index(input) {
            outcomes = convert_sharded(scanner, input, &index, &out_dir, opts)?;
        } else {
            let mut files: Vec<PathBuf> = std::fs::read_dir(input)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .filter(|p| {
                    !p.extension()
                        .is_some_and(|e| e == "safetensors" || e == "json")
                })
                .collect();
            files.sort();
            let jobs: Vec<(PathBuf, PathBuf)> = files
                .into_iter()
                .filter(|f| {
                    // Only checkpoints: decided by content.
                    input::open(f).is_ok_and(|b| {
                        matches!(
                            pickguard_formats::sniff(&b),
                            pickguard_formats::Sniffed::Zip
                                | pickguard_formats::Sniffed::PickleLike
                        )
                    })
                })
                .map(|f| {
                    let stem = f
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let out = out_dir.join(format!("{stem}.safetensors"));
                    (f, out)
                })
                .collect();
            if jobs.is_empty() {
                bail!("no checkpoints in {}", input.display());
            }
            outcomes = jobs
                .par_iter()
                .map(|(f, o)| Outcome {
                    input: f.display().to_string(),
                    result: convert_file(scanner, f, o, opts),
                })
                .collect();
        }
    } else {
        let out = match &output.map(Path::to_path_buf) {
            Some(o) if o.is_dir() => o.join(format!(
                "{}.safetensors",
                input.file_stem().unwrap_or_default().to_string_lossy()
            )),
            Some(o) => o.clone(),
            None => input.with_extension("safetensors"),
        };
        if out == input {
            bail!("the output would overwrite the input; give -o");
        }
        outcomes.push(Outcome {
            input: input.display().to_string(),
            result: convert_file(scanner, input, &out, opts),
        });
    }
    Ok(outcomes)
}

fn convert_sharded(
    scanner: &Scanner,
    dir: &Path,
    index: &Path,
    out_dir: &Path,
    opts: &WriteOptions,
) -> Result<Vec<Outcome>> {
    let text =
        std::fs::read_to_string(index).with_context(|| format!("reading {}", index.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
    let map = doc["weight_map"]
        .as_object()
        .with_context(|| format!("{} has no weight_map", index.display()))?;
    let mut shards: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    shards.sort();
    shards.dedup();
    for s in &shards {
        if s.contains('/') || s.contains("..") {
            bail!("{}: shard name {s:?} leaves the directory", index.display());
        }
    }
    let outcomes: Vec<Outcome> = shards
        .par_iter()
        .map(|s| {
            let input = dir.join(s);
            let out = out_dir.join(shard_output_name(s));
            Outcome {
                input: input.display().to_string(),
                result: convert_file(scanner, &input, &out, opts),
            }
        })
        .collect();
    if outcomes
        .iter()
        .all(|o| matches!(o.result, OutcomeResult::Converted(_)))
    {
        let mut weight_map = BTreeMap::new();
        let mut total = 0u64;
        for (s, o) in shards.iter().zip(&outcomes) {
            let OutcomeResult::Converted(r) = &o.result else {
                continue;
            };
            total += r.bytes;
            let name = shard_output_name(s);
            let st = safetensors_names(&r.output)?;
            for n in st.iter().chain(r.aliases.keys()) {
                weight_map.insert(n.clone(), name.clone());
            }
        }
        // Every weight the original index lists must have landed somewhere.
        let missing: Vec<&String> = map
            .keys()
            .filter(|k| !weight_map.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            bail!(
                "after conversion, {} weight(s) of the index are missing, first {:?} (did --key or --strip-prefix rename them?)",
                missing.len(),
                missing[0]
            );
        }
        let idx = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        let path = out_dir.join("model.safetensors.index.json");
        std::fs::write(&path, serde_json::to_string_pretty(&idx)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(outcomes)
}

/// Tensor names in a safetensors file's header.
fn safetensors_names(path: &Path) -> Result<Vec<String>> {
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n)?;
    let mut h = vec![0u8; u64::from_le_bytes(n) as usize];
    f.read_exact(&mut h)?;
    let v: serde_json::Value = serde_json::from_slice(&h)?;
    Ok(v.as_object()
        .map(|o| o.keys().filter(|k| *k != "__metadata__").cloned().collect())
        .unwrap_or_default())
}

fn report(outcomes: &[Outcome], format: Format) -> Result<()> {
    match format {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"conversions": outcomes}))?
        )?,
        Format::Text => {
            for o in outcomes {
                match &o.result {
                    OutcomeResult::Converted(r) => {
                        outln!(
                            "converted {} -> {} ({} tensors, {} bytes)",
                            o.input,
                            r.output.display(),
                            r.tensors,
                            r.bytes
                        )?;
                        if let Some(k) = &r.selected {
                            let rest = match r.tensors_not_selected {
                                0 => String::new(),
                                n => format!(
                                    "; {n} other tensor(s) not written (--key . converts everything)"
                                ),
                            };
                            outln!("  converted the {k:?} entry{rest}")?;
                        }
                        if !r.aliases.is_empty() {
                            outln!(
                                "  {} tied name(s) recorded as aliases in the metadata (pickguard.aliases)",
                                r.aliases.len()
                            )?;
                        }
                        if r.other_values > 0 && !r.extra_json {
                            outln!(
                                "  {} non-tensor value(s) not written (--extra-json FILE keeps them)",
                                r.other_values
                            )?;
                        }
                    }
                    OutcomeResult::Refused { message } | OutcomeResult::Error { message } => {
                        eprintln!("pickguard: {}: {message}", o.input);
                    }
                }
            }
        }
    }
    Ok(())
}
