//! The firewall's own hosted index: twine-compatible uploads
//! (`POST /` or `/legacy/`, `:action=file_upload`). An upload claims its
//! project name before the file becomes visible, and the hosted index is
//! consulted like a private upstream, ahead of all others.
//!
//! Storage, and why it is atomic: the upload is streamed to a temporary file
//! (hashed on the way, size-limited, fsynced), then, under the project's
//! lock, hard-linked to its final name — `link` fails if the name exists, so
//! of concurrent uploads of one filename exactly one wins and the others get
//! 409 — and only then is the sidecar (`FILE.pickguard.json`) written to a
//! temporary name, fsynced and renamed into place. The sidecar is what makes
//! a file visible; a file without one is a crash leftover, removed at start
//! and when the same filename is uploaded again. Any failure removes what it
//! wrote, so a full disk leaves nothing behind.

use crate::AppState;
use pickguard_index::{File, Project, normalize};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Sidecar record of an uploaded file.
#[derive(Serialize, Deserialize)]
pub(crate) struct Sidecar {
    pub(crate) sha256: String,
    upload_time: String,
    requires_python: Option<String>,
    size: u64,
    /// Who uploaded it (token name).
    #[serde(default)]
    uploader: Option<String>,
    /// On an object store: the key of the bytes this record stands for
    /// (each upload writes its own, so no other upload or delete touches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) blob: Option<String>,
}

impl AppState {
    fn hosted_dir(&self, project: &str) -> PathBuf {
        self.cfg.files_root().join("hosted").join(project)
    }

    /// The hosted project page, if anything was uploaded under that name.
    pub fn hosted_project(&self, name: &str) -> Option<Project> {
        let dir = self.hosted_dir(name);
        let mut files = Vec::new();
        for e in std::fs::read_dir(&dir).ok()?.flatten() {
            let fname = e.file_name().to_string_lossy().into_owned();
            let Some(dist) = fname.strip_suffix(".pickguard.json") else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let Ok(sc) = serde_json::from_str::<Sidecar>(&text) else {
                continue;
            };
            files.push(File {
                filename: dist.to_owned(),
                url: format!("/files/hosted/{name}/{}/{dist}", sc.sha256),
                hashes: [("sha256".to_string(), sc.sha256)].into(),
                requires_python: sc.requires_python,
                core_metadata: None,
                yanked: Default::default(),
                size: Some(sc.size),
                upload_time: Some(sc.upload_time),
            });
        }
        files.sort_by(|a, b| a.filename.cmp(&b.filename));
        (!files.is_empty()).then(|| Project {
            name: name.to_owned(),
            files,
            ..Default::default()
        })
    }

