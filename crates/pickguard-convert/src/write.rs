//! Choosing which tensors to write, naming them, and streaming a safetensors file.
//!
//! Written by hand rather than with the `safetensors` crate's serializer,
//! which takes every tensor as an in-memory slice: here contiguous tensors go
//! from the checkpoint file to the output with `copy_file_range` (through
//! `std::io::copy` of file ranges) and never pass through user memory.

use crate::build::Obj;
use crate::load::{Checkpoint, Storage};
use crate::{ConvertError, TensorSpec};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What to do with names that refer to the very same tensor (tied weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shared {
    /// Write it once; record the other names in the metadata, as Hugging Face does.
    Alias,
    /// Write a copy under each name.
    Copy,
    /// Fail, naming the shared tensors.
    Refuse,
}

#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// Dotted path of the sub-dictionary to convert (`state_dict`, `model.encoder`).
    pub key: Option<String>,
    /// Prefixes removed from tensor names (`module.`).
    pub strip_prefixes: Vec<String>,
    pub shared: Shared,
    /// Write non-tensor values here, as JSON.
    pub extra_json: Option<PathBuf>,
    /// Replace existing output files.
    pub overwrite: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            key: None,
            strip_prefixes: Vec::new(),
            shared: Shared::Alias,
            extra_json: None,
            overwrite: false,
        }
    }
}

/// What a write did.
#[derive(Clone, Debug, Serialize)]
pub struct WriteReport {
    pub output: PathBuf,
    pub tensors: usize,
    pub bytes: u64,
    /// `name -> the name whose data it shares`.
    pub aliases: BTreeMap<String, String>,
    /// The sub-dictionary converted, when one was chosen.
    pub selected: Option<String>,
    /// Tensors outside the selected sub-dictionary, not written.
    pub tensors_not_selected: usize,
    /// Non-tensor values (epoch, config...), written only with `--extra-json`.
    pub other_values: usize,
    /// Whether they were written to the JSON side file.
    pub extra_json: bool,
}

/// Keys under which checkpoints commonly keep the model's weights.
const MODEL_KEYS: &[&str] = &[
    "state_dict",
    "model_state_dict",
    "model",
    "module",
    "net",
    "network",
    "weights",
];

fn has_tensor(o: &Obj) -> bool {
    match o {
        Obj::Tensor(_) => true,
        Obj::Dict(kv) => kv.iter().any(|(_, v)| has_tensor(v)),
        Obj::List(v) => v.iter().any(has_tensor),
        _ => false,
    }
}

fn count_tensors(o: &Obj) -> usize {
    match o {
        Obj::Tensor(_) => 1,
        Obj::Dict(kv) => kv.iter().map(|(_, v)| count_tensors(v)).sum(),
        Obj::List(v) => v.iter().map(count_tensors).sum(),
        _ => 0,
    }
}

fn select<'a>(root: &'a Obj, key: Option<&str>) -> Result<(&'a Obj, Option<String>), ConvertError> {
    if let Some(k) = key {
        if k == "." || k.is_empty() {
            return Ok((root, None));
        }
        let mut cur = root;
        for part in k.split('.') {
            let Obj::Dict(kv) = cur else {
                return Err(ConvertError::Format(format!(
                    "--key {k}: {part:?} is not inside a dictionary"
                )));
            };
            cur = kv
                .iter()
                .find(|(n, _)| n == part)
                .map(|(_, v)| v)
                .ok_or_else(|| {
                    let names: Vec<&str> = kv.iter().map(|(n, _)| n.as_str()).take(20).collect();
                    ConvertError::Format(format!(
                        "--key {k}: no {part:?}; keys here: {}",
                        names.join(", ")
                    ))
                })?;
        }
        return Ok((cur, Some(k.to_owned())));
    }
    // Automatic: a dict without tensors of its own but one model-like entry holding them.
    if let Obj::Dict(kv) = root {
        let direct = kv.iter().any(|(_, v)| matches!(v, Obj::Tensor(_)));
        if !direct {
            for mk in MODEL_KEYS {
                if let Some((_, v)) = kv
                    .iter()
                    .find(|(n, v)| n == mk && matches!(v, Obj::Dict(_)) && has_tensor(v))
                {
                    return Ok((v, Some((*mk).to_owned())));
                }
            }
        }
    }
    Ok((root, None))
}

fn flatten(o: &Obj, prefix: &str, out: &mut Vec<(String, usize)>, others: &mut usize) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match o {
        Obj::Tensor(t) => out.push((prefix.to_owned(), *t)),
        Obj::Dict(kv) => kv
            .iter()
            .for_each(|(k, v)| flatten(v, &join(k), out, others)),
        Obj::List(v) if has_tensor(o) => v
            .iter()
            .enumerate()
            .for_each(|(i, x)| flatten(x, &join(&i.to_string()), out, others)),
        _ => *others += 1,
    }
}

