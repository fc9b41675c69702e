//! The model manifest: one SHA-256 per file, named by its POSIX path
//! relative to the model root, and the root digest over them.
//!
//! Rules follow `model_signing` 1.1.x (method "files"): files sorted by path
//! components; a single-file model has one resource named `.`; ignored paths
//! are relative to the root and cover everything under them; symbolic links
//! are refused unless allowed; the root digest is SHA-256 over the raw
//! digests in the order listed.

use crate::SignError;
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Git paths `model_signing` ignores by default.
pub const GIT_PATHS: &[&str] = &[".git", ".gitignore", ".gitattributes", ".github"];

/// One hashed file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Resource {
    pub name: String,
    #[serde(serialize_with = "hex_ser")]
    pub digest: [u8; 32],
}

fn hex_ser<S: serde::Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(d))
}

/// How to build a manifest.
#[derive(Clone, Debug, Default)]
pub struct HashOptions {
    /// Paths relative to the model root (or absolute paths inside it) to leave out.
    pub ignore_paths: Vec<String>,
    /// Also hash `.git`, `.gitignore`, `.gitattributes`, `.github`.
    pub include_git_paths: bool,
    pub allow_symlinks: bool,
    /// Hash files in shards of this many bytes (method "shards"), so one
    /// large file is hashed on every core. None: one digest per file.
    pub shard_size: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Manifest {
    /// Final component of the model path.
    pub model_name: String,
    pub resources: Vec<Resource>,
    /// Ignored paths as recorded in a signature (relative, sorted).
    pub ignore_paths: Vec<String>,
    pub allow_symlinks: bool,
    /// Set for method "shards": resources are named `path:start:end`.
    pub shard_size: Option<u64>,
}

impl Manifest {
    /// SHA-256 over the concatenated digests, in listed order.
    pub fn root_digest(&self) -> [u8; 32] {
        root_digest(self.resources.iter().map(|r| &r.digest))
    }
}

pub fn root_digest<'a>(digests: impl Iterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut h = Sha256::new();
    for d in digests {
        h.update(d);
    }
    h.finalize().into()
}

