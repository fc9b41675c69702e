//! Files in an object store shared by every replica (`[storage] objects =
//! "s3://bucket/prefix"`, through the `object_store` crate).
//!
//! Each replica keeps serving from its own files directory (ranges, HEAD and
//! sendfile stay local); the object store is where replicas find what
//! another one already downloaded or received, and where hosted uploads are
//! recorded. Its promises:
//!
//! - nothing read from the store is served before its sha256 is verified
//!   against what the index (or the upload's record) says: an object
//!   someone changed in the bucket is refused, removed, and fetched again
//!   from the upstream, never passed on;
//! - a file is stored once: keys are content-addressed (`…/SHA256/NAME`),
//!   a replica looks before it writes, and two that write at once write the
//!   same verified bytes (an object store PUT replaces an object whole);
//! - a hosted file becomes visible when its record is created with
//!   `If-None-Match: *` (PutMode::Create): of replicas racing to record one
//!   filename exactly one wins, the others answer 409.
//!
//! Credentials and the endpoint come from the usual `AWS_*` environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`) or from `[storage] objects_options` (object_store's
//! S3 option names; an unknown name is an error, not ignored).

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The object `/readyz` reads back.
const READY_PROBE: &str = ".probes/ready";

/// A number no other call of this process (or, very likely, another
/// process) picks: for temporary names and upload keys.
pub(crate) fn unique() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// The shared object store and the prefix under which this firewall's
/// objects live.
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// `s3://bucket/prefix`, for messages (never credentials).
    pub shown: String,
}

/// What reading an object for a file found.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// Verified and written to the destination.
    Stored,
    /// No such object.
    Absent,
}

impl Objects {
    /// Open `s3://bucket[/prefix]` with `options` (object_store's S3 keys,
    /// e.g. `endpoint`, `region`, `allow_http`) over the `AWS_*` environment.
    pub fn open(url: &str, options: &BTreeMap<String, String>) -> anyhow::Result<Objects> {
        let Some(rest) = url.strip_prefix("s3://") else {
            anyhow::bail!(
                "storage.objects: {url:?} is not an s3:// URL (S3 and S3-compatible stores are supported; a shared directory is storage.files_dir)"
            );
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            anyhow::bail!("storage.objects: {url:?} names no bucket");
        }
        let prefix = prefix.trim_matches('/').to_owned();
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .is_ok_and(|e| e.starts_with("http://"))
        {
            // A plain-HTTP endpoint (MinIO on the same host, a test server)
            // was chosen by whoever set it; object_store refuses it otherwise.
            b = b.with_allow_http(true);
        }
        for (k, v) in options {
            let key: AmazonS3ConfigKey = k
                .parse()
                .map_err(|_| anyhow::anyhow!("storage.objects_options: unknown S3 option {k:?}"))?;
            b = b.with_config(key, v);
        }
        let store = b
            .build()
            .map_err(|e| anyhow::anyhow!("storage.objects {url}: {e}"))?;
        let shown = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        Ok(Objects {
            store: Arc::new(store),
            prefix,
            shown,
        })
    }

    fn key(&self, rel: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(rel)
        } else {
            Key::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// The store answers (what `/readyz` asks): a listing of the prefix,
    /// and a read of the object written at start (a store that lists but
    /// refuses reads, e.g. a key it may not decrypt, is not ready).
    pub async fn ready(&self) -> Result<(), String> {
        let mut l = self.store.list(Some(&self.key("files")));
        if let Some(Err(e)) = l.next().await {
            return Err(format!("object store {}: {e}", self.shown));
        }
        match self.read_small(READY_PROBE, 64).await? {
            Some(b) if &b[..] == b"ready" => Ok(()),
            _ => Err(format!(
                "object store {}: the readiness object {READY_PROBE} is missing or wrong",
                self.shown
            )),
        }
    }

    /// Write the object `ready` reads (at start).
    pub async fn write_ready_probe(&self) -> Result<(), String> {
        self.store
            .put(&self.key(READY_PROBE), PutPayload::from_static(b"ready"))
            .await
            .map(|_| ())
            .map_err(|e| format!("object store {}: {e}", self.shown))
    }

    /// Every project with a hosted record in the store.
    pub async fn hosted_projects(&self) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = self
            .list("hosted")
            .await?
            .into_iter()
            .filter_map(|k| {
                let p: Vec<&str> = k.split('/').collect();
                (p.len() == 3 && p[2].ends_with(".pickguard.json")).then(|| p[1].to_owned())
            })
            .collect();
        out.dedup();
        Ok(out)
    }