    /// Every hosted file, for the console: project, filename, size, sha256,
    /// upload time and uploader.
    pub(crate) fn hosted_listing(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.cfg.files_root().join("hosted")) else {
            return out;
        };
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            let Some(p) = self.hosted_project(&n) else {
                continue;
            };
            for f in p.files {
                out.push(serde_json::json!({
                    "project": n,
                    "filename": f.filename,
                    "size": f.size,
                    "sha256": f.hashes.get("sha256"),
                    "uploaded": f.upload_time,
                }));
            }
        }
        out
    }

    /// Path of a hosted file whose sha256 matches, if there is one.
    pub fn hosted_file(&self, project: &str, sha256: &str, filename: &str) -> Option<PathBuf> {
        let sc: Sidecar = serde_json::from_str(
            &std::fs::read_to_string(
                self.hosted_dir(project)
                    .join(format!("{filename}.pickguard.json")),
            )
            .ok()?,
        )
        .ok()?;
        sc.sha256
            .eq_ignore_ascii_case(sha256)
            .then(|| self.hosted_dir(project).join(filename))
    }

    /// Store an upload already streamed to `tmp` (which this removes in all
    /// cases). Errors are (HTTP status, message).
    pub async fn store_upload(&self, u: Upload) -> Result<(), (u16, String)> {
        let tmp = u.tmp.clone();
        let r = self.store_upload_inner(u).await;
        let _ = std::fs::remove_file(&tmp);
        r
    }

    async fn store_upload_inner(&self, u: Upload) -> Result<(), (u16, String)> {
        let project = check_upload(&u)?;
        // Uploads of one project through this process take turns.
        let lock = {
            let mut locks = self
                .upload_locks
                .lock()
                .map_err(|_| (500, "upload lock poisoned".to_string()))?;
            if locks.len() > 10_000 {
                locks.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
            }
            locks.entry(project.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if let Some(o) = &self.objects {
            return self.store_upload_objects(o, &u, &project).await;
        }
        let dir = self.hosted_dir(&project);
        let target = dir.join(&u.filename);
        let sidecar = dir.join(format!("{}.pickguard.json", u.filename));
        // Other replicas share the directory: the file lock makes the check,
        // link and record below one step for all of them.
        let _flock = self
            .project_lock(&project)
            .map_err(|e| (500, format!("storage lock: {e}")))?;
        if sidecar.exists() {
            return Err((
                409,
                format!(
                    "File already exists: {} (uploads never replace a file; delete it through the admin API first)",
                    u.filename
                ),
            ));
        }
        // A file without its sidecar is the leftover of a crash between the
        // two steps (we hold the project's lock, so no upload is in flight).
        if target.exists() {
            tracing::warn!(event = "hosted-leftover-removed", project = %project, file = %u.filename, "removed an uploaded file that was never recorded");
            std::fs::remove_file(&target).map_err(|e| (500, format!("storage: {e}")))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| (500, format!("storage: {e}")))?;
        std::fs::hard_link(&u.tmp, &target).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                (409, format!("File already exists: {}", u.filename))
            } else {
                (500, format!("storage: {e}"))
            }
        })?;
        // Claim before the file is visible; forget a new claim if we fail after.
        let newly_claimed = match self.claim_reason(&project) {
            Some(_) => false,
            None => self
                .db
                .claim(&project, &format!("upload by {}", u.actor))
                .map_err(|e| {
                    let _ = std::fs::remove_file(&target);
                    (500, format!("claim registry: {e}"))
                })?,
        };
        let sc = Sidecar {
            sha256: u.sha256.clone(),
            upload_time: crate::state::now_rfc3339(),
            requires_python: u.requires_python.clone(),
            size: u.size,
            uploader: Some(u.actor.clone()),
            blob: None,
        };
        let tmp_sc = dir.join(format!(".{}.pickguard.json.part", u.filename));
        let written = write_synced(&tmp_sc, &serde_json::to_vec(&sc).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp_sc, &sidecar))
            .and_then(|()| sync_dir(&dir));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp_sc);
            let _ = std::fs::remove_file(&sidecar);
            let _ = std::fs::remove_file(&target);
            if newly_claimed {
                let _ = self.db.unclaim(&project);
            }
            return Err((507, format!("storage: {e}; nothing was stored")));
        }
        self.hosted_changed(&project);
        Ok(())
    }

    /// Delete a hosted file (admin). Returns whether it existed.
    pub fn delete_hosted(&self, project: &str, filename: &str) -> Result<bool, String> {
        if filename.contains('/') || filename.contains('\\') || filename.starts_with('.') {
            return Err(format!("invalid file name {filename:?}"));
        }
        let dir = self.hosted_dir(project);
        let sidecar = dir.join(format!("{filename}.pickguard.json"));
        let _flock = self
            .project_lock(project)
            .map_err(|e| format!("storage lock: {e}"))?;
        // The sidecar first: the file is invisible from that moment.
        let existed = match std::fs::remove_file(&sidecar) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(format!("storage: {e}")),
        };
        match std::fs::remove_file(dir.join(filename)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("storage: {e}")),
        }
        let _ = std::fs::remove_dir(&dir); // only when empty
        self.hosted_changed(project);
        Ok(existed)
    }

    /// Does the hosted index hold any file of this project?
    pub fn has_hosted(&self, project: &str) -> bool {
        self.hosted_project(project).is_some()
    }

    /// A hosted file came or went: this replica's pages of the project are
    /// dropped, and the registry's generation moves so every other
    /// replica's are too.
    fn hosted_changed(&self, project: &str) {
        self.invalidate(project);
        if let Err(e) = self.db.touch() {
            tracing::error!(event = "generation-bump-failed", project = %project, error = %e, "other replicas keep their page of this project until it expires");
        }
    }

    /// The lock of a hosted project, shared by every process using the
    /// files directory (held while the returned file is open).
    fn project_lock(&self, project: &str) -> std::io::Result<std::fs::File> {
        lock_project(&self.cfg.files_root().join("hosted"), project)
    }

    /// Directory uploads are streamed into before they are checked.
    pub fn incoming_dir(&self) -> PathBuf {
        self.cfg.files_root().join("hosted").join(".incoming")
    }
}