/// SHA-256 of a file, read in large blocks (SHA-NI when the CPU has it).
pub fn hash_file(path: &Path) -> Result<[u8; 32], SignError> {
    let mut f = std::fs::File::open(path).map_err(SignError::io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf).map_err(SignError::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Normalise an ignore path to be relative to `root` with `/` separators.
fn relative_ignore(root: &Path, p: &str) -> String {
    let pb = Path::new(p);
    let rel = if pb.is_absolute() {
        pb.strip_prefix(root)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| pb.to_path_buf())
    } else {
        pb.to_path_buf()
    };
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn components(name: &str) -> Vec<&str> {
    name.split('/').collect()
}

/// Files of a model: manifest name and path on disk.
pub type Files = Vec<(String, PathBuf)>;

/// List the files of a model (relative names and full paths), following the rules above.
pub fn list_files(model: &Path, opts: &HashOptions) -> Result<(Files, Vec<String>), SignError> {
    let meta = std::fs::symlink_metadata(model).map_err(SignError::io(model))?;
    let mut ignore: Vec<String> = opts
        .ignore_paths
        .iter()
        .map(|p| relative_ignore(model, p))
        .collect();
    if !opts.include_git_paths {
        ignore.extend(GIT_PATHS.iter().map(|s| s.to_string()));
    }
    ignore.sort();
    ignore.dedup();
    ignore.retain(|p| !p.is_empty());
    if meta.file_type().is_symlink() && !opts.allow_symlinks {
        return Err(SignError::Symlink(model.to_owned()));
    }
    if std::fs::metadata(model)
        .map_err(SignError::io(model))?
        .is_file()
    {
        return Ok((vec![(".".to_owned(), model.to_owned())], ignore));
    }
    let mut out = Vec::new();
    let mut stack = vec![(model.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(SignError::io(&dir))? {
            let entry = entry.map_err(SignError::io(&dir))?;
            let fname = entry.file_name();
            let fname = fname
                .to_str()
                .ok_or_else(|| SignError::NonUtf8Name(entry.path()))?;
            let name = if rel.is_empty() {
                fname.to_owned()
            } else {
                format!("{rel}/{fname}")
            };
            if ignore
                .iter()
                .any(|i| name == *i || name.starts_with(&format!("{i}/")))
            {
                continue;
            }
            let path = entry.path();
            let ft = entry.file_type().map_err(SignError::io(&path))?;
            if ft.is_symlink() {
                if !opts.allow_symlinks {
                    return Err(SignError::Symlink(path));
                }
                let target = std::fs::metadata(&path).map_err(SignError::io(&path))?;
                if target.is_dir() {
                    stack.push((path, name));
                } else if target.is_file() {
                    out.push((name, path));
                } else {
                    return Err(SignError::NotRegular(path));
                }
            } else if ft.is_dir() {
                stack.push((path, name));
            } else if ft.is_file() {
                out.push((name, path));
            } else {
                return Err(SignError::NotRegular(path));
            }
        }
    }
    out.sort_by(|a, b| components(&a.0).cmp(&components(&b.0)));
    Ok((out, ignore))
}

/// Hash every file of a model, in parallel across files.
pub fn hash_model(model: &Path, opts: &HashOptions) -> Result<Manifest, SignError> {
    let (files, ignore) = list_files(model, opts)?;
    let resources = match opts.shard_size {
        None => files
            .par_iter()
            .map(|(name, path)| {
                Ok(Resource {
                    name: name.clone(),
                    digest: hash_file(path)?,
                })
            })
            .collect::<Result<Vec<_>, SignError>>()?,
        Some(size) => hash_shards(&files, size)?,
    };
    let model_name = model
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| model.display().to_string());
    Ok(Manifest {
        model_name,
        resources,
        ignore_paths: ignore,
        allow_symlinks: opts.allow_symlinks,
        shard_size: opts.shard_size,
    })
}

/// Shard boundaries as `model_signing` cuts them: [0, s), [s, 2s), ... up to
/// the size; an empty file has no shard (model_signing leaves it out).
fn shards_of(len: u64, size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if len == 0 {
        return out;
    }
    let mut start = 0;
    loop {
        let end = (start + size).min(len);
        out.push((start, end));
        if end >= len {
            return out;
        }
        start = end;
    }
}

/// SHA-256 of a byte range of a file.
fn hash_range(path: &Path, start: u64, end: u64) -> Result<[u8; 32], SignError> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(SignError::io(path))?;
    f.seek(SeekFrom::Start(start))
        .map_err(SignError::io(path))?;
    let mut h = Sha256::new();
    let mut left = end - start;
    let mut buf = vec![0u8; (4 << 20).min(left.max(1) as usize)];
    while left > 0 {
        let want = (buf.len() as u64).min(left) as usize;
        let n = f.read(&mut buf[..want]).map_err(SignError::io(path))?;
        if n == 0 {
            return Err(SignError::Io {
                path: path.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shrank while hashing",
                ),
            });
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(h.finalize().into())
}

/// Shard digests of these files (for verification).
pub fn hash_shards_pub(files: &[(String, PathBuf)], size: u64) -> Result<Vec<Resource>, SignError> {
    hash_shards(files, size)
}

/// Every shard of every file, hashed in parallel; sorted by path, then range.
fn hash_shards(files: &[(String, PathBuf)], size: u64) -> Result<Vec<Resource>, SignError> {
    if size == 0 {
        return Err(SignError::Bundle("shard size must be positive".into()));
    }
    let mut jobs = Vec::new();
    for (name, path) in files {
        let len = std::fs::metadata(path).map_err(SignError::io(path))?.len();
        for (a, b) in shards_of(len, size) {
            jobs.push((name, path, a, b));
        }
    }
    jobs.sort_by(|x, y| components(x.0).cmp(&components(y.0)).then(x.2.cmp(&y.2)));
    jobs.par_iter()
        .map(|(name, path, a, b)| {
            Ok(Resource {
                name: format!("{name}:{a}:{b}"),
                digest: hash_range(path, *a, *b)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_like_model_signing() {
        assert_eq!(shards_of(0, 10), vec![]);
        assert_eq!(shards_of(3, 10), vec![(0, 3)]);
        assert_eq!(shards_of(25, 10), vec![(0, 10), (10, 20), (20, 25)]);
        assert_eq!(shards_of(20, 10), vec![(0, 10), (10, 20)]);
    }

    #[test]
    fn order_is_by_components() {
        let mut v = vec!["a.txt", "a/b", "a-b", "B.txt"];
        v.sort_by(|a, b| components(a).cmp(&components(b)));
        assert_eq!(v, ["B.txt", "a/b", "a-b", "a.txt"]);
    }

    #[test]
    fn ignores_and_single_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(".git")).unwrap();
        std::fs::write(d.path().join(".git/HEAD"), b"x").unwrap();
        std::fs::create_dir_all(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/w.bin"), b"abc").unwrap();
        std::fs::write(d.path().join("model.sig"), b"sig").unwrap();
        let opts = HashOptions {
            ignore_paths: vec!["model.sig".into()],
            ..Default::default()
        };
        let m = hash_model(d.path(), &opts).unwrap();
        assert_eq!(m.resources.len(), 1);
        assert_eq!(m.resources[0].name, "sub/w.bin");
        assert_eq!(
            hex::encode(m.resources[0].digest),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(m.ignore_paths.contains(&"model.sig".to_string()));
        let one = hash_model(&d.path().join("sub/w.bin"), &HashOptions::default()).unwrap();
        assert_eq!(one.resources[0].name, ".");
        assert_eq!(one.model_name, "w.bin");
    }
}