    /// Read `rel` into `dest` (through a temporary file of this call's own
    /// beside it) if its bytes have this sha256 and at most `max` bytes. An
    /// object with other bytes is an error; with `repair` (a cached file,
    /// which the next fill stores again) it is also deleted. An upload's
    /// bytes are never deleted on a bad read: the store may be what lies.
    pub async fn fetch_verified(
        &self,
        rel: &str,
        sha256: &str,
        dest: &Path,
        max: u64,
        repair: bool,
    ) -> Result<Fetched, String> {
        let key = self.key(rel);
        let got = match self.store.get(&key).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(Fetched::Absent),
            Err(e) => return Err(format!("object store {}: {e}", self.shown)),
        };
        if got.meta.size > max {
            // Larger than the file its key names can be: not that file.
            tracing::error!(event = "object-hash-mismatch", key = %rel, size = got.meta.size, max, repair, "an object in the shared store is larger than the file it stands for; not served");
            if repair {
                let _ = self.store.delete(&key).await;
            }
            return Err(format!(
                "object store {}: {rel} has {} bytes, more than the {max} its file has; not served",
                self.shown, got.meta.size
            ));
        }
        let dir = dest.parent().ok_or("cache path without a directory")?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| format!("cache: {e}"))?;
        // Two requests of one replica (or two replicas sharing a files
        // directory) reading one object at once each write their own file:
        // a shared name would let one truncate what the other verified.
        let tmp = dir.join(format!(
            ".{}.{:016x}.obj.part",
            dest.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            unique()
        ));
        let r = async {
            let mut out = tokio::fs::File::create_new(&tmp)
                .await
                .map_err(|e| format!("cache: {e}"))?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| format!("object store {}: {e}", self.shown))?;
                size += chunk.len() as u64;
                if size > max {
                    return Err(format!(
                        "object store {}: {rel} passed {max} bytes; stopped",
                        self.shown
                    ));
                }
                hasher.update(&chunk);
                out.write_all(&chunk)
                    .await
                    .map_err(|e| format!("cache: {e}"))?;
            }
            out.sync_all().await.map_err(|e| format!("cache: {e}"))?;
            let have = hex::encode(hasher.finalize());
            if !have.eq_ignore_ascii_case(sha256) {
                tracing::error!(event = "object-hash-mismatch", key = %rel, expected = %sha256, got = %have, repair, "an object in the shared store does not hold the bytes it stands for; not served");
                if repair {
                    let _ = self.store.delete(&key).await;
                }
                return Err(format!(
                    "object store {}: {rel} holds bytes with sha256 {have}, not {sha256}; not served",
                    self.shown
                ));
            }
            tokio::fs::rename(&tmp, dest)
                .await
                .map_err(|e| format!("cache: {e}"))
        }
        .await;
        if r.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        r.map(|()| Fetched::Stored)
    }

    /// Is there an object at `rel`?
    pub async fn exists(&self, rel: &str) -> Result<bool, String> {
        match self.store.head(&self.key(rel)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(format!("object store {}: {e}", self.shown)),
        }
    }

    /// Store the verified local file `path` at `rel` unless an object is
    /// already there (keys name their content, so it holds the same bytes;
    /// one that does not is found and replaced when it is read).
    pub async fn store_file(&self, rel: &str, path: &Path) -> Result<(), String> {
        if self.exists(rel).await? {
            return Ok(());
        }
        self.put_file(rel, path).await
    }

    /// Write the local file `path` at `rel`, whatever is there.
    pub async fn put_file(&self, rel: &str, path: &Path) -> Result<(), String> {
        let key = self.key(rel);
        let upload = self
            .store
            .put_multipart(&key)
            .await
            .map_err(|e| format!("object store {}: {e}", self.shown))?;
        let mut w = WriteMultipart::new(upload);
        let r = async {
            let mut f = tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("cache: {e}"))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).await.map_err(|e| format!("cache: {e}"))?;
                if n == 0 {
                    break;
                }
                w.wait_for_capacity(4)
                    .await
                    .map_err(|e| format!("object store {}: {e}", self.shown))?;
                w.write(&buf[..n]);
            }
            Ok(())
        }
        .await;
        match r {
            Ok(()) => w
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| format!("object store {}: {e}", self.shown)),
            Err(e) => {
                let _ = w.abort().await;
                Err(e)
            }
        }
    }

    /// Create `rel` with `data` if nothing is there: `Ok(false)` when an
    /// object already exists (another replica won).
    pub async fn create(&self, rel: &str, data: Vec<u8>) -> Result<bool, String> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.key(rel), PutPayload::from(data), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(format!("object store {}: {e}", self.shown)),
        }
    }

    /// Create one probe object twice: the second must be refused (the
    /// store honours `If-None-Match: *`). The probe is removed after.
    pub async fn check_conditional_create(&self) -> Result<(), String> {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let rel = format!(".probes/create-{:016x}", h.finish());
        let first = self.create(&rel, b"1".to_vec()).await;
        let second = match first {
            Ok(true) => self.create(&rel, b"2".to_vec()).await,
            Ok(false) => Err(format!(
                "object store {}: a fresh probe key already exists",
                self.shown
            )),
            Err(e) => Err(e),
        };
        let _ = self.delete(&rel).await;
        match second {
            Ok(false) => Ok(()),
            Ok(true) => Err(format!(
                "object store {} accepted a second create of one key (If-None-Match: * ignored): \
                 concurrent uploads through different replicas could replace each other; \
                 use a store with conditional writes (AWS S3, MinIO, moto, R2...)",
                self.shown
            )),
            Err(e) => Err(e),
        }
    }

    /// A small object (a record), whole, if it exists and is at most `max` bytes.
    pub async fn read_small(&self, rel: &str, max: u64) -> Result<Option<Bytes>, String> {
        let got = match self.store.get(&self.key(rel)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(format!("object store {}: {e}", self.shown)),
        };
        if got.meta.size > max {
            return Err(format!(
                "object store {}: {rel} is {} bytes, larger than a record can be",
                self.shown, got.meta.size
            ));
        }
        got.bytes()
            .await
            .map(Some)
            .map_err(|e| format!("object store {}: {e}", self.shown))
    }

    /// Every key under `rel_prefix/` (relative to this store's prefix), sorted.
    pub async fn list(&self, rel_prefix: &str) -> Result<Vec<String>, String> {
        let base = self.key(rel_prefix);
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut out = Vec::new();
        let mut l = self.store.list(Some(&base));
        while let Some(m) = l.next().await {
            let m = m.map_err(|e| format!("object store {}: {e}", self.shown))?;
            let k = m.location.to_string();
            out.push(k.strip_prefix(&strip).unwrap_or(&k).to_owned());
        }
        out.sort();
        Ok(out)
    }

    /// Delete `rel`; deleting what is not there is not an error.
    pub async fn delete(&self, rel: &str) -> Result<(), String> {
        match self.store.delete(&self.key(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(format!("object store {}: {e}", self.shown)),
        }
    }
}

