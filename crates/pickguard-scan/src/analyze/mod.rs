//! Walk a file's containers, run the pickle engine on every pickle, judge.
//!
//! `mod.rs` holds the report types, the per-file context and the walk that
//! sends each piece of a file to its reader: `archive` (zip, tar, Keras
//! config), `torch` (checkpoint structure), `pickles` (every place a pickle
//! is unpickled), `judge` (one stream's imports and calls), `code` (code
//! carried by value), `model_formats` (GGUF, ONNX, stray HDF5).

mod archive;
mod code;
mod hdf5;
mod judge;
mod model_formats;
mod pickles;
mod torch;

use crate::finding::{Finding, Location, Rule, Verdict};
use crate::policy::{Capability, Class, Policy, attribute_walk};
use code::code_by_value;
use pickguard_formats::compress::{Unpack, decompress};
use pickguard_formats::dtype::DType;
use pickguard_formats::torch::{
    Layout as TorchLayout, is_legacy_magic, parse_storage_pid, storage_element_size,
};
use pickguard_formats::{Sniffed, sniff, tar, torch_legacy, zip};
use pickguard_pickle::{self as pk, CallKind, Node, ReadView, StopReason, Stream};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Limits on containers; pickle limits are in `pickle`.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    pub pickle: pk::Options,
    /// Archive members per file, counted across nesting.
    pub max_members: usize,
    /// Nesting of containers (zip in zip, gzip in tar...).
    pub max_depth: usize,
    /// Bytes a file's compressed streams and members may decompress to, in
    /// all (a decompression bomb stops there and is inconclusive).
    pub max_decompressed: u64,
    /// Pickle streams per file or member.
    pub max_streams: usize,
    /// Byte ranges `(start, end)` of the file that were not fetched (a
    /// remote file read sparsely): they read as zeros. An archive member
    /// that lies in one is not analysed but asked for in
    /// [`FileReport::missing`], with an `unreadable` finding in case it is
    /// never fetched.
    pub absent: Option<std::sync::Arc<Vec<(u64, u64)>>>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            pickle: pk::Options::default(),
            max_members: 2_000_000,
            max_depth: 4,
            max_decompressed: 1 << 30,
            max_streams: 1000,
            absent: None,
        }
    }
}

/// One global as used by a file.
#[derive(Clone, Debug, Serialize)]
pub struct GlobalUse {
    pub module: String,
    pub name: String,
    /// `allowed`, `dangerous`, `stdlib-gadget`, `library`, ...
    pub class: String,
    /// How many times it is imported.
    pub imports: u64,
    /// How many times it is called.
    pub calls: u64,
    /// First place it is imported.
    pub first: Location,
}

/// Everything pickguard says about one file.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    pub path: String,
    /// What the content is (`torch-zip`, `torch-legacy`, `pickle`, `npy`, ...).
    pub format: String,
    pub verdict: Verdict,
    pub size: u64,
    pub findings: Vec<Finding>,
    /// Every global the file imports, with its judgement.
    pub globals: Vec<GlobalUse>,
    /// Tensors found (torch formats).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensors: Option<u64>,
    /// Pickle streams analysed.
    pub streams: u64,
    /// Why the file could not be read, when verdict is `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How a remote file was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched: Option<Fetched>,
    /// Ranges of the file the analysis needed and did not have (see
    /// [`ScanOptions::absent`]).
    #[serde(skip)]
    pub missing: Vec<(u64, u64)>,
}

/// What of a remote file was fetched to scan it.
#[derive(Clone, Debug, Serialize)]
pub struct Fetched {
    /// Bytes fetched (of `size`).
    pub bytes: u64,
    pub requests: u64,
}

impl FileReport {
    pub fn error(path: &str, msg: String) -> FileReport {
        FileReport {
            path: path.to_owned(),
            format: "unknown".into(),
            verdict: Verdict::Error,
            size: 0,
            findings: Vec::new(),
            globals: Vec::new(),
            tensors: None,
            streams: 0,
            error: Some(msg),
            fetched: None,
            missing: Vec::new(),
        }
    }
}