/// An upload streamed to a temporary file, with its form fields.
pub struct Upload {
    pub actor: String,
    pub name: String,
    pub version: String,
    pub filename: String,
    pub tmp: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub requires_python: Option<String>,
}

fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Remove crash leftovers from the hosted tree: temporary files, and files
/// never recorded by a sidecar.
fn lock_project(root: &Path, project: &str) -> std::io::Result<std::fs::File> {
    let d = root.join(".locks");
    std::fs::create_dir_all(&d)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(d.join(format!("{project}.lock")))?;
    f.lock()?;
    Ok(f)
}

/// Uploads still being received are touched as they arrive; one this old is
/// a leftover.
const STALE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Remove what crashes left: files without a sidecar (taken under the
/// project's lock, so never a file another replica is recording right now)
/// and incoming uploads nobody has written to for an hour.
pub fn recover(root: &Path) {
    if let Ok(rd) = std::fs::read_dir(root.join(".incoming")) {
        for e in rd.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let Ok(projects) = std::fs::read_dir(root) else {
        return;
    };
    for p in projects.flatten() {
        let pname = p.file_name().to_string_lossy().into_owned();
        if pname.starts_with('.') {
            continue;
        }
        let Ok(_lock) = lock_project(root, &pname) else {
            continue;
        };
        let Ok(files) = std::fs::read_dir(p.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let path = f.path();
            let orphan = if name.starts_with('.') && name.ends_with(".part") {
                true
            } else if name.ends_with(".pickguard.json") {
                false
            } else {
                !p.path().join(format!("{name}.pickguard.json")).exists()
            };
            if orphan {
                tracing::warn!(event = "hosted-leftover-removed", path = %path.display(), "removed an unrecorded upload left by a crash");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

fn version_eq(a: &str, b: &str) -> bool {
    match (
        a.parse::<pep440_rs::Version>(),
        b.parse::<pep440_rs::Version>(),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// What a distribution file name says: (kind, version). Wheels follow the
/// binary distribution format (5 or 6 dash-separated fields, escaped name);
/// sdists are `.tar.gz` or (legacy) `.zip`, `NAME-VERSION` with any legacy
/// spelling of the name.
pub fn parse_dist_filename(filename: &str, project: &str) -> Result<(Kind, String), String> {
    if let Some(stem) = filename.strip_suffix(".whl") {
        let parts: Vec<&str> = stem.split('-').collect();
        if !(parts.len() == 5 || parts.len() == 6) || parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "{filename:?} is not a wheel file name (NAME-VERSION[-BUILD]-PY-ABI-PLATFORM.whl)"
            ));
        }
        if normalize(parts[0]) != project {
            return Err(format!(
                "{filename:?} does not belong to project {project:?}"
            ));
        }
        if parts.len() == 6 && !parts[2].starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "{filename:?}: the build tag must start with a digit"
            ));
        }
        return Ok((Kind::Wheel, parts[1].replace('_', "-")));
    }
    let (stem, kind) = if let Some(s) = filename.strip_suffix(".tar.gz") {
        (s, Kind::TarGz)
    } else if let Some(s) = filename.strip_suffix(".zip") {
        (s, Kind::Zip)
    } else {
        return Err(format!(
            "{filename:?}: only wheels (.whl) and sdists (.tar.gz, legacy .zip) are accepted"
        ));
    };
    stem.match_indices('-')
        .find(|(i, _)| normalize(&stem[..*i]) == project && *i + 1 < stem.len())
        .map(|(i, _)| (kind, stem[i + 1..].to_owned()))
        .ok_or_else(|| format!("{filename:?} does not belong to project {project:?}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Wheel,
    TarGz,
    Zip,
}

/// Most bytes read from a metadata file inside an upload.
const MAX_METADATA: u64 = 4 << 20;

/// `Name` and `Version` of a core-metadata document (RFC 822 headers).
fn name_version(text: &str) -> (Option<String>, Option<String>) {
    let (mut name, mut version) = (None, None);
    for line in text.lines() {
        if line.is_empty() {
            break; // the body (description) starts
        }
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "name" if name.is_none() => name = Some(v.trim().to_owned()),
                "version" if version.is_none() => version = Some(v.trim().to_owned()),
                _ => {}
            }
        }
    }
    (name, version)
}

/// The core metadata inside an uploaded file, read as installers read it:
/// a wheel's `*.dist-info/METADATA` (zipfile: central directory), an
/// sdist's top-level `*/PKG-INFO`.
fn read_metadata(path: &Path, kind: Kind) -> Result<String, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("storage: {e}"))?;
    let mut out = String::new();
    match kind {
        Kind::Wheel | Kind::Zip => {
            let mut z = zip::ZipArchive::new(f).map_err(|e| format!("not a zip archive: {e}"))?;
            let want = |n: &str| {
                let parts: Vec<&str> = n.split('/').collect();
                match kind {
                    Kind::Wheel => {
                        parts.len() == 2
                            && parts[0].ends_with(".dist-info")
                            && parts[1] == "METADATA"
                    }
                    _ => parts.len() == 2 && parts[1] == "PKG-INFO",
                }
            };
            let names: Vec<String> = z
                .file_names()
                .filter(|n| want(n))
                .map(str::to_owned)
                .collect();
            if names.len() != 1 {
                return Err(format!(
                    "expected exactly one {} in the archive, found {}",
                    if kind == Kind::Wheel {
                        "*.dist-info/METADATA"
                    } else {
                        "*/PKG-INFO"
                    },
                    names.len()
                ));
            }
            z.by_name(&names[0])
                .map_err(|e| e.to_string())?
                .take(MAX_METADATA)
                .read_to_string(&mut out)
                .map_err(|e| format!("reading {}: {e}", names[0]))?;
        }
        Kind::TarGz => {
            let mut t = tar::Archive::new(flate2::read::GzDecoder::new(f));
            let mut found = false;
            for e in t.entries().map_err(|e| format!("not a .tar.gz: {e}"))? {
                let mut e = e.map_err(|e| format!("not a .tar.gz: {e}"))?;
                let p = e
                    .path()
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .into_owned();
                let parts: Vec<&str> = p.trim_start_matches("./").split('/').collect();
                if parts.len() == 2 && parts[1] == "PKG-INFO" {
                    (&mut e)
                        .take(MAX_METADATA)
                        .read_to_string(&mut out)
                        .map_err(|e| format!("reading PKG-INFO: {e}"))?;
                    found = true;
                    break;
                }
            }
            if !found {
                return Err("no top-level */PKG-INFO in the sdist".into());
            }
        }
    }
    Ok(out)
}

