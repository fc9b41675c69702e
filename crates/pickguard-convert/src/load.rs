//! Open a checkpoint: scan it, build its values, and locate every storage's bytes.

use crate::build::{Builder, Obj, StorageRef};
use crate::{ConvertError, TensorSpec, npz};
use pickguard_formats::dtype::DType;
use pickguard_formats::{Sniffed, sniff, torch, torch_legacy, zip};
use pickguard_pickle::{NodeId, Options, ReadView, StopReason, Stream, run_stream};
use pickguard_scan::{Scanner, Verdict};
use std::collections::HashMap;
use std::sync::Arc;

/// Where a storage's bytes are.
#[derive(Clone, Debug)]
pub enum Storage {
    /// A byte range of the checkpoint file itself.
    File { offset: u64, len: u64 },
    /// Decompressed bytes (deflated zip members).
    Memory(Arc<Vec<u8>>),
}

/// A checkpoint ready to write.
#[derive(Debug)]
pub struct Checkpoint {
    pub format: String,
    pub root: Obj,
    pub tensors: Vec<TensorSpec>,
    pub storages: HashMap<String, Storage>,
}

fn refuse(path: &str, r: &pickguard_scan::FileReport) -> ConvertError {
    let mut details = String::new();
    for f in r
        .findings
        .iter()
        .filter(|f| f.rule.verdict() > Verdict::Clean)
    {
        let mut place = Vec::new();
        if let Some(m) = &f.location.member {
            place.push(m.clone());
        }
        if let Some(o) = f.location.offset {
            place.push(format!("offset {o}"));
        }
        details.push_str(&format!(
            "  {} {} [{}]\n",
            f.rule.id(),
            f.message,
            place.join(", ")
        ));
        for c in &f.calls {
            details.push_str(&format!("      {c}\n"));
        }
    }
    ConvertError::Refused {
        path: path.to_owned(),
        verdict: r.verdict.as_str().to_owned(),
        details,
    }
}

fn stream_ok(s: &Stream) -> Result<(), ConvertError> {
    match &s.stop {
        StopReason::Stop => Ok(()),
        StopReason::Error { offset, message } => Err(ConvertError::Format(format!(
            "the pickle fails to load at offset {offset}: {message}"
        ))),
        StopReason::Budget { limit, .. } => Err(ConvertError::Format(format!(
            "analysis limit {limit} reached"
        ))),
    }
}

/// Scan, then build. `data` is the whole file (usually a memory map).
pub fn load(path: &str, data: &[u8], scanner: &Scanner) -> Result<Checkpoint, ConvertError> {
    let report = scanner.scan_bytes(path, data);
    if report.verdict != Verdict::Clean {
        return Err(refuse(path, &report));
    }
    match sniff(data) {
        Sniffed::Zip => {
            let ar = zip::read(data, scanner.options.max_members).map_err(ConvertError::Format)?;
            if report.format == "zip" {
                return npz::load(data, &ar, scanner.options.max_decompressed);
            }
            if report.format != "torch-zip" {
                return Err(ConvertError::Format(format!(
                    "{path} is a {} archive, not a torch checkpoint",
                    report.format
                )));
            }
            torch_zip(data, &ar, scanner)
        }
        Sniffed::PickleLike if report.format == "torch-legacy" => {
            torch_legacy_file(data, &scanner.options.pickle)
        }
        _ => Err(ConvertError::Format(format!(
            "{path}: {} is not a checkpoint format convert reads (torch zip, torch legacy, .npz)",
            report.format
        ))),
    }
}

