//! The firewall's own hosted index: twine-compatible uploads
//! (`POST /` or `/legacy/`, `:action=file_upload`). An upload claims its
//! project name before the file becomes visible, and the hosted index is
//! consulted like a private upstream, ahead of all others.

use crate::AppState;
use pickguard_index::{File, Project, normalize};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Sidecar record of an uploaded file.
#[derive(Serialize, Deserialize)]
struct Sidecar {
    sha256: String,
    upload_time: String,
    requires_python: Option<String>,
    size: u64,
}

impl AppState {
    fn hosted_dir(&self, project: &str) -> PathBuf {
        self.cfg.data_dir.join("hosted").join(project)
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

    /// Store an upload. Errors are (HTTP status, message).
    pub fn upload(
        &self,
        name: &str,
        version: &str,
        filename: &str,
        content: &[u8],
        sha256_digest: Option<&str>,
        requires_python: Option<String>,
    ) -> Result<String, (u16, String)> {
        if !pickguard_index::is_valid_name(name) {
            return Err((400, format!("invalid project name {name:?}")));
        }
        let project = normalize(name);
        if filename.contains('/')
            || filename.contains('\\')
            || filename.starts_with('.')
            || filename.ends_with(".pickguard.json")
        {
            return Err((400, format!("invalid file name {filename:?}")));
        }
        let dist = filename.split('-').next().unwrap_or("");
        if normalize(dist) != project {
            return Err((
                400,
                format!("file {filename:?} does not belong to project {project:?}"),
            ));
        }
        if pickguard_index::version_of(filename) != Some(version) {
            return Err((400, format!("file {filename:?} is not version {version}")));
        }
        let sha = hex::encode(Sha256::digest(content));
        if let Some(d) = sha256_digest
            && !d.eq_ignore_ascii_case(&sha)
        {
            return Err((
                400,
                format!("sha256_digest {d} does not match the uploaded content ({sha})"),
            ));
        }
        let dir = self.hosted_dir(&project);
        let target = dir.join(filename);
        if target.exists() {
            return Err((
                400,
                format!("File already exists: {filename} (uploads never replace a file)"),
            ));
        }
        // Claim first: the name is private before any of its files is visible.
        self.db
            .claim(&project, "upload")
            .map_err(|e| (500, format!("claim registry: {e}")))?;
        std::fs::create_dir_all(&dir).map_err(|e| (500, format!("storage: {e}")))?;
        let tmp = dir.join(format!(".{filename}.part"));
        std::fs::write(&tmp, content).map_err(|e| (500, format!("storage: {e}")))?;
        std::fs::rename(&tmp, &target).map_err(|e| (500, format!("storage: {e}")))?;
        let sc = Sidecar {
            sha256: sha.clone(),
            upload_time: crate::state::now_rfc3339(),
            requires_python,
            size: content.len() as u64,
        };
        let sidecar = dir.join(format!("{filename}.pickguard.json"));
        let tmp = dir.join(format!(".{filename}.pickguard.json.part"));
        std::fs::write(&tmp, serde_json::to_vec(&sc).unwrap_or_default())
            .map_err(|e| (500, format!("storage: {e}")))?;
        std::fs::rename(&tmp, &sidecar).map_err(|e| (500, format!("storage: {e}")))?;
        self.invalidate(&project);
        Ok(sha)
    }
}