/// A member name as Python's `zipfile` gives it: cut at the first NUL.
fn python_zip_name(name: &str) -> &str {
    name.split('\0').next().unwrap_or(name)
}

/// The scanner: a policy and limits.
#[derive(Clone, Debug, Default)]
pub struct Scanner {
    pub policy: Policy,
    pub options: ScanOptions,
}

/// How a pickle is consumed, which decides persistent-id checks.
#[derive(Clone, Copy)]
enum Role<'r> {
    /// Plain `pickle.load`.
    Generic,
    /// `data.pkl` of a torch zip: its layout (storage records `data/<key>`).
    TorchData(&'r TorchLayout<'r>),
    /// A pickle inside a TorchScript archive.
    TorchScript,
    /// The object stream of a legacy checkpoint.
    TorchLegacy,
    /// The `pickle` member of a legacy tar checkpoint: persistent ids are keys.
    TorchLegacyTar,
}

impl PartialEq for Role<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Role::TorchData(a), Role::TorchData(b)) => std::ptr::eq(*a, *b),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

/// Findings of one rule kept per file; the rest are counted.
const MAX_PER_RULE: u64 = 100;

struct Ctx {
    /// Depth of pickles scanned inside pickles.
    nested: usize,
    findings: Vec<Finding>,
    per_rule: HashMap<Rule, u64>,
    globals: BTreeMap<(String, String), GlobalUse>,
    members: usize,
    streams: u64,
    tensors: Option<u64>,
    format: Option<String>,
    /// Storage records referenced by data.pkl (torch zip).
    storages: Vec<StorageRef>,
    /// Bytes decompressed so far for this file (the budget is per file).
    inflated: u64,
    /// The directory the file is in (None for standard input): where an
    /// ONNX model's external data is looked for.
    dir: Option<std::path::PathBuf>,
    /// joblib object arrays' inner pickles in the stream being judged: their
    /// byte range and the globals a fresh unpickler (joblib.load) names there.
    joblib_inner: Vec<(u64, u64, HashMap<u64, String>)>,
    /// The file's own bytes (address, length): members of an archive in
    /// them are where `ScanOptions::absent` applies.
    top: (usize, usize),
    /// Absent ranges the analysis needed.
    missing: Vec<(u64, u64)>,
}

#[derive(Clone, Debug)]
struct StorageRef {
    key: String,
    element_size: Option<u64>,
    numel: Option<i64>,
}

fn loc(
    member: &Option<String>,
    stream: Option<usize>,
    offset: Option<u64>,
    view: ReadView,
) -> Location {
    Location {
        member: member.clone(),
        stream,
        offset,
        view: if view == ReadView::Linear {
            None
        } else {
            Some(view)
        },
    }
}

fn join_member(parent: &Option<String>, name: &str) -> Option<String> {
    Some(match parent {
        Some(p) => format!("{p}!{name}"),
        None => name.to_owned(),
    })
}

impl Ctx {
    /// Record a finding; past `MAX_PER_RULE` of one rule, only count it
    /// (a pickle can repeat one import a million times).
    fn push(&mut self, f: Finding) {
        let n = self.per_rule.entry(f.rule).or_insert(0);
        if *n < MAX_PER_RULE {
            // Two readings can run the same opcodes (joblib's inner pickle is
            // also what pickle.load reads): one finding per place is enough.
            // Bounded: at most MAX_PER_RULE findings per rule are compared.
            let dup = self
                .findings
                .iter()
                .any(|g| g.rule == f.rule && g.location == f.location && g.message == f.message);
            if dup {
                return;
            }
        }
        *n += 1;
        if *n <= MAX_PER_RULE {
            self.findings.push(f);
        }
    }
    fn set_format(&mut self, f: &str) {
        if self.format.is_none() {
            self.format = Some(f.to_owned());
        }
    }
}

impl Scanner {
    pub fn new(policy: Policy, options: ScanOptions) -> Scanner {
        Scanner { policy, options }
    }

