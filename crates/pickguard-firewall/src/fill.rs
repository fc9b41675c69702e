//! Filling the file cache: one download per file however many clients ask
//! at once, streamed to the first of them while it is hashed and written.
//!
//! The promise: a client never receives a complete body whose sha256 was not
//! verified. The download's last chunk is held back until the whole file has
//! been hashed; on a mismatch the client's response is aborted (it sees a
//! truncated body and fails), the partial file is deleted, and clients
//! waiting for the same file get the error. Every failure path removes the
//! `.part` file; a kill -9 leaves one, removed at the next start.
//!
//! The download runs in its own task: a client that goes away does not stop
//! it (the others waiting still get the file), and a client too slow to take
//! chunks within [`SEND_TIMEOUT`] is dropped from the stream, not waited for.

use crate::AppState;
use crate::state::Metrics;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

/// `None` while the download runs; then its outcome.
pub type Outcome = Option<Result<(), (u16, String)>>;

const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How a request takes part in a fill.
pub enum Role {
    /// It started the download: stream these chunks (with this length, if known).
    Leader(mpsc::Receiver<Result<Bytes, std::io::Error>>, Option<u64>),
    /// Another request is downloading: wait for the outcome, then serve the cache.
    Follower(watch::Receiver<Outcome>),
}

/// What to fetch and where it goes.
pub struct Job {
    pub upstream: String,
    pub url: String,
    pub sha256: String,
    pub dir: PathBuf,
    pub name: String,
    /// Most bytes accepted (the listed size, or max_file_bytes).
    pub max: u64,
}