/// Check an upload's form, file name and metadata against each other.
/// Returns the normalised project name.
pub fn check_upload(u: &Upload) -> Result<String, (u16, String)> {
    let bad = |m: String| (400, m);
    if !pickguard_index::is_valid_name(&u.name) {
        return Err(bad(format!("invalid project name {:?}", u.name)));
    }
    let project = normalize(&u.name);
    if u.filename.contains('/')
        || u.filename.contains('\\')
        || u.filename.starts_with('.')
        || u.filename.ends_with(".pickguard.json")
        || u.filename.ends_with(".part")
        || u.filename.len() > 255
    {
        return Err(bad(format!("invalid file name {:?}", u.filename)));
    }
    let (kind, file_version) = parse_dist_filename(&u.filename, &project).map_err(bad)?;
    if !version_eq(&file_version, &u.version) {
        return Err(bad(format!(
            "file {:?} is version {file_version}, the form says {}",
            u.filename, u.version
        )));
    }
    let meta = read_metadata(&u.tmp, kind).map_err(|e| bad(format!("{}: {e}", u.filename)))?;
    let (name, version) = name_version(&meta);
    if name.as_deref().map(normalize).as_deref() != Some(project.as_str()) {
        return Err(bad(format!(
            "{}: its metadata names project {:?}, not {project:?}",
            u.filename,
            name.unwrap_or_default()
        )));
    }
    if !version
        .as_deref()
        .is_some_and(|v| version_eq(v, &u.version))
    {
        return Err(bad(format!(
            "{}: its metadata says version {:?}, not {}",
            u.filename,
            version.unwrap_or_default(),
            u.version
        )));
    }
    Ok(project)
}