    fn out_of_time(&self) -> bool {
        self.options
            .pickle
            .limits
            .deadline
            .is_some_and(|d| std::time::Instant::now() >= d)
    }

    /// Scan one file's bytes; `path` names it, and its directory is where
    /// an ONNX model's external data is looked for.
    pub fn scan_bytes(&self, path: &str, data: &[u8]) -> FileReport {
        let dir = (path != "-")
            .then(|| std::path::Path::new(path).parent().map(|p| p.to_path_buf()))
            .flatten();
        self.scan_image(path, data, dir)
    }

    /// Scan bytes that are in no local directory (`dir: None`: a remote
    /// file, standard input) or in the given one.
    pub fn scan_image(
        &self,
        path: &str,
        data: &[u8],
        dir: Option<std::path::PathBuf>,
    ) -> FileReport {
        let mut ctx = Ctx {
            top: (data.as_ptr() as usize, data.len()),
            missing: Vec::new(),
            nested: 0,
            findings: Vec::new(),
            per_rule: HashMap::new(),
            globals: BTreeMap::new(),
            members: 0,
            streams: 0,
            tensors: None,
            format: None,
            storages: Vec::new(),
            inflated: 0,
            joblib_inner: Vec::new(),
            dir,
        };
        self.explore(&mut ctx, data, None, 0);
        // A Keras model directory (what an unpacked .keras or a hub download
        // is): keras.saving.load_model(dir) reads its config.json.
        if ctx.format.is_none() && (is_keras_dir_config(path) || is_keras_config(path, data)) {
            ctx.set_format("keras-config");
            self.check_keras(&mut ctx, data, &None, 0);
        }
        let mut more: Vec<(Rule, u64)> = ctx
            .per_rule
            .iter()
            .filter(|(_, n)| **n > MAX_PER_RULE)
            .map(|(r, n)| (*r, *n))
            .collect();
        more.sort();
        for (rule, n) in more {
            ctx.findings.push(Finding::new(
                rule,
                format!(
                    "{} more {} findings not listed",
                    n - MAX_PER_RULE,
                    rule.id()
                ),
                Location::default(),
            ));
        }
        // Unknown is not clean: a file whose name says model but whose content
        // is nothing pickguard reads (random bytes named .pt, an empty .pt,
        // ONNX, SavedModel protobufs, flax msgpack...) was not checked.
        if ctx.format.is_none()
            && let Some(ext) = model_extension(path)
        {
            let what = if data.is_empty() {
                "is empty".to_string()
            } else {
                format!(
                    "holds {} bytes in no format pickguard reads (starts with {})",
                    data.len(),
                    data.iter()
                        .take(8)
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                )
            };
            ctx.push(Finding::new(
                Rule::UnsupportedFormat,
                format!(
                    "the name says a model file ({ext}) but the file {what}: not analysed, so not clean"
                ),
                Location::default(),
            ));
            ctx.set_format("unknown-model");
        }
        let mut verdict = Verdict::Clean;
        for f in &ctx.findings {
            verdict = verdict.max(f.rule.verdict());
        }
        // Most important first, then by place.
        ctx.findings.sort_by(|a, b| {
            b.rule
                .verdict()
                .cmp(&a.rule.verdict())
                .then(b.severity.cmp(&a.severity))
                .then_with(|| {
                    (&a.location.member, a.location.stream, a.location.offset).cmp(&(
                        &b.location.member,
                        b.location.stream,
                        b.location.offset,
                    ))
                })
        });
        FileReport {
            path: path.to_owned(),
            format: ctx.format.unwrap_or_else(|| "other".into()),
            verdict,
            size: data.len() as u64,
            findings: ctx.findings,
            globals: ctx.globals.into_values().collect(),
            tensors: ctx.tensors,
            streams: ctx.streams,
            error: None,
            fetched: None,
            missing: ctx.missing,
        }
    }