impl Job {
    pub fn target(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

/// Join the fill of `job`'s file, starting it if nobody has.
pub async fn join(st: &Arc<AppState>, job: Job) -> Result<Role, (u16, String)> {
    let key = job.target();
    let tx = {
        let mut fills = st
            .fills
            .lock()
            .map_err(|_| (500, "fill table poisoned".to_string()))?;
        if let Some(rx) = fills.get(&key) {
            Metrics::inc(&st.metrics.coalesced_fills);
            return Ok(Role::Follower(rx.clone()));
        }
        let (tx, rx) = watch::channel(None);
        fills.insert(key.clone(), rx);
        tx
    };
    let finish = |st: &AppState, tx: &watch::Sender<Outcome>, r: Result<(), (u16, String)>| {
        let _ = tx.send(Some(r));
        if let Ok(mut f) = st.fills.lock() {
            f.remove(&key);
        }
    };
    let resp = match request(st, &job).await {
        Ok(r) => r,
        Err(e) => {
            finish(st, &tx, Err(e.clone()));
            return Err(e);
        }
    };
    let len = resp.content_length();
    if let Some(l) = len
        && l > job.max
    {
        let e = (
            502,
            format!(
                "{}: the upstream sends {l} bytes, more than the {} allowed (listed size or max_file_bytes)",
                job.name, job.max
            ),
        );
        finish(st, &tx, Err(e.clone()));
        return Err(e);
    }
    let (ctx, crx) = mpsc::channel(16);
    let st2 = st.clone();
    tokio::spawn(async move {
        let r = download(&st2, &job, resp, ctx).await;
        if let Err((_, e)) = &r {
            tracing::warn!(event = "file-fill-failed", upstream = %job.upstream, file = %job.name, error = %e, "download failed; nothing cached");
        }
        let key = job.target();
        let _ = tx.send(Some(r.clone()));
        if let Ok(mut f) = st2.fills.lock() {
            f.remove(&key);
        }
        // Verified and in place: share it with the other replicas (after
        // the client has its last byte; a failure costs them a download).
        if r.is_ok()
            && let Some(o) = &st2.objects
            && let Ok(rel) = key.strip_prefix(&st2.cache_dir)
        {
            let rel = format!("files/{}", rel.to_string_lossy());
            if let Err(e) = o.store_file(&rel, &key).await {
                Metrics::inc(&st2.metrics.object_errors);
                tracing::warn!(event = "object-store-write-failed", file = %job.name, error = %e, "not shared with other replicas");
            }
        }
    });
    Ok(Role::Leader(crx, len))
}

/// Wait for a fill another request leads.
pub async fn wait(mut rx: watch::Receiver<Outcome>) -> Result<(), (u16, String)> {
    loop {
        if let Some(r) = rx.borrow().clone() {
            return r;
        }
        if rx.changed().await.is_err() {
            return rx
                .borrow()
                .clone()
                .unwrap_or(Err((502, "the download was abandoned".into())));
        }
    }
}

async fn request(st: &AppState, job: &Job) -> Result<reqwest::Response, (u16, String)> {
    Metrics::inc(&st.metrics.file_downloads);
    let name = &job.name;
    let (Some(client), Some(up)) = (st.client(&job.upstream), st.upstream(&job.upstream)) else {
        return Err((
            502,
            format!(
                "fetching {name}: upstream {} is not configured",
                job.upstream
            ),
        ));
    };
    // The listing was checked already; check again where the request is made.
    if !reqwest::Url::parse(&job.url)
        .is_ok_and(|u| crate::upstream::host_allowed(&u, &up.allowed_hosts()))
    {
        return Err((
            502,
            format!(
                "fetching {name}: its URL's host is not allowed for upstream {}",
                job.upstream
            ),
        ));
    }
    let t = std::time::Instant::now();
    let resp = tokio::time::timeout(
        Duration::from_secs(up.timeout_secs),
        client.get(&job.url).send(),
    )
    .await
    .inspect(|_| st.metrics.observe_upstream_file(&job.upstream, t.elapsed()))
    .map_err(|_| {
        (
            504,
            format!("fetching {name}: no answer within {} s", up.timeout_secs),
        )
    })?
    .map_err(|e| (502, format!("fetching {name}: {}", e.without_url())))?;
    if !resp.status().is_success() {
        Metrics::inc(&st.metrics.upstream_errors);
        return Err((
            502,
            format!(
                "fetching {name}: upstream answered HTTP {}",
                resp.status().as_u16()
            ),
        ));
    }
    Ok(resp)
}

fn part_name(dir: &Path, name: &str) -> PathBuf {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    dir.join(format!(".{name}.{:016x}.part", h.finish()))
}

/// Forward a chunk to the leading client, unless it has gone or stalls.
async fn forward(
    tx: &mut Option<mpsc::Sender<Result<Bytes, std::io::Error>>>,
    item: Result<Bytes, std::io::Error>,
) {
    if let Some(t) = tx
        && !matches!(
            tokio::time::timeout(SEND_TIMEOUT, t.send(item)).await,
            Ok(Ok(()))
        )
    {
        *tx = None;
    }
}

async fn download(
    st: &AppState,
    job: &Job,
    resp: reqwest::Response,
    client: mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), (u16, String)> {
    let name = &job.name;
    tokio::fs::create_dir_all(&job.dir)
        .await
        .map_err(|e| (500, format!("cache: {e}")))?;
    let tmp = part_name(&job.dir, name);
    let mut tx = Some(client);
    let result: Result<(), (u16, String)> = async {
        let mut out = tokio::fs::File::create_new(&tmp)
            .await
            .map_err(|e| (500, format!("cache: {e}")))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut held: Option<Bytes> = None;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| (502, format!("fetching {name}: {}", e.without_url())))?;
            size += chunk.len() as u64;
            if size > job.max {
                return Err((
                    502,
                    format!(
                        "{name}: the download passed {} bytes (listed size or max_file_bytes); stopped",
                        job.max
                    ),
                ));
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| (500, format!("cache: {e}")))?;
            if let Some(prev) = held.replace(chunk) {
                forward(&mut tx, Ok(prev)).await;
            }
        }
        out.sync_all()
            .await
            .map_err(|e| (500, format!("cache: {e}")))?;
        let got = hex::encode(hasher.finalize());
        if !got.eq_ignore_ascii_case(&job.sha256) {
            Metrics::inc(&st.metrics.hash_mismatches);
            tracing::error!(event = "hash-mismatch", upstream = %job.upstream, file = %name, expected = %job.sha256, got = %got, "download does not match the index; not served");
            return Err((
                502,
                format!(
                    "{name}: sha256 {got} does not match the upstream index ({}); not served",
                    job.sha256
                ),
            ));
        }
        tokio::fs::rename(&tmp, job.target())
            .await
            .map_err(|e| (500, format!("cache: {e}")))?;
        if let Some(last) = held.take() {
            forward(&mut tx, Ok(last)).await;
        }
        Ok(())
    }
    .await;
    if let Err((_, e)) = &result {
        let _ = tokio::fs::remove_file(&tmp).await;
        // The leading client must not see a complete body.
        forward(&mut tx, Err(std::io::Error::other(e.clone()))).await;
    }
    result
}