fn to_json(o: &Obj, names: &HashMap<usize, String>) -> Value {
    match o {
        Obj::None => Value::Null,
        Obj::Bool(b) => json!(b),
        Obj::Int(i) => json!(i),
        Obj::Float(f) if f.is_finite() => json!(f),
        Obj::Float(f) => json!(f.to_string()),
        Obj::Str(s) => json!(s),
        Obj::List(v) => Value::Array(v.iter().map(|x| to_json(x, names)).collect()),
        Obj::Dict(kv) => Value::Object(
            kv.iter()
                .map(|(k, v)| (k.clone(), to_json(v, names)))
                .collect(),
        ),
        Obj::Tensor(t) => json!({"$tensor": names.get(t)}),
        Obj::Opaque(d) => json!({"$opaque": d}),
    }
}

/// Write the checkpoint's tensors to `out`. The file appears only when complete.
pub fn write_safetensors(
    ck: &Checkpoint,
    src: &File,
    out: &Path,
    opts: &WriteOptions,
) -> Result<WriteReport, ConvertError> {
    if out.exists() && !opts.overwrite {
        return Err(ConvertError::Format(format!(
            "{} exists (use --force to replace it)",
            out.display()
        )));
    }
    let (sel, selected) = select(&ck.root, opts.key.as_deref())?;
    let mut named = Vec::new();
    let mut others = 0;
    flatten(sel, "", &mut named, &mut others);
    if named.is_empty() {
        return Err(ConvertError::Format("no tensors to convert".into()));
    }
    for (n, _) in named.iter_mut() {
        for p in &opts.strip_prefixes {
            if let Some(rest) = n.strip_prefix(p.as_str()) {
                *n = rest.to_owned();
                break;
            }
        }
        if n.is_empty() {
            *n = "tensor".into();
        }
    }
    named.sort();
    for w in named.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(ConvertError::Format(format!(
                "two tensors would both be named {:?}",
                w[0].0
            )));
        }
    }
    // Names of the same tensor (same storage, offset, shape, strides, dtype).
    let mut first_of: HashMap<&TensorSpec, &str> = HashMap::new();
    let mut aliases = BTreeMap::new();
    let mut written: Vec<(&str, &TensorSpec)> = Vec::new();
    for (n, t) in &named {
        let spec = &ck.tensors[*t];
        match first_of.get(spec) {
            Some(first) if opts.shared != Shared::Copy => {
                if opts.shared == Shared::Refuse {
                    return Err(ConvertError::Format(format!(
                        "{n:?} and {first:?} are the same tensor (use --shared alias or copy)"
                    )));
                }
                aliases.insert(n.clone(), (*first).to_owned());
            }
            _ => {
                first_of.insert(spec, n);
                written.push((n, spec));
            }
        }
    }
    // Header.
    let mut header = Map::new();
    let mut meta = Map::new();
    meta.insert("format".into(), json!("pt"));
    if !aliases.is_empty() {
        meta.insert(
            "pickguard.aliases".into(),
            json!(serde_json::to_string(&aliases).unwrap_or_default()),
        );
    }
    header.insert("__metadata__".into(), Value::Object(meta));
    let mut pos = 0u64;
    for (n, t) in &written {
        let len = t.nbytes();
        header.insert((*n).to_owned(), json!({"dtype": t.dtype.safetensors_name(), "shape": t.shape, "data_offsets": [pos, pos + len]}));
        pos += len;
    }
    let mut hbytes = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| ConvertError::Format(e.to_string()))?;
    while hbytes.len() % 8 != 0 {
        hbytes.push(b' ');
    }
    let tmp = partial_path(out);
    let result = (|| -> Result<(), ConvertError> {
        let mut f =
            File::create(&tmp).map_err(ConvertError::io(format!("creating {}", tmp.display())))?;
        let io = ConvertError::io(format!("writing {}", tmp.display()));
        f.write_all(&(hbytes.len() as u64).to_le_bytes())
            .and_then(|_| f.write_all(&hbytes))
            .map_err(io)?;
        for (n, t) in &written {
            copy_tensor(ck, src, t, &mut f).map_err(|e| match e {
                ConvertError::Io { context, source } => ConvertError::Io {
                    context: format!("{context} (tensor {n})"),
                    source,
                },
                e => e,
            })?;
        }
        f.sync_all()
            .map_err(ConvertError::io(format!("syncing {}", tmp.display())))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out)
        .map_err(ConvertError::io(format!("renaming to {}", out.display())))?;
    if let Some(x) = &opts.extra_json {
        let names: HashMap<usize, String> = named.iter().map(|(n, t)| (*t, n.clone())).collect();
        let doc = to_json(&ck.root, &names);
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
        std::fs::write(x, text).map_err(ConvertError::io(format!("writing {}", x.display())))?;
    }
    Ok(WriteReport {
        output: out.to_owned(),
        tensors: written.len(),
        bytes: pos,
        aliases,
        selected,
        tensors_not_selected: count_tensors(&ck.root) - count_tensors(sel),
        other_values: others,
        extra_json: opts.extra_json.is_some(),
    })
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".partial-{}", std::process::id()));
    out.with_file_name(name)
}

