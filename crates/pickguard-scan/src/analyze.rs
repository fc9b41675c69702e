//! Walk a file's containers, run the pickle engine on every pickle, judge.

use crate::finding::{Finding, Location, Rule, Verdict};
use crate::policy::{Capability, Class, Policy, attribute_walk, torch_storage_element_size};

/// Element size of a storage-class global (`torch.FloatStorage`, `torch.storage.UntypedStorage`).
fn storage_element_size(g: &pk::Import) -> Option<u64> {
    if g.module == "torch" || g.module == "torch.storage" {
        torch_storage_element_size(&g.name)
    } else {
        None
    }
}
use pickguard_formats::dtype::DType;
use pickguard_formats::{Sniffed, sniff, tar, torch_legacy, zip};
use pickguard_pickle::{self as pk, CallKind, Node, ReadView, StopReason, Stream};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The legacy torch magic number, `0x1950a86a20f9469cfc6c`.
const TORCH_LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;

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
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            pickle: pk::Options::default(),
            max_members: 2_000_000,
            max_depth: 4,
            max_decompressed: 1 << 30,
            max_streams: 1000,
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
#[derive(Clone, Copy, PartialEq)]
enum Role<'r> {
    /// Plain `pickle.load`.
    Generic,
    /// `data.pkl` of a torch zip: storage records (`data/<key>`) and their sizes.
    TorchData(&'r HashMap<&'r str, u64>),
    /// A pickle inside a TorchScript archive.
    TorchScript,
    /// The object stream of a legacy checkpoint.
    TorchLegacy,
    /// The `pickle` member of a legacy tar checkpoint: persistent ids are keys.
    TorchLegacyTar,
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

    /// Bytes a tensor's shape needs, when its type has a fixed size.
    fn element_size(t: &pickguard_formats::onnx::Tensor) -> Option<u64> {
        let (num, den) = pickguard_formats::onnx::element_size(t.data_type)?;
        let n = t.dims.iter().try_fold(1u64, |a, &d| {
            u64::try_from(d).ok().and_then(|d| a.checked_mul(d))
        })?;
        n.checked_mul(num).map(|b| b.div_ceil(den))
    }

    /// Scan one file's bytes.
    pub fn scan_bytes(&self, path: &str, data: &[u8]) -> FileReport {
        let mut ctx = Ctx {
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
            dir: (path != "-")
                .then(|| std::path::Path::new(path).parent().map(|p| p.to_path_buf()))
                .flatten(),
        };
        self.explore(&mut ctx, data, None, 0);
        // A Keras model directory (what an unpacked .keras or a hub download
        // is): keras.saving.load_model(dir) reads its config.json.
        if ctx.format.is_none() && is_keras_dir_config(path) {
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
        // Sniffing chooses one reading; loaders do not all make the same
        // choice. pickle.load (and torch.load's legacy path) read a pickle
        // from byte 0 whatever else the file is; h5py finds an HDF5
        // superblock at 0, 512, 1024, 2048...
        if !matches!(kind, Sniffed::PickleLike) {
            self.check_pickle_at_start(ctx, data, &member, kind);
        }
        if kind != Sniffed::Hdf5 {
            self.check_hdf5_elsewhere(ctx, data, &member);
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
            Sniffed::Hdf5 if !top => {} // weights inside a .keras archive: data
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
            Sniffed::SevenZip | Sniffed::Hdf5 => {
                let name = format!("{kind:?}").to_lowercase();
                if top {
                    ctx.set_format(&name);
                }
                ctx.push(Finding::new(
                    Rule::UnsupportedFormat,
                    if kind == Sniffed::Hdf5 {
                        "hdf5 content is not analysed yet; a Keras .h5 model may carry Lambda bytecode".to_owned()
                    } else {
                        format!("{name} content is not analysed yet; it may hold pickles")
                    },
                    loc(&member, None, None, ReadView::Linear),
                ));
            }
            Sniffed::PickleLike => self.scan_pickle_file(ctx, data, member, depth),
            Sniffed::Unknown => {
                self.check_polyglot(ctx, data, &member, depth, "other");
            }
        }
    }

    /// GGUF: the chat templates judged as programs, the tensor infos checked
    /// as llama.cpp's loader needs them.
    fn scan_gguf(&self, ctx: &mut Ctx, data: &[u8], member: &Option<String>) {
        let g = match pickguard_formats::gguf::read(data) {
            Ok(g) => g,
            Err(e) => {
                ctx.push(Finding::new(
                    Rule::Unreadable,
                    format!("gguf: {e}"),
                    loc(member, None, Some(0), ReadView::Linear),
                ));
                return;
            }
        };
        *ctx.tensors.get_or_insert(0) += g.tensors.len() as u64;
        for m in &g.malformed {
            ctx.push(Finding::new(
                Rule::GgufMalformed,
                format!("gguf: {m}"),
                loc(member, None, None, ReadView::Linear),
            ));
        }
        if let Some(t) = &g.truncated {
            ctx.push(Finding::new(
                Rule::Unreadable,
                format!("gguf is truncated: {t}; what follows was not read"),
                loc(member, None, None, ReadView::Linear),
            ));
        }
        for (key, src) in &g.templates {
            let j = crate::template::judge(src);
            for (line, why) in &j.malicious {
                ctx.push(Finding::new(
                    Rule::TemplateInjection,
                    format!("{key} line {line}: {why}"),
                    loc(member, None, None, ReadView::Linear),
                ));
            }
            if let Some(why) = j.inconclusive {
                ctx.push(Finding::new(
                    Rule::TemplateUnjudged,
                    format!("{key}: {why}"),
                    loc(member, None, None, ReadView::Linear),
                ));
            }
        }
    }

    /// ONNX: external data kept inside the model's directory, operator
    /// domains that need a custom-op library, payload sizes.
    fn scan_onnx(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: &Option<String>,
        dir: Option<&std::path::Path>,
    ) {
        use pickguard_formats::onnx;
        let here = loc(member, None, None, ReadView::Linear);
        let m = match onnx::read(data) {
            Ok(m) => m,
            Err(e) => {
                ctx.push(Finding::new(Rule::Unreadable, format!("onnx: {e}"), here));
                return;
            }
        };
        *ctx.tensors.get_or_insert(0) += m.tensors.len() as u64;
        // Custom operators: a domain neither standard nor a model-local function's.
        let local: std::collections::BTreeSet<(&str, &str)> = m
            .functions
            .iter()
            .map(|(d, n)| (d.as_str(), n.as_str()))
            .collect();
        let mut custom: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
        for n in &m.nodes {
            if !onnx::STANDARD_DOMAINS.contains(&n.domain.as_str())
                && !local.contains(&(n.domain.as_str(), n.op_type.as_str()))
            {
                custom.entry(&n.domain).or_default().insert(&n.op_type);
            }
        }
        for (d, ops) in custom {
            ctx.push(Finding::new(
                Rule::OnnxCustomOp,
                format!(
                    "operators {} of domain {d:?}: a runtime needs a custom-op library (native code) for them",
                    ops.into_iter().collect::<Vec<_>>().join(", ")
                ),
                here.clone(),
            ));
        }
        let canon_dir = dir.and_then(|d| {
            let d = if d.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                d
            };
            d.canonicalize().ok()
        });
        for t in &m.tensors {
            let get = |k: &str| {
                t.external
                    .iter()
                    .find(|(ek, _)| ek == k)
                    .map(|(_, v)| v.as_str())
            };
            let expected = Self::element_size(t);
            if !t.is_external && t.external.is_empty() {
                if let (Some(raw), Some(want)) = (t.raw_len, expected)
                    && raw != want
                {
                    ctx.push(Finding::new(
                        Rule::Unreadable,
                        format!(
                            "onnx tensor {}: raw_data holds {raw} bytes, its shape needs {want}",
                            t.name
                        ),
                        here.clone(),
                    ));
                }
                continue;
            }
            let Some(location) = get("location") else {
                ctx.push(Finding::new(
                    Rule::Unreadable,
                    format!("onnx tensor {}: external data without a location", t.name),
                    here.clone(),
                ));
                continue;
            };
            let p = std::path::Path::new(location);
            let climbs = p
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
            let absolute = p.is_absolute()
                || location.starts_with('\\')
                || location.as_bytes().get(1) == Some(&b':');
            if absolute || climbs {
                ctx.push(Finding::new(
                    Rule::OnnxExternalEscape,
                    format!(
                        "onnx tensor {} takes its data from {location:?}, {}",
                        t.name,
                        if absolute {
                            "an absolute path"
                        } else {
                            "a path that climbs out of the model's directory"
                        }
                    ),
                    here.clone(),
                ));
                continue;
            }
            let Some(base) = &canon_dir else {
                ctx.push(Finding::new(
                    Rule::Unreadable,
                    format!(
                        "onnx tensor {} keeps its data in {location:?}, which was not checked (the model's directory is not known)",
                        t.name
                    ),
                    here.clone(),
                ));
                continue;
            };
            let target = base.join(p);
            match target.canonicalize() {
                Ok(real) if !real.starts_with(base) => ctx.push(Finding::new(
                    Rule::OnnxExternalEscape,
                    format!(
                        "onnx tensor {} takes its data from {location:?}, which resolves to {} outside the model's directory (a symbolic link)",
                        t.name,
                        real.display()
                    ),
                    here.clone(),
                )),
                // A directory, FIFO or device inside the model's directory is
                // not data a loader can read as a tensor.
                Ok(real) if !real.is_file() => ctx.push(Finding::new(
                    Rule::Unreadable,
                    format!(
                        "onnx tensor {}: external data {location:?} is not a regular file",
                        t.name
                    ),
                    here.clone(),
                )),
                Ok(real) => {
                    let size = std::fs::metadata(&real).map(|m| m.len()).unwrap_or(0);
                    let off: u64 = get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let len: Option<u64> = get("length").and_then(|v| v.parse().ok());
                    let end = off.checked_add(len.or(expected).unwrap_or(0));
                    if end.is_none_or(|e| e > size) || len.zip(expected).is_some_and(|(l, e)| l != e) {
                        ctx.push(Finding::new(
                            Rule::Unreadable,
                            format!(
                                "onnx tensor {}: external data at offset {off} length {} does not fit {location:?} ({size} bytes) or the tensor's shape",
                                t.name,
                                len.map(|l| l.to_string()).unwrap_or_else(|| "(rest)".into())
                            ),
                            here.clone(),
                        ));
                    }
                }
                Err(e) => ctx.push(Finding::new(
                    Rule::Unreadable,
                    format!("onnx tensor {}: external data {location:?}: {e}", t.name),
                    here.clone(),
                )),
            }
        }
    }

    /// A file sniffed as something else that `pickle.load` would still read
    /// as a pickle which imports or calls something: a polyglot, and the
    /// pickle is analysed like any other. (A pickle reading that only builds
    /// data, or errors at once, runs nothing and is not reported.)
    fn check_pickle_at_start(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: &Option<String>,
        kind: Sniffed,
    ) {
        if !pickguard_pickle::is_plausible_start(data) {
            return;
        }
        let first = pk::run_stream(data, 0, 0, ReadView::Linear, &self.options.pickle);
        if first.imports.is_empty() && first.calls.is_empty() {
            return;
        }
        let what = format!("{kind:?}").to_lowercase();
        ctx.push(Finding::new(
            Rule::Polyglot,
            format!(
                "the file sniffs as {what}, but read from its first byte it is also a pickle that imports or calls code: pickle.load (and torch.load's legacy path) run it"
            ),
            loc(member, None, Some(0), ReadView::Linear),
        ));
        self.scan_pickle_region(ctx, data, 0, member, Role::Generic, true);
    }

    /// An HDF5 superblock where h5py looks for one past offset 0 (512, 1024,
    /// 2048, ...): Keras and h5py read the file as HDF5, which is not
    /// analysed yet, so the file cannot be clean.
    fn check_hdf5_elsewhere(&self, ctx: &mut Ctx, data: &[u8], member: &Option<String>) {
        let mut off = 512usize;
        while off + 8 <= data.len() {
            if data[off..].starts_with(b"\x89HDF\r\n\x1a\n") {
                ctx.push(Finding::new(
                    Rule::UnsupportedFormat,
                    format!(
                        "an HDF5 superblock at offset {off}: h5py and Keras read this file as HDF5 (a Keras .h5 may carry Lambda bytecode), which is not analysed yet"
                    ),
                    loc(member, None, Some(off as u64), ReadView::Linear),
                ));
                return;
            }
            off = match off.checked_mul(2) {
                Some(o) => o,
                None => return,
            };
        }
    }

    /// A zip central directory in a file that does not start as a zip.
    fn check_polyglot(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: &Option<String>,
        depth: usize,
        what: &str,
    ) -> bool {
        if zip::find_eocd(data).is_none() {
            return false;
        }
        let ar = match zip::read(data, self.options.max_members) {
            Ok(ar) if !ar.entries.is_empty() => ar,
            Ok(_) => return false,
            Err(_) => {
                // Too many members to read is still an archive from its end.
                let Some(n) =
                    zip::declared_entries(data).filter(|&n| n > self.options.max_members as u64)
                else {
                    return false;
                };
                ctx.push(Finding::new(
                    Rule::Polyglot,
                    format!(
                        "the file reads as {what} from its start and as a zip archive of {n} members from its end; loaders that check the end (Python zipfile, numpy.load of .npz) see the archive"
                    ),
                    loc(member, None, Some(0), ReadView::Linear),
                ));
                ctx.push(Finding::new(
                    Rule::BudgetExceeded,
                    format!(
                        "its zip archive has {n} members, more than the limit of {} (raise it with --max-members or [limits] max_members)",
                        self.options.max_members
                    ),
                    loc(member, None, None, ReadView::Linear),
                ));
                return true;
            }
        };
        ctx.push(Finding::new(
            Rule::Polyglot,
            format!(
                "the file reads as {what} from its start and as a zip archive of {} members from its end; loaders that check the end (Python zipfile, numpy.load of .npz) see the archive",
                ar.entries.len()
            ),
            loc(member, None, Some(0), ReadView::Linear),
        ));
        self.scan_zip_members(ctx, data, &ar, member, depth, Layout::Plain);
        true
    }

    fn scan_pickle_file(&self, ctx: &mut Ctx, data: &[u8], member: Option<String>, depth: usize) {
        let top = depth == 0 && member.is_none();
        // Legacy torch checkpoints start with the magic number stream.
        let first = pk::run_stream(data, 0, 0, ReadView::Linear, &self.options.pickle);
        let is_legacy = first.result.and_then(|r| match first.node(r) {
            Some(Node::Int(i)) => i.as_i128(),
            _ => None,
        }) == Some(TORCH_LEGACY_MAGIC);
        if is_legacy {
            if top {
                ctx.set_format("torch-legacy");
            }
            self.scan_torch_legacy(ctx, data, &member);
            self.check_polyglot(ctx, data, &member, depth, "a legacy torch checkpoint");
            return;
        }
        if first.is_junk() {
            // Not a pickle after all.
            self.check_polyglot(ctx, data, &member, depth, "other");
            return;
        }
        if top {
            ctx.set_format("pickle");
        }
        self.scan_pickle_region(ctx, data, 0, &member, Role::Generic, true);
        self.check_polyglot(ctx, data, &member, depth, "a pickle");
    }

    /// Analyse every stream in `data` (offsets reported as `base + i`).
    fn scan_pickle_region(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        base: u64,
        member: &Option<String>,
        role: Role,
        report_trailing: bool,
    ) {
        let (streams, trailing) =
            pk::analyze_all(data, base, &self.options.pickle, self.options.max_streams);
        let mut idx = 0usize;
        let mut n_linear = 0;
        // joblib.load reads object arrays as inner pickles, inline, each with
        // a fresh unpickler (its own memo). pickle.load reads the same bytes
        // with the outer memo, so a name built from memo entries there mixes
        // the two pickles (`joblib.numpy_pickle.dtype`): a lookup that fails,
        // not a callable the file names. Such names are told apart below.
        let mut inner_streams: Vec<(usize, Vec<Stream>)> = Vec::new();
        for (si, s) in streams.iter().enumerate() {
            for &off in &s.inline_pickles {
                let start = (off - base) as usize;
                inner_streams.push((
                    si,
                    pk::analyze_views(data, start, base, &self.options.pickle),
                ));
            }
        }
        ctx.joblib_inner = inner_streams
            .iter()
            .filter_map(|(_, views)| views.iter().find(|v| v.view == ReadView::Linear))
            .map(|v| {
                let names = v
                    .imports
                    .iter()
                    .map(|i| (i.offset, i.qualified()))
                    .collect();
                (v.start, v.end, names)
            })
            .collect();
        for (si, s) in streams.iter().enumerate() {
            if s.view == ReadView::Linear {
                idx = n_linear;
                n_linear += 1;
            }
            self.evaluate(ctx, s, member, idx, role);
            for (_, views) in inner_streams.iter().filter(|(i, _)| *i == si) {
                for inner in views {
                    self.evaluate(ctx, inner, member, idx, role);
                }
            }
        }
        ctx.joblib_inner.clear();
        self.scan_embedded_pickles(ctx, data, base, member, &streams);
        if n_linear > 1 {
            ctx.push(Finding::new(
                Rule::MultipleStreams,
                format!("{n_linear} pickle streams; each runs if the loader calls load() again"),
                loc(member, None, Some(base), ReadView::Linear),
            ));
        }
        if let Some(t) = trailing {
            if n_linear >= self.options.max_streams {
                ctx.push(Finding::new(
                    Rule::BudgetExceeded,
                    format!(
                        "more than {} pickle streams; the rest was not analysed",
                        self.options.max_streams
                    ),
                    loc(member, None, Some(t), ReadView::Linear),
                ));
            } else if report_trailing {
                ctx.push(Finding::new(
                    Rule::TrailingData,
                    format!(
                        "{} bytes after the last pickle stream are not a pickle",
                        base + data.len() as u64 - t
                    ),
                    loc(member, None, Some(t), ReadView::Linear),
                ));
            }
        }
    }

    /// Byte strings passed to calls that are pickles themselves (the argument
    /// of `pickle.loads`, `torch.storage._load_from_bytes`...): scanned as
    /// nested members named `<pickle@OFFSET>`, a few levels deep.
    fn scan_embedded_pickles(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        base: u64,
        member: &Option<String>,
        streams: &[Stream],
    ) {
        if ctx.nested >= 3 {
            return;
        }
        let mut seen = HashSet::new();
        for s in streams {
            for c in &s.calls {
                let Some(args) = c.args.and_then(|a| s.as_seq(a)) else {
                    continue;
                };
                for &a in args {
                    let Some(Node::Bytes(b) | Node::ByteArray(b)) = s.node(a) else {
                        continue;
                    };
                    let is_pickle = matches!(b.head.as_slice(), [0x80, p, ..] if *p <= 5);
                    if !is_pickle || !seen.insert(b.offset) {
                        continue;
                    }
                    let Some(start) = b.offset.checked_sub(base).map(|x| x as usize) else {
                        continue;
                    };
                    let Some(inner) = data.get(start..start + b.len as usize) else {
                        continue;
                    };
                    let m = join_member(member, &format!("<pickle@{}>", b.offset));
                    ctx.nested += 1;
                    self.scan_pickle_region(ctx, inner, 0, &m, Role::Generic, true);
                    ctx.nested -= 1;
                }
            }
        }
    }

    /// Judge one stream.
    fn evaluate(&self, ctx: &mut Ctx, s: &Stream, member: &Option<String>, idx: usize, role: Role) {
        ctx.streams += (s.view == ReadView::Linear) as u64;
        let at = |off: u64| loc(member, Some(idx), Some(off), s.view);
        match &s.stop {
            StopReason::Stop => {}
            StopReason::Error { offset, message } => {
                if s.view == ReadView::Linear {
                    let joblib = s.imports.iter().any(pk::Import::is_joblib_array_wrapper);
                    ctx.push(Finding::new(
                        Rule::PickleError,
                        if joblib {
                            format!(
                                "pickle.load fails here ({message}); joblib.load reads array data here instead (see the joblib reading)"
                            )
                        } else {
                            format!(
                                "unpickling fails here ({message}); nothing after this offset runs"
                            )
                        },
                        at(*offset),
                    ));
                }
            }
            StopReason::Budget { offset, limit } => {
                ctx.push(Finding::new(
                    Rule::BudgetExceeded,
                    format!("limit {limit} reached; the rest of this stream was not analysed"),
                    at(*offset),
                ));
            }
        }
        let mut framed = false;
        let mut odd = 0;
        for a in &s.anomalies {
            match a {
                pk::Anomaly::FrameStraddle { offset, frame_end }
                | pk::Anomaly::NestedFrame { offset, frame_end } => {
                    if !framed && s.view == ReadView::Linear {
                        ctx.push(Finding::new(
                            Rule::FrameTamper,
                            format!(
                                "an opcode at {offset} crosses the frame that ends at {frame_end}: pickle.loads and the C unpickler reading a file (as torch.load does) execute different opcodes, and a buffered file (open(f, 'rb')) mixes the two per frame; every reading is analysed"
                            ),
                            at(*offset),
                        ));
                    }
                    framed = true;
                }
                _ => odd += 1,
            }
        }
        if odd > 0 && s.view == ReadView::Linear && !matches!(role, Role::TorchData(_)) {
            let first = s.anomalies.iter().find_map(|a| match a {
                pk::Anomaly::LateProto { offset, .. }
                | pk::Anomaly::OpcodeAboveProtocol { offset, .. }
                | pk::Anomaly::UnparsedLiteral { offset, .. } => Some(*offset),
                _ => None,
            });
            ctx.push(Finding::new(
                Rule::OddStructure,
                format!("{odd} opcode(s) a standard pickler does not write"),
                at(first.unwrap_or(s.start)),
            ));
        }

        // Calls grouped by the import they call, and getattr resolution.
        let mut calls_of: Vec<Vec<usize>> = vec![Vec::new(); s.imports.len()];
        for (ci, c) in s.calls.iter().enumerate() {
            if let Some(Node::Global(gi)) = s.node(c.callee) {
                calls_of[*gi].push(ci);
            }
        }
        // getattr(G, 'attr') calls whose target can be named.
        let resolved_getattr = |ci: usize| -> Option<(String, String)> {
            let c = &s.calls[ci];
            if c.kind != CallKind::Reduce {
                return None;
            }
            let imp = s.as_global(c.callee)?;
            if !(imp.module == "builtins" && imp.name == "getattr") {
                return None;
            }
            let args = s.as_seq(c.args?)?;
            if args.len() != 2 {
                return None;
            }
            let target = s.as_global(args[0])?;
            let attr = s.as_str(args[1])?;
            Some((target.module.clone(), format!("{}.{}", target.name, attr)))
        };

        // Code carried by value (cloudpickle, dill, types.CodeType): judged by
        // the names its code objects and globals use, not as a gadget.
        let family = code_by_value(s);
        if let Some(fam) = &family {
            let (rule, what) = if fam.danger.is_empty() {
                (
                    Rule::CodeByValue,
                    format!(
                        "rebuilds function(s) {} from bytecode; the code uses {}",
                        if fam.functions.is_empty() {
                            "(unnamed)".into()
                        } else {
                            fam.functions.join(", ")
                        },
                        if fam.names.is_empty() {
                            "no names".into()
                        } else {
                            fam.names.join(", ")
                        }
                    ),
                )
            } else {
                (
                    Rule::CodeByValueDangerous,
                    format!(
                        "rebuilds function(s) {} from bytecode whose code uses {}",
                        if fam.functions.is_empty() {
                            "(unnamed)".into()
                        } else {
                            fam.functions.join(", ")
                        },
                        fam.danger.join(", ")
                    ),
                )
            };
            let first = fam
                .imports
                .iter()
                .map(|&g| s.imports[g].offset)
                .min()
                .unwrap_or(s.start);
            ctx.push(Finding::new(rule, what, at(first)));
        }
        for (gi, imp) in s.imports.iter().enumerate() {
            if family.as_ref().is_some_and(|f| f.imports.contains(&gi)) {
                continue;
            }
            let calls: &[usize] = &calls_of[gi];
            let rendered: Vec<String> = calls
                .iter()
                .take(3)
                .map(|&ci| s.render_call(&s.calls[ci]))
                .collect();
            let q = imp.qualified();
            // builtins.getattr used only in resolvable form is judged by its targets.
            if imp.module == "builtins"
                && imp.name == "getattr"
                && !calls.is_empty()
                && calls.iter().all(|&ci| resolved_getattr(ci).is_some())
            {
                for &ci in calls {
                    let (m, n) = resolved_getattr(ci).unwrap_or_default();
                    self.judge_global(
                        ctx,
                        &m,
                        &n,
                        &[s.render_call(&s.calls[ci])],
                        0,
                        at(s.calls[ci].offset),
                        role,
                        Some("via getattr"),
                    );
                }
                continue;
            }
            // pickle.dumps(tensor) writes torch.storage._load_from_bytes(b'...')
            // with a legacy torch checkpoint as a literal: the checkpoint is
            // scanned (scan_embedded_pickles) and the file judged by it.
            if q == "torch.storage._load_from_bytes"
                // scan_embedded_pickles scans literals down to this depth.
                && ctx.nested < 3
                && !calls.is_empty()
                && calls.len() == s.calls.iter().filter(|c| s.as_global(c.callee).is_some_and(|g| g.qualified() == q)).count()
                && calls.iter().all(|&ci| {
                    let c = &s.calls[ci];
                    c.kind == CallKind::Reduce
                        && c.kwargs.is_none()
                        && c.args.and_then(|a| s.as_seq(a)).is_some_and(|args| {
                            args.len() == 1
                                && matches!(s.node(args[0]), Some(Node::Bytes(b)) if matches!(b.head.as_slice(), [0x80, p, ..] if *p <= 5))
                        })
                })
            {
                ctx.push(Finding::new(
                    Rule::NestedTorchData,
                    format!(
                        "{} nested torch checkpoint(s) loaded by torch.storage._load_from_bytes: scanned, judged by their own content",
                        calls.len()
                    ),
                    at(imp.offset),
                ));
                continue;
            }
            if let Some(code) = imp.ext_code {
                let mut f = Finding::new(
                    Rule::ExtensionCode,
                    format!(
                        "EXT opcode with code {code}: the global comes from copyreg's extension registry, which standard pickles never use, so the callable cannot be named from the file"
                    ),
                    at(imp.offset),
                );
                f.global = Some(q.clone());
                f.calls = rendered;
                ctx.push(f);
                continue;
            }
            // Inside a joblib inner pickle, read by a view that shares the
            // outer memo: a name the inner pickle's own reading does not make
            // is a memo mix-up of pickle.load, judged only if dangerous.
            if s.view != ReadView::Joblib
                && let Some((_, _, names)) = ctx
                    .joblib_inner
                    .iter()
                    .find(|(a, b, _)| (*a..*b).contains(&imp.offset))
                && names.get(&imp.offset).is_some_and(|n| *n != q)
                && matches!(
                    self.policy.classify(&imp.module, &imp.name),
                    crate::policy::Class::Library | crate::policy::Class::Allowed { .. }
                )
            {
                let own = names.get(&imp.offset).cloned().unwrap_or_default();
                ctx.push(Finding::new(
                    Rule::PickleError,
                    format!(
                        "pickle.load would look up {q} here: it reads joblib's inner pickle of an object array with the outer pickle's memo, while joblib.load reads it with its own and gets {own} (judged in the joblib reading); a third-party name made by that mix-up is not reported as code the file loads (standard-library and dangerous names still are)"
                    ),
                    at(imp.offset),
                ));
                continue;
            }
            if imp.truncated {
                let mut f = Finding::new(
                    Rule::ComputedGlobalName,
                    format!("global name {q:?} is computed at load time or too long to retain"),
                    at(imp.offset),
                );
                f.global = Some(q.clone());
                f.calls = rendered;
                ctx.push(f);
                continue;
            }
            self.judge_global(
                ctx,
                &imp.module,
                &imp.name,
                &rendered,
                calls.len() as u64,
                at(imp.offset),
                role,
                None,
            );
        }

        // Calls of things that are not named globals; mutations of globals.
        for c in &s.calls {
            let callee = s.node(c.callee);
            match c.kind {
                CallKind::Build | CallKind::Append | CallKind::SetItem | CallKind::AddItems => {
                    if let Some(Node::Global(gi)) = callee {
                        let imp = &s.imports[*gi];
                        let mut f = Finding::new(
                            Rule::MutatesGlobal,
                            format!(
                                "{} on the imported object {} changes its state for the whole process",
                                c.op.name(),
                                imp.qualified()
                            ),
                            at(c.offset),
                        );
                        f.global = Some(imp.qualified());
                        f.calls = vec![s.render_call(c)];
                        ctx.push(f);
                    }
                }
                _ => match callee {
                    Some(Node::Global(_)) => {}
                    Some(Node::Call(inner)) if resolved_getattr(*inner).is_some() => {}
                    // cloudpickle's _builtin_type('CodeType')(...) builds the code
                    // object (part of the code-by-value judgement above); calling
                    // a rebuilt *function* while loading stays a dynamic call.
                    Some(Node::Call(inner))
                        if family.is_some()
                            && s.as_global(s.calls[*inner].callee).is_some_and(|g| {
                                matches!(
                                    g.qualified().as_str(),
                                    "cloudpickle.cloudpickle._builtin_type"
                                        | "dill._dill._load_type"
                                )
                            }) => {}
                    Some(Node::Call(_)) | Some(Node::Persistent(_)) => {
                        let mut f = Finding::new(
                            Rule::DynamicCall,
                            "calls the result of another call; the callable is chosen at load time"
                                .to_string(),
                            at(c.offset),
                        );
                        f.calls = vec![s.render_call(c)];
                        ctx.push(f);
                    }
                    // CPython raises TypeError ("not callable"): nothing runs.
                    _ => {}
                },
            }
        }

        match role {
            Role::TorchData(records) => self.check_torch_data(ctx, s, member, idx, records),
            Role::TorchLegacy => self.check_legacy_pids(ctx, s, member, idx),
            Role::TorchScript => {}
            Role::TorchLegacyTar => {
                for p in &s.persistent_ids {
                    let ok = match s.node(p.pid) {
                        Some(Node::Str(_)) | Some(Node::Int(_)) => true,
                        Some(Node::Tuple(items)) => {
                            items.first().and_then(|&i| s.as_str(i)) == Some("module")
                        }
                        _ => false,
                    };
                    if !ok {
                        ctx.push(Finding::new(
                            Rule::TorchBadPersistentId,
                            format!(
                                "persistent id {} is not a legacy tar object key",
                                s.render(p.pid)
                            ),
                            loc(member, Some(idx), Some(p.offset), s.view),
                        ));
                    }
                }
            }
            Role::Generic => {
                if let Some(p) = s.persistent_ids.first() {
                    ctx.push(Finding::new(
                        Rule::PersistentId,
                        format!("{} persistent id(s); plain pickle.load refuses them, other loaders decide what they load", s.persistent_ids.len()),
                        at(p.offset),
                    ));
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn judge_global(
        &self,
        ctx: &mut Ctx,
        module: &str,
        name: &str,
        rendered: &[String],
        ncalls: u64,
        at: Location,
        role: Role,
        via: Option<&str>,
    ) {
        let q = format!("{module}.{name}");
        let via_s = via.map(|v| format!(" ({v})")).unwrap_or_default();
        let (class, finding) = if let Some((tm, tn)) = attribute_walk(name) {
            let cls = self.policy.classify(&tm, &tn);
            let cap = match &cls {
                Class::Dangerous {
                    capability: Some(c),
                    ..
                } => format!(": {}", c.describe()),
                _ => String::new(),
            };
            (
                "attribute-walk".to_string(),
                Some((
                    Rule::AttributeWalk,
                    format!("{q}{via_s} walks through module attributes to {tm}.{tn}{cap}"),
                )),
            )
        } else if role == Role::TorchScript
            && (module.starts_with("__torch__") || module.starts_with("torch.jit"))
        {
            let cls = self.policy.classify(module, name);
            match cls {
                Class::Allowed { .. } => ("allowed".into(), None),
                _ => ("torchscript".into(), None),
            }
        } else {
            match self.policy.classify(module, name) {
                Class::Allowed { .. } => ("allowed".into(), None),
                Class::Dangerous { capability, why } => {
                    let what = if ncalls > 0 { "calls" } else { "imports" };
                    let sev_cap = capability.map(|c| c.describe()).unwrap_or(&why);
                    (
                        "dangerous".into(),
                        Some((
                            Rule::DangerousGlobal,
                            format!("{what} {q}{via_s}, which {sev_cap}"),
                        )),
                    )
                }
                Class::StdlibGadget { .. } => {
                    let what = if ncalls > 0 { "calls" } else { "imports" };
                    (
                        "stdlib-gadget".into(),
                        Some((
                            Rule::StdlibGadget,
                            format!(
                                "{what} {q}{via_s}: a standard-library object that is not plain data; such objects are code-execution gadgets"
                            ),
                        )),
                    )
                }
                Class::Library => (
                    "library".into(),
                    Some((
                        Rule::LibraryGlobal,
                        format!(
                            "imports {q}{via_s}: third-party code that runs on load; trust it before loading"
                        ),
                    )),
                ),
            }
        };
        let key = (module.to_owned(), name.to_owned());
        let entry = ctx.globals.entry(key).or_insert_with(|| GlobalUse {
            module: module.to_owned(),
            name: name.to_owned(),
            class: class.clone(),
            imports: 0,
            calls: 0,
            first: at.clone(),
        });
        entry.imports += 1;
        entry.calls += ncalls;
        if let Some((rule, msg)) = finding {
            // One finding per global and member for needs-trust noise; every
            // site for malicious ones.
            if rule == Rule::LibraryGlobal
                && ctx.findings.iter().any(|f| {
                    f.rule == rule
                        && f.global.as_deref() == Some(q.as_str())
                        && f.location.member == at.member
                })
            {
                return;
            }
            let mut f = Finding::new(rule, msg, at);
            if rule == Rule::DangerousGlobal
                && let Some(Capability::ScannerTampering) = crate::policy::capability(&q)
            {
                f.severity = crate::finding::Severity::High;
            }
            f.global = Some(q);
            f.calls = rendered.to_vec();
            ctx.push(f);
        }
    }

    /// data.pkl of a torch zip: persistent ids and tensor extents.
    fn check_torch_data(
        &self,
        ctx: &mut Ctx,
        s: &Stream,
        member: &Option<String>,
        idx: usize,
        records: &HashMap<&str, u64>,
    ) {
        let at = |off: u64| loc(member, Some(idx), Some(off), s.view);
        let mut pid_info: Vec<Option<StorageRef>> = vec![None; s.persistent_ids.len()];
        for (pi, p) in s.persistent_ids.iter().enumerate() {
            let Some(items) = s.as_seq(p.pid) else {
                ctx.push(Finding::new(
                    Rule::TorchBadPersistentId,
                    format!("persistent id {} is not a tuple", s.render(p.pid)),
                    at(p.offset),
                ));
                continue;
            };
            let typename = items.first().and_then(|&i| s.as_str(i));
            if typename != Some("storage") || items.len() < 5 {
                ctx.push(Finding::new(
                    Rule::TorchBadPersistentId,
                    format!(
                        "persistent id {} is not ('storage', type, key, location, numel)",
                        s.render(p.pid)
                    ),
                    at(p.offset),
                ));
                continue;
            }
            let stype = s.as_global(items[1]);
            let element_size = stype.and_then(storage_element_size);
            let key = s.as_str(items[2]).map(str::to_owned);
            let numel = s.as_int(items[4]);
            let Some(key) = key else {
                ctx.push(Finding::new(
                    Rule::TorchBadPersistentId,
                    format!("storage key {} is not a string", s.render(items[2])),
                    at(p.offset),
                ));
                continue;
            };
            match records.get(key.as_str()) {
                None => ctx.push(Finding::new(
                    Rule::TorchStorageMismatch,
                    format!("storage key {key:?} names no data/{key} record in the archive"),
                    at(p.offset),
                )),
                Some(&size) => {
                    if let (Some(es), Some(n)) = (element_size, numel) {
                        let need = (n as i128) * (es as i128);
                        if n < 0 || need > size as i128 {
                            ctx.push(Finding::new(
                                Rule::TorchStorageMismatch,
                                format!("storage {key:?} declares {n} elements of {es} bytes ({need} bytes) but data/{key} holds {size} bytes"),
                                at(p.offset),
                            ));
                        }
                    }
                }
            }
            let r = StorageRef {
                key,
                element_size,
                numel,
            };
            ctx.storages.push(r.clone());
            pid_info[pi] = Some(r);
        }
        // Tensor extents: _rebuild_tensor_v2(storage, offset, size, stride, ...).
        let mut tensors = 0u64;
        for c in &s.calls {
            let Some(g) = s.as_global(c.callee) else {
                continue;
            };
            if g.module != "torch._utils" || !g.name.starts_with("_rebuild_tensor") {
                continue;
            }
            tensors += 1;
            let Some(args) = c.args.and_then(|a| s.as_seq(a)) else {
                continue;
            };
            if args.len() < 4 {
                continue;
            }
            let Some(Node::Persistent(pi)) = s.node(args[0]) else {
                continue;
            };
            let Some(Some(sr)) = pid_info.get(*pi) else {
                continue;
            };
            let (Some(off), Some(sizes), Some(strides)) =
                (s.as_int(args[1]), s.as_seq(args[2]), s.as_seq(args[3]))
            else {
                continue;
            };
            let sizes: Option<Vec<i64>> = sizes.iter().map(|&i| s.as_int(i)).collect();
            let strides: Option<Vec<i64>> = strides.iter().map(|&i| s.as_int(i)).collect();
            let (Some(sizes), Some(strides)) = (sizes, strides) else {
                continue;
            };
            let bad = |why: String| Finding::new(Rule::TorchStorageMismatch, why, at(c.offset));
            if sizes.len() != strides.len()
                || off < 0
                || sizes.iter().any(|&x| x < 0)
                || strides.iter().any(|&x| x < 0)
            {
                ctx.push(bad(format!("tensor with storage offset {off}, sizes {sizes:?}, strides {strides:?} is malformed")));
                continue;
            }
            if sizes.contains(&0) {
                continue;
            }
            // Bytes the view needs against bytes the storage holds. With
            // _rebuild_tensor_v3 the storage is untyped (bytes) and the dtype
            // is argument 6; otherwise elements are the storage's.
            let v3_dtype = (g.name == "_rebuild_tensor_v3")
                .then(|| args.get(6).and_then(|&d| s.as_global(d)))
                .flatten()
                .and_then(|d| DType::from_torch_name(&d.name));
            let elem = v3_dtype.map(DType::size).or(sr.element_size);
            let extent: i128 = off as i128
                + sizes
                    .iter()
                    .zip(&strides)
                    .map(|(&n, &st)| (n as i128 - 1) * st as i128)
                    .sum::<i128>()
                + 1;
            if let (Some(numel), Some(es), Some(elem)) = (sr.numel, sr.element_size, elem) {
                let have = numel as i128 * es as i128;
                let need = extent * elem as i128;
                if need > have {
                    ctx.push(bad(format!(
                        "tensor needs {need} bytes of storage {:?}, which holds {have} (offset {off}, sizes {sizes:?}, strides {strides:?})",
                        sr.key
                    )));
                }
            }
        }
        *ctx.tensors.get_or_insert(0) += tensors;
        // weights_only compatibility, for information.
        let bad_ops: Vec<&str> = s
            .op_counts
            .iter()
            .filter(|(o, _)| !pk::op::WEIGHTS_ONLY_OPCODES.contains(o))
            .map(|(o, _)| o.name())
            .collect();
        if !bad_ops.is_empty() && s.view == ReadView::Linear {
            ctx.push(Finding::new(
                Rule::NotWeightsOnly,
                format!(
                    "uses opcodes the weights-only unpickler refuses: {}",
                    bad_ops.join(", ")
                ),
                at(s.start),
            ));
        }
    }

    /// Object stream of a legacy checkpoint: ('storage', type, key, location, numel, view) or ('module', ...).
    fn check_legacy_pids(&self, ctx: &mut Ctx, s: &Stream, member: &Option<String>, idx: usize) {
        for p in &s.persistent_ids {
            let ok = s.as_seq(p.pid).is_some_and(|items| {
                matches!(
                    items.first().and_then(|&i| s.as_str(i)),
                    Some("storage") | Some("module")
                )
            });
            if !ok {
                ctx.push(Finding::new(
                    Rule::TorchBadPersistentId,
                    format!(
                        "persistent id {} is not a legacy storage or module reference",
                        s.render(p.pid)
                    ),
                    loc(member, Some(idx), Some(p.offset), s.view),
                ));
            }
        }
        let storages = s
            .persistent_ids
            .iter()
            .filter_map(|p| {
                let items = s.as_seq(p.pid)?;
                if s.as_str(*items.first()?)? != "storage" || items.len() < 5 {
                    return None;
                }
                let g = s.as_global(items[1])?;
                Some(StorageRef {
                    key: s.as_str(items[2])?.to_owned(),
                    element_size: storage_element_size(g),
                    numel: s.as_int(items[4]),
                })
            })
            .collect::<Vec<_>>();
        ctx.storages.extend(storages);
        let tensors = s
            .calls
            .iter()
            .filter(|c| {
                s.as_global(c.callee).is_some_and(|g| {
                    g.module == "torch._utils" && g.name.starts_with("_rebuild_tensor")
                })
            })
            .count() as u64;
        *ctx.tensors.get_or_insert(0) += tensors;
    }

    /// Legacy stacked pickles: magic, protocol, sys_info, object, keys, then raw storages.
    fn scan_torch_legacy(&self, ctx: &mut Ctx, data: &[u8], member: &Option<String>) {
        let mut pos = 0usize;
        let mut keys: Option<Vec<String>> = None;
        for i in 0..5 {
            let views = pk::analyze_views(data, pos, 0, &self.options.pickle);
            let role = if i == 3 {
                Role::TorchLegacy
            } else {
                Role::Generic
            };
            for v in &views {
                self.evaluate(ctx, v, member, i, role);
            }
            let s = &views[0];
            if !matches!(s.stop, StopReason::Stop) {
                return;
            }
            if i == 4 {
                keys = s.result.and_then(|r| s.as_seq(r)).map(|items| {
                    items
                        .iter()
                        .filter_map(|&k| s.as_str(k).map(str::to_owned))
                        .collect()
                });
            }
            pos = (s.end) as usize;
        }
        let Some(keys) = keys else {
            ctx.push(Finding::new(
                Rule::Unreadable,
                "the storage-key list of the legacy checkpoint is not a list of strings",
                loc(member, Some(4), Some(pos as u64), ReadView::Linear),
            ));
            return;
        };
        let sizes: HashMap<&str, Option<u64>> = ctx
            .storages
            .iter()
            .map(|r| (r.key.as_str(), r.element_size))
            .collect();
        let walked = torch_legacy::walk(data, pos, &keys, |k| sizes.get(k).copied().flatten());
        let pos = match walked {
            Ok((_, end)) => end,
            Err(torch_legacy::WalkError::UnknownElementSize { key, at }) => {
                ctx.push(Finding::new(
                    Rule::Unreadable,
                    format!("storage {key:?} has no known element size; the raw data after it was not walked"),
                    loc(member, None, Some(at), ReadView::Linear),
                ));
                return;
            }
            Err(torch_legacy::WalkError::Truncated { key, at }) => {
                ctx.push(Finding::new(
                    Rule::PickleError,
                    format!(
                        "storage {key:?} runs past the end of the file; torch.load fails there"
                    ),
                    loc(member, None, Some(at), ReadView::Linear),
                ));
                return;
            }
        };
        if pos < data.len() {
            let rest = &data[pos..];
            if pk::is_plausible_start(rest) {
                let probe =
                    pk::run_stream(rest, 0, pos as u64, ReadView::Linear, &self.options.pickle);
                if !probe.is_junk() {
                    self.scan_pickle_region(ctx, rest, pos as u64, member, Role::Generic, true);
                    return;
                }
            }
            ctx.push(Finding::new(
                Rule::TrailingData,
                format!(
                    "{} bytes after the last storage that torch.load never reads",
                    rest.len()
                ),
                loc(member, None, Some(pos as u64), ReadView::Linear),
            ));
        }
    }

    fn scan_zip(&self, ctx: &mut Ctx, data: &[u8], member: Option<String>, depth: usize) {
        let top = depth == 0 && member.is_none();
        let ar = match zip::read(data, self.options.max_members) {
            Ok(a) => a,
            Err(e) => {
                if top {
                    ctx.set_format("zip");
                }
                // Over the member budget is a budget, not a broken file.
                let over =
                    zip::declared_entries(data).filter(|&n| n > self.options.max_members as u64);
                ctx.push(match over {
                    Some(n) => Finding::new(
                        Rule::BudgetExceeded,
                        format!(
                            "zip archive of {n} members, more than the limit of {} (raise it with --max-members or [limits] max_members)",
                            self.options.max_members
                        ),
                        loc(&member, None, None, ReadView::Linear),
                    ),
                    None => Finding::new(
                        Rule::Unreadable,
                        format!("zip archive: {e}"),
                        loc(&member, None, None, ReadView::Linear),
                    ),
                });
                return;
            }
        };
        // torch: root = text before the first '/' of the first entry.
        let root = ar
            .entries
            .first()
            .and_then(|e| e.name.split_once('/').map(|(r, _)| r.to_owned()));
        let has = |record: &str| {
            root.as_ref().is_some_and(|r| {
                let want = format!("{r}/{record}");
                ar.entries.iter().any(|e| e.name == want)
            })
        };
        let torchscript = has("constants.pkl");
        let is_torch = torchscript || has("data.pkl");
        // Keras 3: config.json and metadata.json at the root; config.json is
        // judged when the member loop reads it.
        // Keras reads only config.json (metadata.json is optional), by the
        // name Python's zipfile gives it (cut at a NUL).
        let keras = !is_torch
            && ar
                .entries
                .iter()
                .any(|e| python_zip_name(&e.name) == "config.json");
        if top {
            ctx.set_format(if torchscript {
                "torchscript"
            } else if is_torch {
                "torch-zip"
            } else if keras {
                "keras"
            } else {
                "zip"
            });
        }
        if torchscript {
            let code: Vec<&str> = ar
                .entries
                .iter()
                .filter(|e| e.name.contains("/code/"))
                .map(|e| e.name.as_str())
                .collect();
            ctx.push(Finding::new(
                Rule::TorchScript,
                format!(
                    "TorchScript archive with {} code file(s){}: torch.jit.load compiles and runs them, and torch.load(weights_only=True) refuses such files",
                    code.len(),
                    code.first().map(|c| format!(" (first: {c})")).unwrap_or_default()
                ),
                loc(&member, None, None, ReadView::Linear),
            ));
        }
        self.scan_zip_members(
            ctx,
            data,
            &ar,
            &member,
            depth,
            match (is_torch, root.as_deref()) {
                (true, Some(r)) => Layout::Torch(r),
                _ if keras => Layout::Keras,
                _ => Layout::Plain,
            },
        );
    }

    /// A Keras 3 `config.json`: Lambda bytecode and the modules it imports,
    /// and the checkpoints its TorchModuleWrapper layers carry (scanned as
    /// nested files, so the file is judged by what they contain).
    fn check_keras(&self, ctx: &mut Ctx, json: &[u8], m: &Option<String>, depth: usize) {
        let at = loc(m, None, None, ReadView::Linear);
        match crate::keras::check_config(&self.policy, json) {
            Ok(judged) => {
                for (rule, message, global) in judged.hits {
                    let mut f = Finding::new(rule, message, at.clone());
                    f.global = global;
                    ctx.push(f);
                }
                for blob in judged.blobs {
                    let inner = join_member(m, &format!("<{}.module>", blob.layer));
                    match blob.bytes {
                        Ok(bytes) => {
                            ctx.push(Finding::new(
                                Rule::KerasTorchModule,
                                format!(
                                    "layer {} is a TorchModuleWrapper carrying a {}-byte torch.save checkpoint, which Keras loads with torch.load(weights_only=False) (safe_mode=False, and in any mode before Keras 3.11): scanned as {}",
                                    blob.layer,
                                    bytes.len(),
                                    inner.as_deref().unwrap_or("")
                                ),
                                at.clone(),
                            ));
                            ctx.inflated += bytes.len() as u64;
                            if ctx.inflated > self.options.max_decompressed {
                                ctx.push(Finding::new(
                                    Rule::BudgetExceeded,
                                    format!(
                                        "decoded TorchModuleWrapper checkpoints pass the {}-byte decompression budget: not scanned",
                                        self.options.max_decompressed
                                    ),
                                    loc(&inner, None, None, ReadView::Linear),
                                ));
                                continue;
                            }
                            // torch.load reads a zip, or else a pickle from
                            // byte 0; a torch.save checkpoint is one of them.
                            // Anything else is not what Keras wrote, so it is
                            // not called clean: Python may decode it otherwise.
                            if !matches!(sniff(&bytes), Sniffed::Zip | Sniffed::PickleLike) {
                                ctx.push(Finding::new(
                                    Rule::Unreadable,
                                    format!(
                                        "layer {}'s TorchModuleWrapper checkpoint decodes to neither a zip nor a pickle: not analysed",
                                        blob.layer
                                    ),
                                    loc(&inner, None, None, ReadView::Linear),
                                ));
                                continue;
                            }
                            self.explore(ctx, &bytes, inner, depth + 1);
                        }
                        Err(e) => ctx.push(Finding::new(
                            Rule::Unreadable,
                            format!(
                                "layer {}'s TorchModuleWrapper checkpoint is not readable base64 ({e}): not analysed",
                                blob.layer
                            ),
                            loc(&inner, None, None, ReadView::Linear),
                        )),
                    }
                }
            }
            Err(err) => ctx.push(Finding::new(
                Rule::Unreadable,
                format!("Keras config.json not analysed: {err}"),
                at,
            )),
        }
    }

    fn scan_zip_members(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        ar: &zip::Archive,
        member: &Option<String>,
        depth: usize,
        layout: Layout,
    ) {
        let torch_root = match layout {
            Layout::Torch(r) => Some(r),
            _ => None,
        };
        for d in &ar.discrepancies {
            let rule = if d.what.starts_with("CRC") {
                Rule::ZipCrcMismatch
            } else {
                Rule::ZipTamper
            };
            let mut f = Finding::new(
                rule,
                format!(
                    "{}{}",
                    d.entry
                        .as_ref()
                        .map(|e| format!("{e}: "))
                        .unwrap_or_default(),
                    d.what
                ),
                loc(
                    &d.entry
                        .as_ref()
                        .map(|e| join_member(member, e).unwrap_or_default()),
                    None,
                    None,
                    ReadView::Linear,
                ),
            );
            if rule == Rule::ZipTamper && d.what.starts_with("no local") {
                f.rule = Rule::Unreadable;
            }
            ctx.push(f);
        }
        // Storage records by key: `<root>/data/<key>` -> size.
        let root_prefix = torch_root.map(|r| format!("{r}/"));
        let records: HashMap<&str, u64> = match &root_prefix {
            Some(p) => ar
                .entries
                .iter()
                .filter_map(|e| {
                    e.name
                        .strip_prefix(p.as_str())?
                        .strip_prefix("data/")
                        .map(|k| (k, e.size))
                })
                .collect(),
            None => HashMap::new(),
        };
        let torchscript = root_prefix.as_ref().is_some_and(|p| {
            ar.entries
                .iter()
                .any(|e| e.name.strip_prefix(p.as_str()) == Some("constants.pkl"))
        });
        // data.pkl first, so storage records it references are known.
        let mut order: Vec<&zip::Entry> = ar.entries.iter().collect();
        if let Some(r) = torch_root {
            let dp = format!("{r}/data.pkl");
            order.sort_by_key(|e| e.name != dp);
        }
        let before = ctx.storages.len();
        let mut referenced: Option<HashSet<String>> = None;
        for e in order {
            ctx.members += 1;
            if self.out_of_time() {
                ctx.push(Finding::new(
                    Rule::BudgetExceeded,
                    "time limit reached; remaining archive members were not analysed",
                    loc(member, None, None, ReadView::Linear),
                ));
                return;
            }
            if ctx.members > self.options.max_members {
                ctx.push(Finding::new(
                    Rule::BudgetExceeded,
                    format!("more than {} archive members", self.options.max_members),
                    loc(member, None, None, ReadView::Linear),
                ));
                return;
            }
            let m = join_member(member, &e.name);
            if e.name.contains('\0') {
                ctx.push(Finding::new(
                    Rule::ZipTamper,
                    format!(
                        "member name holds a NUL byte: Python's zipfile (Keras, numpy, zipfile users) calls it {:?}, torch's reader sees the whole name",
                        python_zip_name(&e.name)
                    ),
                    loc(&m, None, None, ReadView::Linear),
                ));
            }
            let rel = root_prefix.as_deref().and_then(|r| e.name.strip_prefix(r));
            if let Some(key) = rel.and_then(|rel| rel.strip_prefix("data/")) {
                // data.pkl comes first, so the keys it references are known by now.
                let set = referenced.get_or_insert_with(|| {
                    ctx.storages[before..]
                        .iter()
                        .map(|s| s.key.clone())
                        .collect()
                });
                if set.contains(key) {
                    continue; // tensor bytes, never unpickled
                }
            }
            if e.name.ends_with('/') && e.size == 0 {
                continue;
            }
            if e.flags & 1 != 0 {
                ctx.push(Finding::new(
                    Rule::Unreadable,
                    "member is encrypted; its content was not analysed",
                    loc(&m, None, None, ReadView::Linear),
                ));
                continue;
            }
            let remaining = self.options.max_decompressed.saturating_sub(ctx.inflated);
            let bytes = match zip::entry_data(data, e, remaining) {
                Ok((b, crc_ok)) => {
                    if let std::borrow::Cow::Owned(v) = &b {
                        ctx.inflated += v.len() as u64;
                    }
                    if !crc_ok {
                        ctx.push(Finding::new(Rule::ZipCrcMismatch, "CRC-32 of the data does not match the central directory: torch loads it, Python's zipfile refuses it", loc(&m, None, None, ReadView::Linear)));
                    }
                    b
                }
                Err(err) => {
                    ctx.push(Finding::new(
                        Rule::Unreadable,
                        format!("member not read: {err}"),
                        loc(&m, None, None, ReadView::Linear),
                    ));
                    continue;
                }
            };
            // Whatever else the archive is (a torch checkpoint, a polyglot's
            // zip), keras.saving.load_model reads a root config.json.
            if python_zip_name(&e.name) == "config.json" {
                self.check_keras(ctx, &bytes, &m, depth);
                continue;
            }
            let role = match rel {
                Some("data.pkl") if torchscript => Role::TorchScript,
                Some("data.pkl") => Role::TorchData(&records),
                Some(_) if torchscript => Role::TorchScript,
                _ => Role::Generic,
            };
            if matches!(role, Role::TorchData(_)) {
                self.scan_pickle_region(ctx, &bytes, 0, &m, role, true);
                continue;
            }
            match sniff(&bytes) {
                Sniffed::PickleLike => {
                    let probe =
                        pk::run_stream(&bytes, 0, 0, ReadView::Linear, &self.options.pickle);
                    if !probe.is_junk() {
                        let legacy = probe.result.and_then(|r| match probe.node(r) {
                            Some(Node::Int(i)) => i.as_i128(),
                            _ => None,
                        }) == Some(TORCH_LEGACY_MAGIC);
                        if legacy {
                            self.scan_torch_legacy(ctx, &bytes, &m);
                        } else {
                            self.scan_pickle_region(ctx, &bytes, 0, &m, role, true);
                        }
                    }
                }
                Sniffed::Unknown | Sniffed::Safetensors => {}
                _ => self.explore(ctx, &bytes, m, depth + 1),
            }
        }
    }

    fn scan_tar(&self, ctx: &mut Ctx, data: &[u8], member: Option<String>, depth: usize) {
        let top = depth == 0 && member.is_none();
        let members = match tar::members(data, self.options.max_members) {
            Ok(m) => m,
            Err(e) => {
                if top {
                    ctx.set_format("tar");
                }
                ctx.push(Finding::new(
                    Rule::Unreadable,
                    format!("tar archive: {e}"),
                    loc(&member, None, None, ReadView::Linear),
                ));
                return;
            }
        };
        let names: HashSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
        let legacy = ["sys_info", "pickle", "storages", "tensors"]
            .iter()
            .all(|n| names.contains(n));
        if top {
            ctx.set_format(if legacy { "torch-legacy-tar" } else { "tar" });
        }
        for mem in &members {
            ctx.members += 1;
            if self.out_of_time() {
                ctx.push(Finding::new(
                    Rule::BudgetExceeded,
                    "time limit reached; remaining archive members were not analysed",
                    loc(&member, None, None, ReadView::Linear),
                ));
                return;
            }
            if ctx.members > self.options.max_members {
                ctx.push(Finding::new(
                    Rule::BudgetExceeded,
                    format!("more than {} archive members", self.options.max_members),
                    loc(&member, None, None, ReadView::Linear),
                ));
                return;
            }
            let bytes = &data[mem.offset..mem.offset + mem.size];
            let m = join_member(&member, &mem.name);
            if legacy && (mem.name == "storages" || mem.name == "tensors") {
                self.scan_legacy_tar_records(ctx, bytes, &m, mem.name == "storages");
                continue;
            }
            if legacy && (mem.name == "pickle" || mem.name == "sys_info") {
                self.scan_pickle_region(
                    ctx,
                    bytes,
                    0,
                    &m,
                    if mem.name == "pickle" {
                        Role::TorchLegacyTar
                    } else {
                        Role::Generic
                    },
                    true,
                );
                continue;
            }
            match sniff(bytes) {
                Sniffed::PickleLike => {
                    let probe = pk::run_stream(bytes, 0, 0, ReadView::Linear, &self.options.pickle);
                    if !probe.is_junk() {
                        self.scan_pickle_region(ctx, bytes, 0, &m, Role::Generic, true);
                    }
                }
                Sniffed::Unknown | Sniffed::Safetensors => {}
                _ => self.explore(ctx, bytes, m, depth + 1),
            }
        }
    }

    /// `storages` / `tensors` members of the legacy tar format: pickles
    /// interleaved with raw records whose lengths the pickles give.
    fn scan_legacy_tar_records(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: &Option<String>,
        storages: bool,
    ) {
        let mut pos = 0usize;
        let mut idx = 0usize;
        let mut next = |ctx: &mut Ctx, pos: &mut usize| -> Option<Stream> {
            let views = pk::analyze_views(data, *pos, 0, &self.options.pickle);
            for v in &views {
                self.evaluate(ctx, v, member, idx, Role::Generic);
            }
            idx += 1;
            let s = views.into_iter().next()?;
            if !matches!(s.stop, StopReason::Stop) {
                return None;
            }
            *pos = s.end as usize;
            Some(s)
        };
        let Some(first) = next(ctx, &mut pos) else {
            return;
        };
        let count = first.result.and_then(|r| first.as_int(r)).unwrap_or(-1);
        if !(0..=self.options.max_members as i64).contains(&count) {
            ctx.push(Finding::new(
                Rule::Unreadable,
                format!("record count {count} is not a plausible number"),
                loc(member, Some(0), Some(0), ReadView::Linear),
            ));
            return;
        }
        for _ in 0..count {
            let Some(s) = next(ctx, &mut pos) else { return };
            let raw_len: Option<u64> = if storages {
                // (key, location, storage_type) then int64 numel and the bytes.
                let es = s
                    .result
                    .and_then(|r| s.as_seq(r))
                    .and_then(|t| t.get(2).copied())
                    .and_then(|g| s.as_global(g))
                    .and_then(storage_element_size);
                let n = data
                    .get(pos..pos + 8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                match (es, n) {
                    (Some(es), Some(n)) => n.checked_mul(es).and_then(|x| x.checked_add(8)),
                    _ => None,
                }
            } else {
                // int32 ndim, 4 pad bytes, sizes, strides, int64 offset.
                data.get(pos..pos + 4).and_then(|b| {
                    let nd = i32::from_le_bytes(b.try_into().unwrap_or([0; 4]));
                    (nd >= 0).then(|| 8 + 16 * nd as u64 + 8)
                })
            };
            match raw_len.filter(|&l| l <= (data.len() - pos) as u64) {
                Some(l) => pos += l as usize,
                None => {
                    ctx.push(Finding::new(Rule::Unreadable, "a raw record's length could not be determined; the rest of this member was not analysed", loc(member, None, Some(pos as u64), ReadView::Linear)));
                    return;
                }
            }
        }
        if storages {
            let _ = next(ctx, &mut pos);
        }
        if pos < data.len() {
            ctx.push(Finding::new(
                Rule::TrailingData,
                format!("{} bytes after the last record", data.len() - pos),
                loc(member, None, Some(pos as u64), ReadView::Linear),
            ));
        }
    }
}

/// What a zip archive is, for reading its members.
#[derive(Clone, Copy)]
enum Layout<'a> {
    Plain,
    /// torch: the archive's root folder.
    Torch(&'a str),
    /// Keras 3: `config.json` is judged, not sniffed.
    Keras,
}

enum Unpack {
    TooBig,
    Bad(String),
}

/// A `Write` that refuses to grow past `limit` bytes.
struct Bounded {
    out: Vec<u8>,
    limit: u64,
    over: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.out.len() as u64 + b.len() as u64 > self.limit {
            self.over = true;
            return Err(std::io::Error::other("decompressed size limit"));
        }
        self.out.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decompress a whole gzip, zlib, LZMA-alone, xz, bzip2 or LZ4-frame file as Python's
/// decompressing readers do (gzip and zlib: stream after stream), keeping
/// what decoded before an error. Output is bounded by `limit`.
fn decompress(kind: Sniffed, data: &[u8], limit: u64) -> (Vec<u8>, Result<(), Unpack>) {
    fn copy(mut r: impl std::io::Read, w: &mut Bounded) -> Result<(), String> {
        std::io::copy(&mut r, w)
            .map(drop)
            .map_err(|e| e.to_string())
    }
    let mut w = Bounded {
        out: Vec::new(),
        limit,
        over: false,
    };
    let r: Result<(), String> = match kind {
        // Python's gzip reads member after member and skips zero bytes
        // between them (padding); anything else after a member is an error
        // raised only when a reader gets there.
        Sniffed::Gzip => {
            let mut rest = data;
            let mut r = Ok(());
            while !rest.is_empty() {
                let before = rest.len();
                let mut d = flate2::bufread::GzDecoder::new(&mut rest);
                r = copy(&mut d, &mut w);
                drop(d);
                if r.is_err() || rest.len() >= before {
                    break;
                }
                let zeros = rest.iter().take_while(|&&b| b == 0).count();
                rest = &rest[zeros..];
                if !rest.is_empty() && !rest.starts_with(b"\x1f\x8b") {
                    r = Err("bytes after a gzip member are not another member".into());
                    break;
                }
            }
            r
        }
        Sniffed::Zlib => {
            let mut rest = data;
            let mut r = Ok(());
            while !rest.is_empty() {
                let mut d = flate2::bufread::ZlibDecoder::new(rest);
                r = copy(&mut d, &mut w);
                if r.is_err() {
                    break;
                }
                let used = d.total_in() as usize;
                if used == 0 || used > rest.len() {
                    break;
                }
                rest = &rest[used..];
            }
            r
        }
        Sniffed::Lzma => {
            let opts = lzma_rs::decompress::Options {
                unpacked_size: lzma_rs::decompress::UnpackedSize::ReadFromHeader,
                // The dictionary is attacker-chosen; cap it like the output.
                memlimit: Some(limit.min(usize::MAX as u64) as usize),
                allow_incomplete: false,
            };
            lzma_rs::lzma_decompress_with_options(&mut &data[..], &mut w, &opts)
                .map_err(|e| e.to_string())
        }
        // Python's lzma (liblzma) reads concatenated .xz streams and the
        // zero padding between them. lzma-rs reads one stream and stops,
        // with the reader just past its footer, when more data follows.
        Sniffed::Xz => {
            let mut rest = data;
            loop {
                let before = rest.len();
                match lzma_rs::xz_decompress(&mut rest, &mut w) {
                    Ok(()) => break Ok(()),
                    Err(e)
                        if e.to_string()
                            .contains("Unexpected data after last XZ block")
                            && rest.len() < before =>
                    {
                        let zeros = rest.iter().take_while(|&&b| b == 0).count();
                        rest = &rest[zeros..];
                        if rest.is_empty() {
                            break Ok(());
                        }
                    }
                    Err(e) => break Err(e.to_string()),
                }
            }
        }
        Sniffed::Bzip2 => copy(bzip2::read::MultiBzDecoder::new(data), &mut w),
        Sniffed::Lz4 => copy(lz4_flex::frame::FrameDecoder::new(data), &mut w),
        // zstd frames one after another, skippable frames passed over, as
        // Python's readers across frames (`compression.zstd`, zstandard's
        // `read_across_frames=True`) decode them. The window is capped by
        // ruzstd (128 MiB), the output by the budget.
        Sniffed::Zstd => {
            let mut rest = data;
            let mut r = Ok(());
            while !rest.is_empty() {
                if rest.len() >= 8 && rest[0] & 0xf0 == 0x50 && rest[1..4] == [0x2a, 0x4d, 0x18] {
                    let n = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
                    match rest.get(8 + n..) {
                        Some(after) => {
                            rest = after;
                            continue;
                        }
                        None => {
                            r = Err("a skippable zstd frame runs past the end".into());
                            break;
                        }
                    }
                }
                let before = rest.len();
                match ruzstd::decoding::StreamingDecoder::new(&mut rest) {
                    Ok(mut d) => {
                        r = copy(&mut d, &mut w);
                        if r.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        r = Err(e.to_string());
                        break;
                    }
                }
                if rest.len() >= before {
                    break;
                }
            }
            r
        }
        _ => Err("not a compressed format".into()),
    };
    let r = match r {
        Ok(()) => Ok(()),
        Err(_) if w.over => Err(Unpack::TooBig),
        Err(e) => Err(Unpack::Bad(e)),
    };
    (w.out, r)
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

/// Code rebuilt from bytecode in one stream, and what it names.
struct CodeFamily {
    /// The imports that build it (skipped by the per-global judgement).
    imports: Vec<usize>,
    functions: Vec<String>,
    names: Vec<String>,
    danger: Vec<String>,
}

/// Names whose use in code carried by value makes it dangerous: running
/// programs, evaluating code, importing by name, sockets, deleting files,
/// reaching interpreter internals.
const CODE_DANGER: &[&str] = &[
    "system",
    "popen",
    "popen2",
    "popen3",
    "spawnl",
    "spawnle",
    "spawnlp",
    "spawnv",
    "spawnve",
    "spawnvp",
    "execl",
    "execle",
    "execlp",
    "execv",
    "execve",
    "execvp",
    "execvpe",
    "exec",
    "eval",
    "compile",
    "__import__",
    "import_module",
    "Popen",
    "check_output",
    "check_call",
    "getoutput",
    "getstatusoutput",
    "fork",
    "forkpty",
    "openpty",
    "subprocess",
    "pty",
    "socket",
    "create_connection",
    "urlopen",
    "urlretrieve",
    "rmtree",
    "unlink",
    "rmdir",
    "kill",
    "setuid",
    "ctypes",
    "CDLL",
    "dlopen",
    "marshal",
    "__globals__",
    "__builtins__",
    "__subclasses__",
    "__code__",
    "builtins",
];

fn code_by_value(s: &Stream) -> Option<CodeFamily> {
    let dill = s.imports.iter().any(|i| i.module.starts_with("dill"));
    // The helpers that rebuild code, cells, types and modules by name. Any
    // other cloudpickle/dill helper (dill's `_eval_repr`, `_create_filehandle`,
    // `_setattr`...) is judged like any global: dangerous.
    const HELPERS: &[&str] = &[
        "cloudpickle.cloudpickle._make_function",
        "cloudpickle.cloudpickle._builtin_type",
        "cloudpickle.cloudpickle._function_setstate",
        "cloudpickle.cloudpickle.subimport",
        "cloudpickle.cloudpickle.dynamic_subimport",
        "cloudpickle.cloudpickle._make_cell",
        "cloudpickle.cloudpickle._make_empty_cell",
        "cloudpickle.cloudpickle._make_skeleton_class",
        "cloudpickle.cloudpickle._class_setstate",
        "cloudpickle.cloudpickle._make_dict_keys",
        "cloudpickle.cloudpickle._make_dict_values",
        "cloudpickle.cloudpickle._make_dict_items",
        "dill._dill._create_function",
        "dill._dill._create_code",
        "dill._dill._create_cell",
        "dill._dill._create_type",
        "dill._dill._create_namedtuple",
        "dill._dill._load_type",
        "dill._dill._import_module",
        "dill._dill._get_attr",
        "types.CodeType",
        "types.FunctionType",
    ];
    let member = |i: &pk::Import| {
        HELPERS.contains(&i.qualified().as_str())
            // dill's reference to the __main__ module (dill.load resolves it).
            || (dill && matches!(i.qualified().as_str(), "__builtin__.__main__" | "builtins.__main__"))
    };
    let imports: Vec<usize> = s
        .imports
        .iter()
        .enumerate()
        .filter(|(_, i)| member(i))
        .map(|(g, _)| g)
        .collect();
    if imports.is_empty() {
        return None;
    }
    // Strings reachable from the arguments (and BUILD states) of the calls
    // these globals make, bounded.
    let mut todo: Vec<u32> = Vec::new();
    for c in &s.calls {
        let of_family = |id: u32| match s.node(id) {
            Some(Node::Global(g)) => imports.contains(g),
            Some(Node::Call(ci)) => {
                matches!(s.node(s.calls[*ci].callee), Some(Node::Global(g)) if imports.contains(g))
            }
            _ => false,
        };
        if of_family(c.callee) {
            todo.extend(c.args);
            todo.extend(c.kwargs);
        }
    }
    let mut seen = HashSet::new();
    let mut strings: Vec<String> = Vec::new();
    let mut budget = 100_000usize;
    while let Some(id) = todo.pop() {
        if budget == 0 || !seen.insert(id) {
            continue;
        }
        budget -= 1;
        match s.node(id) {
            Some(Node::Str(t)) => strings.push(t.text.to_string()),
            Some(Node::Tuple(v)) => todo.extend(v.iter()),
            Some(Node::List(v)) | Some(Node::Set(v)) | Some(Node::FrozenSet(v)) => todo.extend(v),
            // Values only: the keys of a function's state are attribute names
            // (`__globals__`, `__defaults__`), and of its globals the names
            // the code uses, which `co_names` already lists.
            Some(Node::Dict(kv)) => todo.extend(kv.iter().map(|(_, v)| *v)),
            Some(Node::Call(ci)) => {
                let c = &s.calls[*ci];
                todo.push(c.callee);
                todo.extend(c.args);
                todo.extend(c.kwargs);
            }
            Some(Node::Global(g)) => {
                if let Some(i) = s.imports.get(*g)
                    && !member(i)
                {
                    strings.push(i.module.clone());
                    strings.push(i.name.clone());
                }
            }
            _ => {}
        }
    }
    let mut danger: Vec<String> = strings
        .iter()
        .flat_map(|t| t.split(|c: char| !(c.is_alphanumeric() || c == '_')))
        .filter(|w| CODE_DANGER.contains(w))
        .map(str::to_owned)
        .collect();
    danger.sort();
    danger.dedup();
    let ident = |t: &&String| {
        !t.is_empty()
            && t.len() <= 64
            && t.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
    };
    let mut names: Vec<String> = strings.iter().filter(ident).cloned().collect();
    names.sort();
    names.dedup();
    names.truncate(24);
    let mut functions: Vec<String> = s
        .calls
        .iter()
        .filter(|c| {
            matches!(s.node(c.callee), Some(Node::Global(g)) if imports.contains(g)
                && matches!(s.imports[*g].name.as_str(), "_create_function" | "_make_function" | "FunctionType"))
        })
        .filter_map(|c| {
            let args = s.as_seq(c.args?)?;
            args.iter().find_map(|a| s.as_str(*a).filter(|t| ident(&&t.to_string())).map(str::to_owned))
        })
        .collect();
    functions.dedup();
    Some(CodeFamily {
        imports,
        functions,
        names,
        danger,
    })
}