    /// A member an extractor writes out as a file named `name`: read as
    /// any content, then judged by its name as a file of that name is (a
    /// Keras `config.json`; a model-named file in no format pickguard reads).
    fn explore_named(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: Option<String>,
        name: &str,
        depth: usize,
    ) {
        let findings = ctx.findings.len();
        let kind = sniff(data);
        self.explore(ctx, data, member.clone(), depth);
        let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
        if is_keras_config(base, data) {
            self.check_keras(ctx, data, &member, depth);
        } else if kind == Sniffed::Unknown
            && ctx.findings.len() == findings
            && let Some(ext) = model_extension(base)
        {
            ctx.push(Finding::new(
                Rule::UnsupportedFormat,
                format!(
                    "the name says a model file ({ext}) but its {} bytes are in no format pickguard reads: not analysed, so not clean",
                    data.len()
                ),
                loc(&member, None, None, ReadView::Linear),
            ));
        }
    }

    fn explore(&self, ctx: &mut Ctx, data: &[u8], member: Option<String>, depth: usize) {
        if depth > self.options.max_depth {
            ctx.push(Finding::new(
                Rule::BudgetExceeded,
                format!(
                    "containers nested deeper than {} levels; inner content not analysed",
                    self.options.max_depth
                ),
                loc(&member, None, None, ReadView::Linear),
            ));
            return;
        }
        let kind = sniff(data);
        let top = depth == 0;
        // A TorchScript flatbuffer (torch.jit.save_jit_module_to_flatbuffer,
        // identifier PTMF): torch.jit.load runs its code; not read.
        if matches!(kind, Sniffed::Unknown | Sniffed::PickleLike)
            && data.get(4..8) == Some(b"PTMF".as_slice())
        {
            if top {
                ctx.set_format("torchscript-flatbuffer");
            }
            ctx.push(Finding::new(
                Rule::UnsupportedFormat,
                "a TorchScript flatbuffer (identifier PTMF): torch.jit.load and the lite interpreter run the code it carries, which pickguard does not read yet: not clean",
                loc(&member, None, None, ReadView::Linear),
            ));
            return;
        }
        // Sniffing chooses one reading; loaders do not all make the same
        // choice. pickle.load (and torch.load's legacy path) read a pickle
        // from byte 0 whatever else the file is; h5py finds an HDF5
        // superblock at 0, 512, 1024, 2048...
        if !matches!(kind, Sniffed::PickleLike) {
            self.check_pickle_at_start(ctx, data, &member, kind);
        }
        if kind != Sniffed::Hdf5 {
            self.check_hdf5_elsewhere(ctx, data, &member, depth, top && kind == Sniffed::Unknown);
        }
        // Python's zipfile (keras.saving.load_model, numpy.load of .npz,
        // zipfile users) finds an archive from the file's end whatever its
        // start is: every format that does not check for it itself is
        // checked here.
        // A zip stored as a tar's member is that member, scanned as one; a
        // zip after the tar's members is a second reading of the file.
        let zip_is_a_member = kind == Sniffed::Tar
            && zip::find_eocd(data).is_some_and(|eocd| {
                tar::members(data, self.options.max_members).is_ok_and(|ms| {
                    ms.iter()
                        .any(|m| m.offset <= eocd && eocd < m.offset.saturating_add(m.size))
                })
            });
        if !zip_is_a_member
            && matches!(
                kind,
                Sniffed::Tar
                    | Sniffed::Npy
                    | Sniffed::Gguf
                    | Sniffed::Onnx
                    | Sniffed::TfGraph
                    | Sniffed::Hdf5
                    | Sniffed::SevenZip
                    | Sniffed::Gzip
                    | Sniffed::Xz
                    | Sniffed::Bzip2
                    | Sniffed::Lz4
                    | Sniffed::Zstd
            )
        {
            let what = format!("{kind:?}").to_lowercase();
            self.check_polyglot(ctx, data, &member, depth, &what);
        }
        match kind {
            Sniffed::Zip => self.scan_zip(ctx, data, member, depth),
            Sniffed::Tar => self.scan_tar(ctx, data, member, depth),
            Sniffed::Npy => {
                if top {
                    ctx.set_format("npy");
                }
                match pickguard_formats::npy_header(data) {
                    Ok((_, start, true)) => {
                        // numpy.load(allow_pickle=True) unpickles the rest.
                        self.scan_pickle_region(
                            ctx,
                            &data[start..],
                            start as u64,
                            &member,
                            Role::Generic,
                            false,
                        );
                    }
                    Ok(_) => {}
                    Err(e) => ctx.push(Finding::new(
                        Rule::Unreadable,
                        format!("bad .npy header: {e}"),
                        loc(&member, None, Some(0), ReadView::Linear),
                    )),
                }
            }
            Sniffed::Safetensors => {
                if top {
                    ctx.set_format("safetensors");
                }
                // The format runs no code; what matters is whether the
                // victim's loader accepts the header. Python's safetensors
                // is this crate, so its verdict is the loader's (the header
                // size is capped by the crate).
                let header = data
                    .get(..8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                    .unwrap_or(0);
                if self.unfetched(ctx, data, 0, header.saturating_add(8), &member, "header") {
                    return;
                }
                match safetensors::SafeTensors::deserialize(data) {
                    Ok(st) => *ctx.tensors.get_or_insert(0) += st.len() as u64,
                    Err(e) => ctx.push(Finding::new(
                        Rule::Unreadable,
                        format!("safetensors refuses this file: {e}"),
                        loc(&member, None, Some(0), ReadView::Linear),
                    )),
                }
                self.check_polyglot(ctx, data, &member, depth, "safetensors");
            }
            Sniffed::Gzip
            | Sniffed::Zlib
            | Sniffed::Lzma
            | Sniffed::Xz
            | Sniffed::Bzip2
            | Sniffed::Lz4
            | Sniffed::Zstd => {
                let name = format!("{kind:?}").to_lowercase();
                let limit = self.options.max_decompressed.saturating_sub(ctx.inflated);
                let (out, r) = decompress(kind, data, limit);
                ctx.inflated += out.len() as u64;
                if out.is_empty() && r.is_err() && matches!(kind, Sniffed::Zlib | Sniffed::Lzma) {
                    // A weak magic that did not decode: not this format.
                    if kind == Sniffed::Lzma {
                        self.scan_pickle_file(ctx, data, member, depth);
                    } else {
                        self.check_polyglot(ctx, data, &member, depth, "other");
                    }
                    return;
                }
                if top {
                    ctx.set_format(&name);
                }
                match r {
                    Ok(()) => {}
                    Err(Unpack::TooBig) => ctx.push(Finding::new(
                        Rule::BudgetExceeded,
                        format!(
                            "{name} data expands past the {} bytes this file may decompress to (--max-decompressed)",
                            self.options.max_decompressed
                        ),
                        loc(&member, None, None, ReadView::Linear),
                    )),
                    // Python's decompressing readers hand out what decoded
                    // before the error, so a loader may run that part.
                    Err(Unpack::Bad(e)) => ctx.push(Finding::new(
                        Rule::Unreadable,
                        format!(
                            "{name}: {e} (the {} bytes before it are analysed)",
                            out.len()
                        ),
                        loc(&member, None, None, ReadView::Linear),
                    )),
                }
                if !out.is_empty() {
                    self.explore(
                        ctx,
                        &out,
                        join_member(&member, &format!("<{name}>")),
                        depth + 1,
                    );
                }
            }
            Sniffed::Hdf5 => self.scan_hdf5(ctx, data, &member, depth, top),
            Sniffed::Gguf => {
                if top {
                    ctx.set_format("gguf");
                }
                self.scan_gguf(ctx, data, &member);
            }
            Sniffed::Onnx => {
                if top {
                    ctx.set_format("onnx");
                }
                let dir = if top { ctx.dir.clone() } else { None };
                self.scan_onnx(ctx, data, &member, dir.as_deref());
            }
            Sniffed::TfGraph => {
                if top {
                    ctx.set_format("tensorflow");
                }
                self.scan_tfgraph(ctx, data, &member, depth);
            }
            Sniffed::SevenZip => {
                if top {
                    ctx.set_format("7z");
                }
                self.scan_7z(ctx, data, &member, depth);
            }
            Sniffed::PickleLike => self.scan_pickle_file(ctx, data, member, depth),
            Sniffed::Unknown => {
                self.check_polyglot(ctx, data, &member, depth, "other");
            }
        }
    }
}

/// What a zip archive is, for reading its members.
#[derive(Clone, Copy)]
enum ZipKind<'a> {
    Plain,
    /// torch: the archive's root folder and records.
    Torch(&'a TorchLayout<'a>),
    /// Keras 3: `config.json` is judged, not sniffed.
    Keras,
}

