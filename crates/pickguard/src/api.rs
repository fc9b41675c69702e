//! The library face of the command line, for embedders (the Python module):
//! the same file walk, policy loading and reading rules as `pickguard scan`,
//! `convert`, `hash` and `verify`, so a caller gets the CLI's answers.

use crate::input;
use anyhow::{Context, Result, bail};
use pickguard_convert::{Checkpoint, ConvertError, Obj, Storage, TensorSpec};
use pickguard_scan::report::display_path;
use pickguard_scan::{FileReport, Policy, Scanner, UserPolicy};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::input::Bytes;

/// A file's bytes as pickguard reads them (a memory map for a regular file,
/// a bounded read for anything else).
pub fn open(path: &Path) -> std::io::Result<Bytes> {
    input::open(path)
}

/// A Hugging Face cache repository (`models--ORG--NAME`, `datasets--…`,
/// `spaces--…` holding `blobs/` and `snapshots/`): its files are read
/// through the snapshots (`snapshots/REVISION/NAME`, links into `blobs/`),
/// which is how the libraries load them and what names them.
fn is_hub_repo(dir: &Path) -> bool {
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    ["models--", "datasets--", "spaces--"]
        .iter()
        .any(|p| name.starts_with(p))
        && dir.join("snapshots").is_dir()
        && dir.join("blobs").is_dir()
}