/// What `firewall migrate --objects-to` copied: files stored, files
/// already there with the same bytes, files left out (partial downloads,
/// cached `.metadata`, uploads without a sidecar).
#[derive(Debug, Default, serde::Serialize)]
pub struct Migrated {
    pub copied: u64,
    pub present: u64,
    pub left_out: u64,
}

/// Copy a files directory's cache (`files/`) and hosted uploads (`hosted/`)
/// into the object store at `url`, in the layout replicas read: each file
/// verified against the sha256 it is served as before it is stored, an
/// upload's record created last (so an interrupted copy leaves nothing
/// visible), an object already there checked to hold the same bytes (a
/// record to name the same sha256). A mismatch anywhere is an error; a
/// second run finishes what a first one left.
pub fn migrate_into(
    url: &str,
    options: &BTreeMap<String, String>,
    files_root: &Path,
) -> anyhow::Result<Migrated> {
    let o = Objects::open(url, options)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        o.check_conditional_create()
            .await
            .map_err(anyhow::Error::msg)?;
        let mut m = Migrated::default();
        let (files, hosted, left_out) = local_files(files_root)?;
        m.left_out = left_out;
        for (rel, path, sha) in files {
            o.copy_verified(&rel, &path, &sha, &mut m).await?;
        }
        for (project, name, path, sidecar) in hosted {
            let mut sc: Sidecar = serde_json::from_slice(&std::fs::read(&sidecar)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", sidecar.display()))?;
            let rec = format!("hosted/{project}/{name}.pickguard.json");
            let recorded = |body: Option<Bytes>| -> anyhow::Result<()> {
                let have = body.and_then(|b| serde_json::from_slice::<Sidecar>(&b).ok());
                anyhow::ensure!(
                    have.is_some_and(|h| h.sha256.eq_ignore_ascii_case(&sc.sha256)),
                    "{} already records another file as {project}/{name}; nothing is overwritten",
                    o.shown
                );
                Ok(())
            };
            if o.exists(&rec).await.map_err(anyhow::Error::msg)? {
                recorded(o.read_small(&rec, 64 * 1024).await.map_err(anyhow::Error::msg)?)?;
                m.present += 1;
                continue;
            }
            let got = sha256_of(&path)?;
            anyhow::ensure!(
                got.eq_ignore_ascii_case(&sc.sha256),
                "{} has sha256 {got}, not the {} it is served as; not copied (the source is damaged)",
                path.display(),
                sc.sha256
            );
            let blob = format!("hosted/{project}/{}/{:016x}/{name}", sc.sha256, unique());
            o.put_file(&blob, &path).await.map_err(anyhow::Error::msg)?;
            sc.blob = Some(blob.clone());
            if o.create(&rec, serde_json::to_vec(&sc)?)
                .await
                .map_err(anyhow::Error::msg)?
            {
                m.copied += 1;
            } else {
                let _ = o.delete(&blob).await;
                recorded(o.read_small(&rec, 64 * 1024).await.map_err(anyhow::Error::msg)?)?;
                m.present += 1;
            }
        }
        Ok(m)
    })
}