/// The hosted index on either storage: a directory (sidecar files, above)
/// or the shared object store (`hosted/PROJECT/FILENAME.pickguard.json`
/// records, bytes at `hosted/PROJECT/SHA256/FILENAME`). On an object store
/// every answer that could not be read is an error, never "not hosted".
impl AppState {
    /// The hosted project page, if anything was uploaded under that name.
    pub async fn hosted_page(&self, name: &str) -> Result<Option<Project>, String> {
        let Some(o) = &self.objects else {
            return Ok(self.hosted_project(name));
        };
        let mut files = Vec::new();
        for key in o.list(&format!("hosted/{name}")).await? {
            let Some((dist, sc)) = read_record(o, name, &key).await? else {
                continue;
            };
            files.push(File {
                url: format!("/files/hosted/{name}/{}/{dist}", sc.sha256),
                filename: dist,
                hashes: [("sha256".to_string(), sc.sha256)].into(),
                requires_python: sc.requires_python,
                core_metadata: None,
                yanked: Default::default(),
                size: Some(sc.size),
                upload_time: Some(sc.upload_time),
            });
        }
        files.sort_by(|a, b| a.filename.cmp(&b.filename));
        Ok((!files.is_empty()).then(|| Project {
            name: name.to_owned(),
            files,
            ..Default::default()
        }))
    }

    /// Does the hosted index hold any file of this project?
    pub async fn hosted_any(&self, name: &str) -> Result<bool, String> {
        Ok(self.hosted_page(name).await?.is_some())
    }

    /// Every hosted file, for the console.
    pub(crate) async fn hosted_files(&self) -> Result<Vec<serde_json::Value>, String> {
        let Some(o) = &self.objects else {
            return Ok(self.hosted_listing());
        };
        let mut out = Vec::new();
        for key in o.list("hosted").await? {
            let Some(project) = key.split('/').nth(1) else {
                continue;
            };
            let Some((dist, sc)) = read_record(o, project, &key).await? else {
                continue;
            };
            out.push(serde_json::json!({
                "project": project,
                "filename": dist,
                "size": sc.size,
                "sha256": sc.sha256,
                "uploaded": sc.upload_time,
            }));
        }
        Ok(out)
    }

    /// Local path of a hosted file whose sha256 matches, if there is one
    /// (on an object store: read into this replica's files directory,
    /// verified, the first time it is asked for).
    pub async fn hosted_path(
        &self,
        project: &str,
        sha256: &str,
        filename: &str,
    ) -> Result<Option<PathBuf>, String> {
        let Some(o) = &self.objects else {
            return Ok(self.hosted_file(project, sha256, filename));
        };
        let rec = format!("hosted/{project}/{filename}.pickguard.json");
        let Some((_, sc)) = read_record(o, project, &rec).await? else {
            return Ok(None);
        };
        if !sc.sha256.eq_ignore_ascii_case(sha256) {
            return Ok(None);
        }
        let local = self
            .cfg
            .files_root()
            .join("hosted-objects")
            .join(project)
            .join(&sc.sha256)
            .join(filename);
        if tokio::fs::metadata(&local).await.is_ok() {
            return Ok(Some(local));
        }
        let blob = blob_key(project, filename, &sc)?;
        match o
            .fetch_verified(&blob, &sc.sha256, &local, sc.size, false)
            .await?
        {
            crate::objects::Fetched::Stored => Ok(Some(local)),
            crate::objects::Fetched::Absent => Err(format!(
                "object store {}: {filename} is recorded but its bytes are missing",
                o.shown
            )),
        }
    }

    /// Delete a hosted file (admin). Returns whether it existed.
    pub async fn remove_hosted(&self, project: &str, filename: &str) -> Result<bool, String> {
        let Some(o) = &self.objects else {
            return self.delete_hosted(project, filename);
        };
        if filename.contains('/') || filename.contains('\\') || filename.starts_with('.') {
            return Err(format!("invalid file name {filename:?}"));
        }
        let rec = format!("hosted/{project}/{filename}.pickguard.json");
        let Some((_, sc)) = read_record(o, project, &rec).await? else {
            return Ok(false);
        };
        // The record first: the file is invisible from that moment.
        o.delete(&rec).await?;
        // Only the bytes this record named: a re-upload racing the delete
        // wrote its own.
        o.delete(&blob_key(project, filename, &sc)?).await?;
        self.hosted_changed(project);
        Ok(true)
    }