/// The files a scan of `paths` reads: directories walked in name order,
/// skipping `.git`, following symbolic links unless `follow_links` is false;
/// what cannot be read (a loop, a FIFO in a tree) is an error report.
///
/// A Hugging Face cache repository is read through its snapshots: a blob
/// is reported under the name a revision gives it, and a blob no snapshot
/// names (an interrupted download, an old revision's file) under its own
/// path, so nothing in `blobs/` is left unread.
pub fn walk(paths: &[PathBuf], follow_links: bool) -> (Vec<PathBuf>, Vec<FileReport>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut hub_repos: Vec<PathBuf> = Vec::new();
    for p in paths {
        let meta = match std::fs::metadata(p) {
            Ok(m) => m,
            Err(e) => {
                errors.push(FileReport::error(&display_path(p), e.to_string()));
                continue;
            }
        };
        if !meta.is_dir() {
            out.push(p.clone());
            continue;
        }
        // Symbolic links are followed by default: a Hugging Face cache
        // snapshot is nothing but links into blobs/ (loops are reported).
        let walker = walkdir::WalkDir::new(p)
            .follow_links(follow_links)
            .sort_by_file_name();
        let skip = |e: &walkdir::DirEntry| {
            e.file_name() == ".git"
                || (e.file_name() == "blobs"
                    && e.file_type().is_dir()
                    && e.path().parent().is_some_and(is_hub_repo))
        };
        for entry in walker.into_iter().filter_entry(|e| !skip(e)) {
            match entry {
                Ok(e) if e.file_type().is_dir() && is_hub_repo(e.path()) => {
                    hub_repos.push(e.into_path())
                }
                Ok(e) if e.file_type().is_file() => out.push(e.into_path()),
                Ok(e) if e.path_is_symlink() && !follow_links => {
                    // A cache snapshot's links into its own blobs are the
                    // files' names, followed even so; a link out of the
                    // repository is not, and is said.
                    let Some(repo) = e.path().ancestors().skip(1).find(|a| is_hub_repo(a)) else {
                        continue;
                    };
                    let inside = std::fs::canonicalize(e.path()).is_ok_and(|t| {
                        std::fs::canonicalize(repo.join("blobs")).is_ok_and(|b| t.starts_with(b))
                    });
                    if inside && e.path().is_file() {
                        out.push(e.into_path());
                    } else {
                        errors.push(FileReport::error(
                            &display_path(e.path()),
                            "a link in a Hugging Face cache snapshot that leads out of its blobs/: not followed (--no-follow); a loader would follow it".into(),
                        ));
                    }
                }
                Ok(e) if !e.file_type().is_dir() && !e.file_type().is_symlink() => {
                    // FIFOs, sockets, devices inside a tree: not read, but said so.
                    errors.push(FileReport::error(
                        &display_path(e.path()),
                        "not a regular file; not scanned (give it as an argument to read it as a stream)"
                            .into(),
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    let path = e
                        .path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| p.display().to_string());
                    errors.push(FileReport::error(&path, e.to_string()));
                }
            }
        }
    }
    if !hub_repos.is_empty() {
        let named: std::collections::HashSet<PathBuf> = out
            .iter()
            .filter_map(|f| std::fs::canonicalize(f).ok())
            .collect();
        for repo in hub_repos {
            // Everything in blobs/ no snapshot named: at any depth, links
            // included (huggingface_hub reuses a blob by its name alone).
            let walker = walkdir::WalkDir::new(repo.join("blobs"))
                .follow_links(follow_links)
                .sort_by_file_name();
            for entry in walker {
                match entry {
                    Ok(e) if e.file_type().is_file() => {
                        let p = e.into_path();
                        if std::fs::canonicalize(&p).map_or(true, |c| !named.contains(&c)) {
                            out.push(p);
                        }
                    }
                    Ok(e) if e.path_is_symlink() && !follow_links => {
                        errors.push(FileReport::error(
                            &display_path(e.path()),
                            "a link in a Hugging Face cache's blobs/: not followed (--no-follow); huggingface_hub would load what it leads to".into(),
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let path = e.path().map(display_path).unwrap_or_default();
                        errors.push(FileReport::error(&path, e.to_string()));
                    }
                }
            }
        }
    }
    (out, errors)
}

/// The policy of `--config FILE` and `--allow module.name` (repeatable).
pub fn policy(config: Option<&Path>, allow: &[String]) -> Result<Policy> {
    let mut user = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading policy file {}", path.display()))?;
            toml::from_str::<UserPolicy>(&text)
                .with_context(|| format!("policy file {}", path.display()))?
        }
        None => UserPolicy::default(),
    };
    for a in allow {
        if a.is_empty() || !a.contains('.') {
            bail!("--allow {a:?}: expected module.name or module.*");
        }
        user.allow.push(a.clone());
    }
    Ok(Policy::from_user(user))
}

/// Scan one file (or stream) with a deadline, as `pickguard scan` does.
pub fn scan_file(scanner: &Scanner, path: &Path, timeout: Duration) -> FileReport {
    scan_file_as(scanner, path, path, timeout)
}

/// Scan the bytes of `read` as the file `named` (its name and directory
/// decide what a loader does with it: a copy is judged as the original).
pub fn scan_file_as(scanner: &Scanner, read: &Path, named: &Path, timeout: Duration) -> FileReport {
    let mut scanner = scanner.clone();
    let deadline = Instant::now() + timeout;
    scanner.options.pickle.limits.deadline = Some(deadline);
    let name = display_path(named);
    match input::open_until(read, deadline) {
        Ok(b) => scanner.scan_bytes(&name, &b),
        Err(e) => FileReport::error(&name, e.to_string()),
    }
}

/// A checkpoint rebuilt by the restricted builder, with its bytes.
pub struct Loaded {
    pub checkpoint: Checkpoint,
    bytes: Bytes,
}

impl Loaded {
    pub fn root(&self) -> &Obj {
        &self.checkpoint.root
    }

    pub fn tensors(&self) -> &[TensorSpec] {
        &self.checkpoint.tensors
    }

    /// Every storage the tensors use and its size in bytes, sorted by key;
    /// every tensor is checked to lie inside its storage.
    pub fn storages(&self) -> Result<Vec<(&str, usize)>, ConvertError> {
        let mut out = Vec::new();
        for (k, s) in &self.checkpoint.storages {
            let len = match s {
                Storage::File { offset, len } => {
                    let end = offset.checked_add(*len);
                    if end.is_none_or(|e| e > self.bytes.len() as u64) {
                        return Err(ConvertError::Format(format!(
                            "storage {k}: bytes {offset}..+{len} are outside the file"
                        )));
                    }
                    *len as usize
                }
                Storage::Memory(m) => m.len(),
            };
            out.push((k.as_str(), len));
        }
        out.sort_by(|a, b| a.0.cmp(b.0));
        // Every tensor must fit in its storage: a view past the end would
        // read memory that is not the checkpoint's.
        for t in &self.checkpoint.tensors {
            let Ok(i) = out.binary_search_by(|(k, _)| (*k).cmp(t.storage.as_str())) else {
                return Err(ConvertError::Format(format!(
                    "a tensor refers to storage {}, which the checkpoint does not hold",
                    t.storage
                )));
            };
            let need = t.extent_bytes().ok_or_else(|| {
                ConvertError::Format(format!("a tensor of storage {} overflows", t.storage))
            })?;
            if need > out[i].1 as u64 {
                return Err(ConvertError::Format(format!(
                    "a tensor needs {need} bytes of storage {}, which has {}",
                    t.storage, out[i].1
                )));
            }
        }
        Ok(out)
    }

    /// Copy storage `key` (of the size [`Loaded::storages`] gives) into `dst`.
    pub fn read_storage(&self, key: &str, dst: &mut [u8]) -> Result<(), ConvertError> {
        match self.checkpoint.storages.get(key) {
            Some(Storage::File { offset, len }) if *len as usize == dst.len() => self
                .bytes
                .copy_to(*offset, dst)
                .map_err(ConvertError::io(format!("reading storage {key}"))),
            Some(Storage::Memory(m)) if m.len() == dst.len() => {
                dst.copy_from_slice(m);
                Ok(())
            }
            _ => Err(ConvertError::Format(format!(
                "storage {key} is not {} bytes",
                dst.len()
            ))),
        }
    }
}

/// Why [`load`] gave no checkpoint.
pub enum LoadError {
    /// The file is not pure tensor data: the scan report says what would run.
    Refused(Box<FileReport>),
    Convert(ConvertError),
}

/// Scan `path` and, when it is pure tensor data, rebuild its values and
/// tensors without running any of its code (`pickguard convert`'s loader).
pub fn load(path: &Path, scanner: &Scanner) -> Result<Loaded, LoadError> {
    let name = display_path(path);
    let bytes = input::open(path)
        .map_err(ConvertError::io(format!("reading {name}")))
        .map_err(LoadError::Convert)?;
    let report = scanner.scan_bytes(&name, &bytes);
    if report.verdict != pickguard_scan::Verdict::Clean {
        return Err(LoadError::Refused(Box::new(report)));
    }
    let checkpoint = if report.format == "safetensors" {
        safetensors_checkpoint(&bytes).map_err(LoadError::Convert)?
    } else {
        pickguard_convert::load(&name, &bytes, scanner).map_err(LoadError::Convert)?
    };
    Ok(Loaded { checkpoint, bytes })
}

/// A safetensors file as a checkpoint: a flat dictionary of tensors, each
/// its own storage (the header parsed by the `safetensors` crate, which is
/// what Python's safetensors runs).
fn safetensors_checkpoint(bytes: &[u8]) -> Result<Checkpoint, ConvertError> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| ConvertError::Format(format!("safetensors refuses this file: {e}")))?;
    let mut names: Vec<(String, safetensors::tensor::TensorView<'_>)> = st.tensors();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let mut root = Vec::new();
    let mut tensors = Vec::new();
    let mut storages = std::collections::HashMap::new();
    for (name, view) in names {
        let dname = format!("{:?}", view.dtype());
        let dtype =
            pickguard_formats::dtype::DType::from_safetensors_name(&dname).ok_or_else(|| {
                ConvertError::Unsupported {
                    what: format!(
                        "tensor {name} has dtype {dname}, which pickguard does not rebuild"
                    ),
                    offset: 0,
                }
            })?;
        let shape: Vec<u64> = view.shape().iter().map(|&n| n as u64).collect();
        let mut strides = vec![1u64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        let data = view.data();
        let offset = (data.as_ptr() as usize)
            .checked_sub(bytes.as_ptr() as usize)
            .filter(|o| o + data.len() <= bytes.len())
            .ok_or_else(|| ConvertError::Format(format!("tensor {name}: data outside the file")))?;
        storages.insert(
            name.clone(),
            Storage::File {
                offset: offset as u64,
                len: data.len() as u64,
            },
        );
        root.push((name.clone(), Obj::Tensor(tensors.len())));
        tensors.push(TensorSpec {
            dtype,
            shape,
            strides,
            offset: 0,
            storage: name,
        });
    }
    Ok(Checkpoint {
        format: "safetensors".into(),
        root: Obj::Dict(root),
        tensors,
        storages,
    })
}

pub use crate::commands::convert::{Outcome, OutcomeResult};
pub use pickguard_convert::{Shared, WriteOptions};
pub use pickguard_sign::{HashOptions, VerifyOptions, VerifyReport};

/// `pickguard convert`: one outcome per checkpoint (converted, refused with
/// the findings, or an error); `input` may be a file, a sharded checkpoint
/// directory or a directory of checkpoints.
pub fn convert(input: &Path, output: Option<&Path>, opts: &WriteOptions) -> Result<Vec<Outcome>> {
    crate::commands::convert::outcomes(input, output, opts, &Scanner::default())
}

/// `pickguard hash --format json`: the OpenSSF model-signing manifest.
pub fn hash(model: &Path, opts: &HashOptions) -> Result<serde_json::Value> {
    let m = pickguard_sign::hash_model(model, opts)?;
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    Ok(serde_json::json!({
        "model": m.model_name, "root_digest": hex(&m.root_digest()), "hash_type": "sha256",
        "ignore_paths": m.ignore_paths, "resources": m.resources
    }))
}

/// `pickguard verify`: trust is a PEM public key, or a certificate chain
/// (PEM files, the root last).
pub fn verify(
    model: &Path,
    signature: &Path,
    public_key: Option<&PathBuf>,
    cert_chain: &[PathBuf],
    opts: &VerifyOptions,
) -> Result<VerifyReport> {
    let trust = crate::commands::sign::trust(public_key, cert_chain)?;
    crate::commands::sign::verify_report(model, signature, &trust, opts)
}

/// docs/rules.md as the rule tables make it (what `cargo dev docs` writes).
pub fn rules_markdown() -> String {
    crate::commands::rules::markdown()
}