/// `config.json` beside a Keras model's other parts (`metadata.json`,
/// `model.weights.h5`, `model.weights.npz`).
fn is_keras_dir_config(path: &str) -> bool {
    let p = std::path::Path::new(path);
    p.file_name().is_some_and(|n| n == "config.json")
        && p.parent().is_some_and(|d| {
            ["metadata.json", "model.weights.h5", "model.weights.npz"]
                .iter()
                .any(|n| d.join(n).is_file())
        })
}

/// A `config.json` whose content is a Keras object config (top-level
/// `class_name` and `config`): what `keras.saving.load_model(dir)` reads,
/// recognised without its siblings (a remote file has none to look at).
fn is_keras_config(path: &str, data: &[u8]) -> bool {
    // A Hugging Face cache blob (`models--ORG--NAME/blobs/HASH`) has lost its
    // name: it may be a config.json, and is judged by content alone.
    let mut up = path.rsplit('/');
    let (name, dir, repo) = (up.next(), up.next(), up.next());
    let blob = dir == Some("blobs")
        && repo.is_some_and(|r| {
            ["models--", "datasets--", "spaces--"]
                .iter()
                .any(|p| r.starts_with(p))
        });
    if (name != Some("config.json") && !blob) || data.len() > 64 << 20 {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(data).is_ok_and(|v| {
        v.get("class_name").is_some_and(|c| c.is_string())
            && v.get("config").is_some_and(|c| c.is_object())
    })
}

/// Extensions that name model files (or their pickled/serialised parts).
const MODEL_EXTENSIONS: &[&str] = &[
    ".pt",
    ".pth",
    ".pth.tar",
    ".bin",
    ".ckpt",
    ".pkl",
    ".pickle",
    ".p",
    ".joblib",
    ".sav",
    ".dill",
    ".npy",
    ".npz",
    ".safetensors",
    ".onnx",
    ".h5",
    ".hdf5",
    ".keras",
    ".pb",
    // TensorFlow reads saved_model.pbtxt (text format) when there is no
    // saved_model.pb; pickguard does not read the text format.
    ".pbtxt",
    ".tflite",
    ".msgpack",
    ".gguf",
    ".ggml",
    ".mar",
    ".pdparams",
    ".pdmodel",
    ".mlmodel",
    ".model",
    ".nemo",
    ".llamafile",
    ".pkl.gz",
    ".pt.gz",
];

/// The model extension a path ends with, if any (case-insensitive).
pub fn model_extension(path: &str) -> Option<&'static str> {
    let lower = path.to_ascii_lowercase();
    MODEL_EXTENSIONS
        .iter()
        .filter(|e| lower.ends_with(*e))
        .max_by_key(|e| e.len())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// A stored zip of `members`, in order.
    fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = ::zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = ::zip::write::SimpleFileOptions::default()
            .compression_method(::zip::CompressionMethod::Stored);
        for (name, data) in members {
            w.start_file(*name, opts).expect("member");
            w.write_all(data).expect("write");
        }
        w.finish().expect("finish").into_inner()
    }

    fn rules(r: &FileReport) -> Vec<Rule> {
        r.findings.iter().map(|f| f.rule).collect()
    }

    const OS_SYSTEM: &[u8] = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R.";
    /// `('storage', torch.FloatStorage, '0', 'cpu', 4)` as a persistent id.
    const PID_4_FLOATS: &[u8] =
        b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ.";

    #[test]
    fn storage_references_are_checked_against_the_records_torch_reads() {
        let short = zip_of(&[("m/data.pkl", PID_4_FLOATS), ("m/data/0", &[0; 8])]);
        let r = Scanner::default().scan_bytes("t.pt", &short);
        assert_eq!(r.format, "torch-zip");
        assert!(
            rules(&r).contains(&Rule::TorchStorageMismatch),
            "4 floats in 8 bytes: {:?}",
            r.findings
        );
        let fits = zip_of(&[("m/data.pkl", PID_4_FLOATS), ("m/data/0", &[0; 16])]);
        let r = Scanner::default().scan_bytes("t.pt", &fits);
        assert_eq!(r.verdict, Verdict::Clean, "{:?}", r.findings);
        // The same record under another folder than the first entry's is
        // not the one torch reads.
        let elsewhere = zip_of(&[("m/data.pkl", PID_4_FLOATS), ("n/data/0", &[0; 16])]);
        let r = Scanner::default().scan_bytes("t.pt", &elsewhere);
        assert!(rules(&r).contains(&Rule::TorchStorageMismatch));
    }

    #[test]
    fn a_pickle_outside_the_torch_layout_is_still_unpickled_by_someone() {
        // torch.load finds no data.pkl under `a/` and fails; a zip reader
        // that loads b/data.pkl still runs it.
        let z = zip_of(&[("a/version", b"3\n"), ("b/data.pkl", OS_SYSTEM)]);
        let r = Scanner::default().scan_bytes("t.pt", &z);
        assert_eq!(r.format, "zip");
        assert_eq!(r.verdict, Verdict::Malicious, "{:?}", r.findings);
    }

    #[test]
    fn zip_discrepancies_choose_their_rule_by_kind() {
        let mut z = zip_of(&[("m/data.pkl", PID_4_FLOATS), ("m/data/0", &[0; 16])]);
        // The first local header's CRC (offset 14) no longer matches.
        z[14] ^= 0xff;
        let r = Scanner::default().scan_bytes("t.pt", &z);
        let crc: Vec<_> = r
            .findings
            .iter()
            .filter(|f| f.rule == Rule::ZipCrcMismatch)
            .collect();
        assert_eq!(crc.len(), 1, "{:?}", r.findings);
        assert!(crc[0].message.contains("CRC differs"), "{}", crc[0].message);
        assert!(!rules(&r).contains(&Rule::ZipTamper));
        // A central entry with no local header: miniz cannot read it.
        let mut z = zip_of(&[("m/data.pkl", PID_4_FLOATS), ("m/data/0", &[0; 16])]);
        z[0..4].copy_from_slice(b"XXXX");
        let r = Scanner::default().scan_bytes("t.pt", &z);
        assert!(rules(&r).contains(&Rule::Unreadable), "{:?}", r.findings);
        assert_ne!(r.verdict, Verdict::Clean);
    }

    #[test]
    fn the_legacy_magic_makes_a_legacy_checkpoint() {
        // magic, protocol, sys_info, then the object stream.
        let mut f = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.".to_vec();
        f.extend_from_slice(b"\x80\x02M\xe9\x03.\x80\x02}q\x00.");
        let r = Scanner::default().scan_bytes("t.pt", &f);
        assert_eq!(r.format, "torch-legacy", "{:?}", r.findings);
        f.extend_from_slice(OS_SYSTEM);
        let r = Scanner::default().scan_bytes("t.pt", &f);
        assert_eq!(r.format, "torch-legacy");
        assert_eq!(r.verdict, Verdict::Malicious, "{:?}", r.findings);
        // One bit off the magic: a plain pickle, still judged.
        f[3] ^= 1;
        let r = Scanner::default().scan_bytes("t.pt", &f);
        assert_ne!(r.format, "torch-legacy");
    }
}
