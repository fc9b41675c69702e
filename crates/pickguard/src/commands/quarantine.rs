//! `scan --quarantine DIR`: moving malicious files aside without ever
//! deleting, overwriting or appending to anything else.
//!
//! Deleting is the dangerous half. Every name is reached through directory
//! handles opened one component at a time without following links
//! (`openat` + `O_NOFOLLOW`), so a directory swapped for a link while we
//! work cannot redirect the unlink; the name removed must still be the file
//! that was copied (same device and inode); the copy is scanned again and
//! must be malicious itself. The quarantine directory must be the caller's
//! own and writable by nobody else, and everything in it is created
//! exclusively, so nothing planted there is followed or overwritten.
//! (`std::fs` has no `*at` calls: `rustix` provides them, safely.)

use anyhow::{Context, Result, bail};
use pickguard_scan::{FileReport, Scanner, Verdict};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// An opened quarantine directory.
pub struct Quarantine {
    path: PathBuf,
    fd: OwnedFd,
    seq: std::sync::atomic::AtomicU64,
}

/// Open `dir` (an absolute path without links in it) one component at a
/// time, following no link.
fn open_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY;
    let mut fd = rustix::fs::openat(rustix::fs::CWD, "/", flags, Mode::empty())?;
    for c in dir.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => fd = rustix::fs::openat(&fd, n, flags, Mode::empty())?,
            _ => {
                return Err(std::io::Error::other(format!(
                    "{} is not a plain absolute path",
                    dir.display()
                )));
            }
        }
    }
    Ok(fd)
}

impl Quarantine {
    /// Open (or create, 0700) the quarantine. One that is a link, belongs to
    /// someone else, or that others may write into is refused.
    pub fn open(dir: &Path) -> Result<Quarantine> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        match std::fs::symlink_metadata(dir) {
            Ok(m) => {
                anyhow::ensure!(
                    m.is_dir(),
                    "{} is not a directory (a link is not followed)",
                    dir.display()
                );
                let me = rustix::process::geteuid().as_raw();
                anyhow::ensure!(
                    m.uid() == me,
                    "{} belongs to uid {}, not to this user: a quarantine must be your own",
                    dir.display(),
                    m.uid()
                );
                anyhow::ensure!(
                    m.mode() & 0o022 == 0,
                    "{} is writable by others (mode {:o}): anyone could plant files in it",
                    dir.display(),
                    m.mode() & 0o777
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("checking {}", dir.display())),
        }
        let path =
            std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
        let fd = open_dir(&path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Quarantine {
            path,
            fd,
            seq: Default::default(),
        })
    }