    /// Record an upload in the object store. Its bytes go to a key of
    /// their own (`hosted/PROJECT/SHA256/NONCE/NAME`), then the record is
    /// created with `If-None-Match: *`: of replicas racing to record one
    /// filename exactly one wins, and a loser removes only its own bytes.
    async fn store_upload_objects(
        &self,
        o: &crate::objects::Objects,
        u: &Upload,
        project: &str,
    ) -> Result<(), (u16, String)> {
        // A name the store would spell differently would be stored under one
        // key and listed under another: never listed, so never protected.
        if object_store::path::PathPart::from(u.filename.as_str()).as_ref() != u.filename {
            return Err((
                400,
                format!(
                    "invalid file name {:?} for an object store (characters it escapes)",
                    u.filename
                ),
            ));
        }
        let rec = format!("hosted/{project}/{}.pickguard.json", u.filename);
        let exists = || {
            (
                409,
                format!(
                    "File already exists: {} (uploads never replace a file; delete it through the admin API first)",
                    u.filename
                ),
            )
        };
        if o.exists(&rec).await.map_err(|e| (503, e))? {
            return Err(exists());
        }
        // Claimed in the registry before the file is visible (and again
        // after, against an unclaim in between), even where a configured
        // pattern claims it too: resolution looks hosted files up only for
        // claimed names, and a pattern can be edited away. A claim left by
        // an upload that fails later stays (the name was being published
        // privately; an administrator can remove it).
        self.ensure_claimed(project, &format!("upload by {}", u.actor))
            .map_err(|e| (503, format!("claim registry: {e}; nothing was stored")))?;
        let blob = format!(
            "hosted/{project}/{}/{:016x}/{}",
            u.sha256,
            crate::objects::unique(),
            u.filename
        );
        o.put_file(&blob, &u.tmp)
            .await
            .map_err(|e| (503, format!("{e}; nothing was stored")))?;
        let sc = Sidecar {
            sha256: u.sha256.clone(),
            upload_time: crate::state::now_rfc3339(),
            requires_python: u.requires_python.clone(),
            size: u.size,
            uploader: Some(u.actor.clone()),
            blob: Some(blob.clone()),
        };
        let created = o
            .create(&rec, serde_json::to_vec(&sc).unwrap_or_default())
            .await;
        let won = match created {
            Ok(won) => Ok(won),
            // No answer: the store may have written it. The record says.
            Err(e) => match read_record(o, project, &rec).await {
                Ok(Some((_, w))) => Ok(w.blob.as_deref() == Some(blob.as_str())),
                _ => Err(e),
            },
        };
        match won {
            Ok(true) => {
                if let Err(e) = self.ensure_claimed(project, &format!("upload by {}", u.actor)) {
                    tracing::error!(event = "claim-failed", project = %project, error = %e, "an upload is recorded but its claim could not be confirmed");
                }
                self.hosted_changed(project);
                Ok(())
            }
            Ok(false) => {
                // Another upload's record names other bytes: ours are unused.
                let _ = o.delete(&blob).await;
                Err(exists())
            }
            // Not known whether a record exists: our bytes stay (an orphan
            // is harmless; deleting them might break a record that names them).
            Err(e) => Err((503, format!("{e}; the upload may not be recorded, retry"))),
        }
    }