fn torch_zip(
    data: &[u8],
    ar: &zip::Archive,
    scanner: &Scanner,
) -> Result<Checkpoint, ConvertError> {
    // The same reading of the layout scan judged (formats::torch).
    let layout = torch::Layout::of(ar)
        .ok_or_else(|| ConvertError::Format("not a torch zip layout".into()))?;
    let find = |rel: &str| layout.record(rel);
    if let Some(bo) = find("byteorder") {
        let (b, _) = zip::entry_data(data, bo, 64).map_err(ConvertError::Format)?;
        if b.as_ref() != b"little" {
            return Err(ConvertError::Unsupported {
                what: "a big-endian checkpoint".into(),
                offset: bo.local_header_offset,
            });
        }
    }
    let dp = find("data.pkl").ok_or_else(|| ConvertError::Format("no data.pkl record".into()))?;
    let (pkl, _) = zip::entry_data(data, dp, scanner.options.max_decompressed)
        .map_err(ConvertError::Format)?;
    let s = run_stream(&pkl, 0, 0, ReadView::Linear, &scanner.options.pickle);
    stream_ok(&s)?;
    let mut storages = HashMap::new();
    let storage_of = |s: &Stream, pid: NodeId| -> Result<StorageRef, ConvertError> {
        let p = torch::parse_storage_pid(s, pid).map_err(|_| bad_pid(s, pid))?;
        // torch's zip loader unpacks exactly five items (more fail to load).
        if p.len != 5 {
            return Err(bad_pid(s, pid));
        }
        meta_refused(&p)?;
        let ty = p.storage_type.as_ref().ok_or_else(|| bad_pid(s, pid))?;
        let dtype = p.dtype().ok_or_else(|| ConvertError::Unsupported {
            what: format!("storage type {}", ty.qualified()),
            offset: 0,
        })?;
        let key = p.key;
        let numel = p
            .numel
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| bad_pid(s, pid))?;
        let e = layout
            .storage(&key)
            .ok_or_else(|| ConvertError::Format(format!("no data/{key} record")))?;
        let nbytes = numel
            .checked_mul(dtype.size())
            .filter(|&n| n <= e.size)
            .ok_or_else(|| {
                ConvertError::Format(format!("storage {key} is larger than its record"))
            })?;
        Ok(StorageRef {
            key,
            dtype,
            nbytes,
            view_offset: 0,
        })
    };
    let mut b = Builder::new(&s, storage_of);
    let root_obj = b.build_root()?;
    let tensors = std::mem::take(&mut b.tensors);
    drop(b);
    for t in &tensors {
        if storages.contains_key(&t.storage) {
            continue;
        }
        let e = layout
            .storage(&t.storage)
            .ok_or_else(|| ConvertError::Format(format!("no data/{} record", t.storage)))?;
        let st = match e.method {
            0 => {
                let offset = e.data_offset.ok_or_else(|| {
                    ConvertError::Format(format!("record data/{} has no local header", t.storage))
                })?;
                if offset
                    .checked_add(e.size)
                    .is_none_or(|end| end > data.len() as u64)
                {
                    return Err(ConvertError::Format(format!(
                        "record data/{} runs past the end of the file",
                        t.storage
                    )));
                }
                Storage::File {
                    offset,
                    len: e.size,
                }
            }
            _ => {
                let (bytes, _) = zip::entry_data(data, e, scanner.options.max_decompressed)
                    .map_err(ConvertError::Format)?;
                Storage::Memory(Arc::new(bytes.into_owned()))
            }
        };
        storages.insert(t.storage.clone(), st);
    }
    Ok(Checkpoint {
        format: "torch-zip".into(),
        root: root_obj,
        tensors,
        storages,
    })
}

/// A `meta` storage holds no data (torch rebuilds an empty meta tensor).
fn meta_refused(p: &torch::StoragePid) -> Result<(), ConvertError> {
    if p.location.as_deref().is_some_and(|l| l.starts_with("meta")) {
        return Err(ConvertError::Unsupported {
            what: format!("storage {} on the meta device (no data)", p.key),
            offset: 0,
        });
    }
    Ok(())
}

fn bad_pid(s: &Stream, pid: NodeId) -> ConvertError {
    ConvertError::Format(format!(
        "persistent id {} is not a torch storage reference",
        s.render(pid)
    ))
}