    /// Move one malicious file in. Returns where it is kept and, when other
    /// names still reach the same bytes (hard links), a note saying so.
    pub fn put(
        &self,
        scanner: &Scanner,
        timeout: Duration,
        path: &Path,
        report: &FileReport,
    ) -> Result<(PathBuf, Option<String>)> {
        use std::os::unix::fs::MetadataExt;
        // What a loader would open: the link's target.
        let real =
            std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
        if real.starts_with(&self.path) {
            bail!("it is inside the quarantine already; left alone");
        }
        let (Some(parent), Some(name)) = (real.parent(), real.file_name()) else {
            bail!("{} has no parent directory", real.display());
        };
        let pfd = open_dir(parent).with_context(|| format!("opening {}", parent.display()))?;
        let src: std::fs::File = rustix::fs::openat(
            &pfd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", real.display()))?
        .into();
        let meta = src.metadata()?;
        anyhow::ensure!(meta.is_file(), "{} is not a regular file", real.display());
        let id = (meta.dev(), meta.ino());
        // The copy, under a name of our own, created exclusively.
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = format!(".incoming-{}-{n}", std::process::id());
        let (sha, size) = self.copy_in(src, &tmp).inspect_err(|_| {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
        })?;
        // The copy is judged as the file it copies (its name and directory
        // matter: a Keras config.json, a model extension, ONNX data beside it).
        let again = crate::api::scan_file_as(scanner, &self.path.join(&tmp), path, timeout);
        if again.verdict != Verdict::Malicious {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
            bail!(
                "it changed since it was scanned (its bytes now scan {:?}); left in place",
                again.verdict
            );
        }
        let dest = self.settle(&tmp, &sha, name)?;
        let rules: Vec<&str> = report.findings.iter().map(|f| f.rule.id()).collect();
        let line = serde_json::json!({
            "time": time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "path": path.display().to_string(),
            "path_bytes": hex::encode(path.as_os_str().as_encoded_bytes()),
            "resolved": real.display().to_string(),
            "stored": dest.display().to_string(),
            "sha256": sha,
            "size": size,
            "format": report.format,
            "verdict": "malicious",
            "rules": rules,
        })
        .to_string()
            + "\n";
        let mut m: std::fs::File = rustix::fs::openat(
            &self.fd,
            "manifest.jsonl",
            OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .context("opening manifest.jsonl")?
        .into();
        m.write_all(line.as_bytes())
            .and_then(|_| m.sync_all())
            .context("writing the manifest")?;
        // Only now does the original go: through the directory handle, and
        // only if the name still holds the file that was copied.
        let now = rustix::fs::statat(&pfd, name, AtFlags::SYMLINK_NOFOLLOW)
            .with_context(|| format!("checking {}", real.display()))?;
        let same = rustix::fs::FileType::from_raw_mode(now.st_mode)
            == rustix::fs::FileType::RegularFile
            && (now.st_dev, now.st_ino) == id;
        anyhow::ensure!(
            same,
            "{} was replaced while it was being quarantined; left in place (a copy of what was there is {})",
            real.display(),
            dest.display()
        );
        rustix::fs::unlinkat(&pfd, name, AtFlags::empty()).with_context(|| {
            format!("removing {} (a copy is {})", real.display(), dest.display())
        })?;
        let _ = rustix::fs::fsync(&pfd);
        let note = (meta.nlink() > 1).then(|| {
            format!(
                "{} other name(s) still link to the same bytes (hard links): find them with `find / -samefile {}`",
                meta.nlink() - 1,
                dest.display()
            )
        });
        Ok((dest, note))
    }

    /// Copy `src` into the quarantine as `tmp` (created exclusively),
    /// hashing; durable when this returns.
    fn copy_in(&self, mut src: std::fs::File, tmp: &str) -> Result<(String, u64)> {
        use sha2::Digest;
        let mut out: std::fs::File = rustix::fs::openat(
            &self.fd,
            tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .context("creating the copy")?
        .into();
        let (mut h, mut buf, mut n) = (sha2::Sha256::new(), vec![0u8; 1 << 20], 0u64);
        loop {
            let k = src.read(&mut buf).context("reading the file")?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            out.write_all(&buf[..k]).context("writing the copy")?;
            n += k as u64;
        }
        out.sync_all().context("writing the copy")?;
        Ok((hex::encode(h.finalize()), n))
    }

    /// Rename the copy to <sha256>/<name> (never over anything: the same
    /// bytes there already are kept, other bytes get the next free name).
    fn settle(&self, tmp: &str, sha: &str, name: &std::ffi::OsStr) -> Result<PathBuf> {
        match rustix::fs::mkdirat(&self.fd, sha, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e).context("creating the slot"),
        }
        let sfd = rustix::fs::openat(
            &self.fd,
            sha,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
            Mode::empty(),
        )
        .context("opening the slot")?;
        let base = name.to_string_lossy().into_owned();
        for i in 0..1000u32 {
            let candidate = if i == 0 {
                base.clone()
            } else {
                format!("{base}.{i}")
            };
            match rustix::fs::renameat_with(
                &self.fd,
                tmp,
                &sfd,
                candidate.as_str(),
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => {
                    let _ = rustix::fs::fsync(&sfd);
                    let _ = rustix::fs::fsync(&self.fd);
                    return Ok(self.path.join(sha).join(candidate));
                }
                Err(rustix::io::Errno::EXIST) => {
                    if same_content(&sfd, &candidate, sha) {
                        let _ = rustix::fs::unlinkat(&self.fd, tmp, AtFlags::empty());
                        return Ok(self.path.join(sha).join(candidate));
                    }
                }
                Err(e) => {
                    let _ = rustix::fs::unlinkat(&self.fd, tmp, AtFlags::empty());
                    return Err(e).context("moving the copy into place");
                }
            }
        }
        let _ = rustix::fs::unlinkat(&self.fd, tmp, AtFlags::empty());
        bail!("no free name left in its slot")
    }
}

/// Is `name` in `dir` a regular file (not a link) with this sha256?
fn same_content(dir: &impl AsFd, name: &str, sha: &str) -> bool {
    use sha2::Digest;
    let Ok(fd) = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let mut f: std::fs::File = fd.into();
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    let (mut h, mut buf) = (sha2::Sha256::new(), vec![0u8; 1 << 20]);
    loop {
        match f.read(&mut buf) {
            Ok(0) => return hex::encode(h.finalize()) == sha,
            Ok(k) => h.update(&buf[..k]),
            Err(_) => return false,
        }
    }
}