    /// Make sure the registry claims `project` (for hosted files), with
    /// `source` as the reason when it did not.
    fn ensure_claimed(&self, project: &str, source: &str) -> Result<(), String> {
        match self.db.claimed(project) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => self
                .db
                .claim(project, source)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What removing a claim did.
pub(crate) enum Unclaim {
    /// Removed (true) or there was none (false).
    Done(bool),
    /// The name has hosted files: the claim stays.
    Hosted,
    /// The hosted index could not be read: the claim stays.
    Unknown(String),
    /// The registry failed.
    Registry(String),
}

impl AppState {
    /// Remove the registry's claim of `name` unless it has hosted files.
    /// The claim goes first and the hosted index is read after, so an
    /// upload between the two is seen (an upload claims before its file is
    /// recorded and again after); with hosted files, or when they cannot be
    /// read, the claim is put back.
    pub(crate) async fn unclaim_unless_hosted(&self, name: &str) -> Unclaim {
        let before = match self.db.claimed(name) {
            Ok(c) => c,
            Err(e) => return Unclaim::Registry(e.to_string()),
        };
        let removed = match self.db.unclaim(name) {
            Ok(r) => r,
            Err(e) => return Unclaim::Registry(e.to_string()),
        };
        let hosted = self.hosted_any(name).await;
        if matches!(hosted, Ok(false)) {
            return Unclaim::Done(removed);
        }
        if let Some(c) = &before
            && let Err(e) = self.db.claim(name, &c.source)
        {
            tracing::error!(event = "claim-restore-failed", project = %name, error = %e, "a name with hosted files lost its claim");
        }
        self.invalidate(name);
        match hosted {
            Ok(_) => Unclaim::Hosted,
            Err(e) => Unclaim::Unknown(e),
        }
    }
}

impl AppState {
    /// Claim every project the object store holds hosted records of (at
    /// start and hourly): files migrated in, or uploaded while a claim was
    /// lost, are protected again. A failure is logged; claims already made
    /// stand.
    pub(crate) async fn claim_hosted_projects(&self) {
        let Some(o) = &self.objects else { return };
        match o.hosted_projects().await {
            Ok(projects) => {
                for p in projects {
                    if let Err(e) = self.ensure_claimed(&p, "hosted files in the object store") {
                        tracing::error!(event = "claim-failed", project = %p, error = %e, "a hosted project could not be claimed");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(event = "hosted-claims-unchecked", error = %e, "the hosted projects in the object store could not be listed; their claims were not checked")
            }
        }
    }
}

/// The key of the bytes a record stands for: the one it names (which must
/// be under the project's own prefix), or, for a record that names none,
/// `hosted/PROJECT/SHA256/NAME`.
pub(crate) fn blob_key(project: &str, filename: &str, sc: &Sidecar) -> Result<String, String> {
    match &sc.blob {
        None => Ok(format!("hosted/{project}/{}/{filename}", sc.sha256)),
        Some(b) => {
            let parts: Vec<&str> = b.split('/').collect();
            let ok = parts.len() == 5
                && parts[0] == "hosted"
                && parts[1] == project
                && parts[2].eq_ignore_ascii_case(&sc.sha256)
                && parts[4] == filename
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && *p != "." && *p != "..");
            if ok {
                Ok(b.clone())
            } else {
                Err(format!(
                    "the record of {project}/{filename} names bytes outside its project: {b:?}"
                ))
            }
        }
    }
}

/// The record at `key` if it is one of `project`'s (`hosted/PROJECT/NAME.pickguard.json`),
/// with the file name it records. A record that cannot be read or parsed
/// is an error; one deleted since it was listed is `None`.
async fn read_record(
    o: &crate::objects::Objects,
    project: &str,
    key: &str,
) -> Result<Option<(String, Sidecar)>, String> {
    let mut parts = key.split('/');
    let (Some("hosted"), Some(p), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    let Some(dist) = name.strip_suffix(".pickguard.json") else {
        return Ok(None);
    };
    if p != project || dist.is_empty() || dist.starts_with('.') {
        return Ok(None);
    }
    let Some(body) = o.read_small(key, 64 * 1024).await? else {
        return Ok(None);
    };
    let sc: Sidecar = serde_json::from_slice(&body)
        .map_err(|e| format!("object store {}: record {key}: {e}", o.shown))?;
    if sc.sha256.len() != 64 || !sc.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "object store {}: record {key} names no sha256",
            o.shown
        ));
    }
    Ok(Some((dist.to_owned(), sc)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_file_names() {
        let w = |f: &str| parse_dist_filename(f, "acme-internal");
        assert_eq!(
            w("acme_internal-1.0-py3-none-any.whl").unwrap(),
            (Kind::Wheel, "1.0".into())
        );
        assert_eq!(w("acme_internal-1.0-1-py3-none-any.whl").unwrap().1, "1.0");
        assert_eq!(
            w("Acme.Internal-2.0b1.tar.gz").unwrap(),
            (Kind::TarGz, "2.0b1".into())
        );
        assert_eq!(
            w("acme-internal-2.0.zip").unwrap(),
            (Kind::Zip, "2.0".into())
        );
        for junk in [
            "acme_internal-1.0.whl",
            "acme_internal-1.0-py3-none.whl",
            "acme_internal-1.0-x-py3-none-any.whl",
            "acme_internal--py3-none-any-x.whl",
            "other-1.0-py3-none-any.whl",
            "acme_internal-1.0.exe",
            "acme_internal-1.0.tar.bz2",
            "acme-internal.tar.gz",
        ] {
            assert!(w(junk).is_err(), "{junk} accepted");
        }
        assert!(version_eq("1.0", "1.0.0"));
        assert!(!version_eq("1.0", "1.1"));
        assert_eq!(
            name_version(
                "Metadata-Version: 2.1\nName: acme_internal\nVersion: 1.0\n\nName: evil\n"
            ),
            (Some("acme_internal".into()), Some("1.0".into()))
        );
    }
}