/// Copy one tensor's elements, in C order, to `out`.
fn copy_tensor(
    ck: &Checkpoint,
    src: &File,
    t: &TensorSpec,
    out: &mut File,
) -> Result<(), ConvertError> {
    let io = || ConvertError::io("copying tensor data");
    let storage = ck
        .storages
        .get(&t.storage)
        .ok_or_else(|| ConvertError::Format(format!("storage {} not found", t.storage)))?;
    let es = t.dtype.size();
    let len = t.nbytes();
    if len == 0 {
        return Ok(());
    }
    let start = t.offset * es;
    let extent = t
        .extent_bytes()
        .ok_or_else(|| ConvertError::Format("tensor size overflows".into()))?;
    let (base, slen) = match storage {
        Storage::File { offset, len } => (Some(*offset), *len),
        Storage::Memory(v) => (None, v.len() as u64),
    };
    if extent > slen {
        return Err(ConvertError::Format(format!(
            "tensor reaches past storage {}",
            t.storage
        )));
    }
    if t.is_contiguous() {
        match (base, storage) {
            (Some(b), _) => {
                let mut r = src;
                r.seek(SeekFrom::Start(b + start)).map_err(io())?;
                let n = std::io::copy(&mut r.take(len), out).map_err(io())?;
                if n != len {
                    return Err(ConvertError::Format(format!(
                        "storage {} is shorter than declared",
                        t.storage
                    )));
                }
            }
            (None, Storage::Memory(v)) => out
                .write_all(&v[start as usize..(start + len) as usize])
                .map_err(io())?,
            _ => unreachable!("storage is a file range or memory"),
        }
        return Ok(());
    }
    // Strided view: read the span it covers, gather rows.
    let span: std::borrow::Cow<[u8]> = match (base, storage) {
        (Some(b), _) => {
            let mut buf = vec![0u8; (extent - start) as usize];
            let mut r = src;
            r.seek(SeekFrom::Start(b + start)).map_err(io())?;
            r.read_exact(&mut buf).map_err(io())?;
            std::borrow::Cow::Owned(buf)
        }
        (None, Storage::Memory(v)) => {
            std::borrow::Cow::Borrowed(&v[start as usize..extent as usize])
        }
        _ => unreachable!("storage is a file range or memory"),
    };
    let nd = t.shape.len();
    let inner_contig = t.strides[nd - 1] == 1;
    let row = if inner_contig { t.shape[nd - 1] } else { 1 };
    let outer = if inner_contig { nd - 1 } else { nd };
    let mut idx = vec![0u64; outer];
    let mut buf = Vec::with_capacity((len as usize).min(64 << 20));
    loop {
        let off: u64 = idx.iter().zip(&t.strides).map(|(i, s)| i * s).sum();
        let b = (off * es) as usize;
        buf.extend_from_slice(&span[b..b + (row * es) as usize]);
        if buf.len() >= 32 << 20 {
            out.write_all(&buf).map_err(io())?;
            buf.clear();
        }
        // Odometer over the outer dimensions.
        let mut d = outer;
        loop {
            if d == 0 {
                out.write_all(&buf).map_err(io())?;
                return Ok(());
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < t.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Tensor names and indices into `Checkpoint::tensors`.
pub type Named = Vec<(String, usize)>;

/// Every tensor with the name it gets (`--key`, auto-selection and
/// flattening as `write_safetensors` does, without prefix stripping),
/// sorted by name.
pub fn named_tensors(
    ck: &Checkpoint,
    key: Option<&str>,
) -> Result<(Named, Option<String>), ConvertError> {
    let (sel, selected) = select(&ck.root, key)?;
    let mut named = Vec::new();
    let mut others = 0;
    flatten(sel, "", &mut named, &mut others);
    named.sort();
    Ok((named, selected))
}