use crate::hosted::Sidecar;

type LocalFiles = (
    Vec<(String, std::path::PathBuf, String)>,
    Vec<(String, String, std::path::PathBuf, std::path::PathBuf)>,
    u64,
);

/// Cached files (key, path, the sha256 their directory names) and uploads
/// (project, file name, path, sidecar) of a files directory.
fn local_files(root: &Path) -> anyhow::Result<LocalFiles> {
    let (mut files, mut hosted, mut left_out) = (Vec::new(), Vec::new(), 0u64);
    let is_sha = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let dirs = |p: &Path| -> anyhow::Result<Vec<std::fs::DirEntry>> {
        if !p.exists() {
            return Ok(Vec::new());
        }
        let mut v: Vec<_> = std::fs::read_dir(p)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?
            .collect::<Result<_, _>>()?;
        v.sort_by_key(|e| e.file_name());
        Ok(v)
    };
    let name_of = |e: &std::fs::DirEntry| e.file_name().to_string_lossy().into_owned();
    // files/UPSTREAM/SHA256/NAME
    for up in dirs(&root.join("files"))? {
        for sha in dirs(&up.path())? {
            for f in dirs(&sha.path())? {
                let (u, s, n) = (name_of(&up), name_of(&sha), name_of(&f));
                if u.starts_with('.')
                    || !is_sha(&s)
                    || n.starts_with('.')
                    || n.ends_with(".part")
                    || n.ends_with(".metadata")
                    || !f.file_type()?.is_file()
                {
                    left_out += 1;
                    continue;
                }
                files.push((format!("files/{u}/{s}/{n}"), f.path(), s));
            }
        }
    }
    // hosted/PROJECT/NAME with hosted/PROJECT/NAME.pickguard.json
    for p in dirs(&root.join("hosted"))? {
        let project = name_of(&p);
        if project.starts_with('.') || !p.file_type()?.is_dir() {
            continue;
        }
        for f in dirs(&p.path())? {
            let n = name_of(&f);
            if n.ends_with(".pickguard.json") || n.starts_with('.') {
                continue;
            }
            let sidecar = p.path().join(format!("{n}.pickguard.json"));
            if !sidecar.exists() || !f.file_type()?.is_file() {
                left_out += 1;
                continue;
            }
            hosted.push((project.clone(), n, f.path(), sidecar));
        }
    }
    Ok((files, hosted, left_out))
}

impl Objects {
    /// Store the local file at `rel` after checking it hashes to `sha256`;
    /// an object already there must hold the same bytes.
    async fn copy_verified(
        &self,
        rel: &str,
        path: &Path,
        sha256: &str,
        m: &mut Migrated,
    ) -> anyhow::Result<()> {
        let got = sha256_of(path)?;
        anyhow::ensure!(
            got.eq_ignore_ascii_case(sha256),
            "{} has sha256 {got}, not the {sha256} it is served as; not copied (the source is damaged)",
            path.display()
        );
        if self.exists(rel).await.map_err(anyhow::Error::msg)? {
            self.holds(rel, sha256).await?;
            m.present += 1;
            return Ok(());
        }
        self.store_file(rel, path)
            .await
            .map_err(anyhow::Error::msg)?;
        m.copied += 1;
        Ok(())
    }