fn torch_legacy_file(data: &[u8], opts: &Options) -> Result<Checkpoint, ConvertError> {
    let mut pos = 0usize;
    let mut streams = Vec::with_capacity(5);
    for _ in 0..5 {
        let s = run_stream(data, pos, 0, ReadView::Linear, opts);
        stream_ok(&s)?;
        pos = s.end as usize;
        streams.push(s);
    }
    if !torch::is_legacy_magic(&streams[0]) {
        return Err(ConvertError::Format(
            "not a legacy torch checkpoint (magic number)".into(),
        ));
    }
    let obj = &streams[3];
    let keys_stream = &streams[4];
    let keys: Vec<String> = keys_stream
        .result
        .and_then(|r| keys_stream.as_seq(r))
        .map(|v| {
            v.iter()
                .filter_map(|&k| keys_stream.as_str(k).map(str::to_owned))
                .collect()
        })
        .ok_or_else(|| {
            ConvertError::Format("the storage-key list is not a list of strings".into())
        })?;
    // Element sizes from the object stream's persistent ids.
    let mut dtypes: HashMap<String, Option<DType>> = HashMap::new();
    let mut view_keys: std::collections::HashSet<String> = Default::default();
    for p in &obj.persistent_ids {
        // The first id of a key makes its storage (torch's legacy
        // persistent_load caches it); later ids reuse it whatever their type.
        if let Ok(pid) = torch::parse_storage_pid(obj, p.pid) {
            meta_refused(&pid)?;
            let d = pid.dtype();
            // torch makes the storage from the first id and lets each later
            // one view its bytes as its own type: two types, two readings.
            if let Some(first) = dtypes.get(&pid.key)
                && *first != d
            {
                return Err(ConvertError::Unsupported {
                    what: format!(
                        "storage {} referenced as two types (torch reinterprets its bytes per reference)",
                        pid.key
                    ),
                    offset: p.offset,
                });
            }
            if let Some(v) = pid.view.and_then(|v| obj.as_seq(v))
                && let Some(vk) = v.first().and_then(|&k| obj.as_str(k))
            {
                view_keys.insert(vk.to_owned());
            }
            dtypes.entry(pid.key).or_insert(d);
        }
    }
    // torch keeps views and roots in one table: a view's key in the
    // storage list gets raw bytes written into the view (its root's bytes).
    if let Some(k) = keys.iter().find(|k| view_keys.contains(*k)) {
        return Err(ConvertError::Unsupported {
            what: format!("storage key {k} names a view as well as a stored storage"),
            offset: 0,
        });
    }
    let (raw, _) = torch_legacy::walk(data, pos, &keys, |k| {
        dtypes.get(k).copied().flatten().map(|d| d.size())
    })
    .map_err(|e| ConvertError::Format(format!("legacy storage section: {e:?}")))?;
    let raw: HashMap<String, torch_legacy::RawStorage> =
        raw.into_iter().map(|r| (r.key.clone(), r)).collect();
    // torch caches a storage view by its view key: the first reference
    // decides which root, offset and size every later one gets.
    let mut views: HashMap<String, (String, u64, u64)> = HashMap::new();
    let storage_of = |s: &Stream, pid: NodeId| -> Result<StorageRef, ConvertError> {
        let items = s
            .as_seq(pid)
            .filter(|t| t.len() >= 6)
            .ok_or_else(|| bad_pid(s, pid))?;
        let mut key = s
            .as_str(items[2])
            .ok_or_else(|| bad_pid(s, pid))?
            .to_owned();
        // view_metadata: None, or (view_key, offset, size) in elements of the root.
        let view = match s.as_seq(items[5]) {
            Some(v) if v.len() == 3 => {
                let vkey = s.as_str(v[0]).ok_or_else(|| bad_pid(s, pid))?.to_owned();
                let num = |i: usize| {
                    s.as_int(v[i])
                        .and_then(|o| u64::try_from(o).ok())
                        .ok_or_else(|| bad_pid(s, pid))
                };
                let (offset, size) = (num(1)?, num(2)?);
                let (root, offset, size) = views
                    .entry(vkey)
                    .or_insert((key.clone(), offset, size))
                    .clone();
                key = root;
                Some((offset, size))
            }
            _ => None,
        };
        let dtype = dtypes
            .get(&key)
            .copied()
            .flatten()
            .ok_or_else(|| bad_pid(s, pid))?;
        let r = raw.get(&key).ok_or_else(|| {
            ConvertError::Format(format!("storage {key} is not in the storage section"))
        })?;
        let root_bytes = r.numel * r.element_size;
        let (view_offset, nbytes) = match view {
            None => (0, root_bytes),
            Some((offset, size)) => {
                // The view is a storage of its own: it must lie in its root,
                // and its tensors in it.
                let end = offset
                    .checked_add(size)
                    .and_then(|e| e.checked_mul(r.element_size))
                    .filter(|&e| e <= root_bytes)
                    .ok_or_else(|| {
                        ConvertError::Format(format!(
                            "a view of storage {key} ({size} elements at {offset}) does not fit in it"
                        ))
                    })?;
                (offset, end)
            }
        };
        Ok(StorageRef {
            key,
            dtype,
            nbytes,
            view_offset,
        })
    };
    let mut b = Builder::new(obj, storage_of);
    let root = b.build_root()?;
    let tensors = std::mem::take(&mut b.tensors);
    drop(b);
    let storages = tensors
        .iter()
        .filter_map(|t| {
            raw.get(&t.storage).map(|r| {
                (
                    t.storage.clone(),
                    Storage::File {
                        offset: r.offset,
                        len: r.numel * r.element_size,
                    },
                )
            })
        })
        .collect();
    Ok(Checkpoint {
        format: "torch-legacy".into(),
        root,
        tensors,
        storages,
    })
}