    /// The object at `rel` hashes to `sha256`; one with other bytes is an
    /// error and is left where it is (migration never deletes).
    async fn holds(&self, rel: &str, sha256: &str) -> anyhow::Result<()> {
        let got = self
            .store
            .get(&self.key(rel))
            .await
            .map_err(|e| anyhow::anyhow!("object store {}: {e}", self.shown))?;
        let mut hasher = Sha256::new();
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk.map_err(|e| anyhow::anyhow!("object store {}: {e}", self.shown))?);
        }
        let have = hex::encode(hasher.finalize());
        anyhow::ensure!(
            have.eq_ignore_ascii_case(sha256),
            "{} already holds other bytes at {rel} (sha256 {have}); nothing is overwritten",
            self.shown
        );
        Ok(())
    }
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let (mut h, mut buf) = (Sha256::new(), vec![0u8; 1 << 20]);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_s3_urls_and_known_options() {
        let e = Objects::open("gs://bucket", &opts(&[])).err().unwrap();
        assert!(e.to_string().contains("not an s3:// URL"), "{e}");
        assert!(Objects::open("s3://", &opts(&[])).is_err());
        // A misspelt option is an error, not silently dropped.
        let e = Objects::open("s3://b", &opts(&[("endpiont", "http://x")]))
            .err()
            .unwrap();
        assert!(e.to_string().contains("unknown S3 option"), "{e}");
        let o = Objects::open("s3://b/some/prefix/", &opts(&[("region", "us-east-1")])).unwrap();
        assert_eq!(o.shown, "s3://b/some/prefix");
        assert_eq!(o.key("files/x").to_string(), "some/prefix/files/x");
    }

    /// A shared bucket with a registry of this replica's own would leave
    /// other replicas' uploads unclaimed here: refused.
    #[test]
    fn a_bucket_needs_a_shared_registry() {
        let cfg: crate::Config = toml::from_str(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"/tmp/x\"\n[[upstream]]\nname = \"pypi\"\n\
             url = \"https://pypi.org/simple/\"\n[storage]\nobjects = \"s3://b/p\"\n",
        )
        .unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("storage.objects needs storage.database"), "{e}");
    }

    /// Readers of one object into one file at once, some of them cancelled
    /// half-way (a client that goes away), never leave other bytes there:
    /// each writes and verifies a file of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_of_one_object_keep_the_file_whole() {
        let o = Arc::new(Objects {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: "p".into(),
            shown: "memory".into(),
        });
        let data: Vec<u8> = (0..(8u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        let sha = hex::encode(Sha256::digest(&data));
        o.store
            .put(&o.key("files/u/x.whl"), PutPayload::from(data.clone()))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("cache/x.whl");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (o, sha, dest) = (o.clone(), sha.clone(), dest.clone());
            let t = tokio::spawn(async move {
                o.fetch_verified("files/u/x.whl", &sha, &dest, 16 << 20, true)
                    .await
            });
            if i % 2 == 1 {
                tokio::task::yield_now().await;
                t.abort();
            } else {
                tasks.push(t);
            }
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(Fetched::Stored));
        }
        assert_eq!(
            hex::encode(Sha256::digest(std::fs::read(&dest).unwrap())),
            sha
        );
    }

    /// A store that answers every PUT with 200, as S3-compatibles without
    /// conditional writes do: the firewall refuses it.
    #[tokio::test]
    async fn a_store_that_ignores_if_none_match_is_refused() {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            // Bounded: the probe makes at most a handful of requests.
            for _ in 0..16 {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(async move {
                    let mut r = BufReader::new(s);
                    loop {
                        let mut len = 0usize;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let l = line.to_ascii_lowercase();
                            if let Some(v) = l.strip_prefix("content-length:") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0u8; len];
                        if r.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let resp = "HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n";
                        if r.get_mut().write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let o = Objects::open(
            "s3://b/p",
            &opts(&[
                ("endpoint", &format!("http://127.0.0.1:{port}")),
                ("allow_http", "true"),
                ("region", "us-east-1"),
                ("access_key_id", "k"),
                ("secret_access_key", "s"),
            ]),
        )
        .unwrap();
        let e = o.check_conditional_create().await.unwrap_err();
        assert!(e.contains("If-None-Match"), "{e}");
        server.abort();
    }
}
