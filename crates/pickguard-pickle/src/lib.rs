/*!
Static, symbolic emulation of CPython's unpickler (`Modules/_pickle.c`).

Input: bytes. Output: every import (`find_class`) and every call the
unpickler would make, with byte offsets, as symbolic values that can be
rendered as a Python-like call chain (`posix.system('touch /tmp/x')`).
Nothing is executed, imported or evaluated, and this crate does no I/O.

Fidelity rules, in order:
1. Where CPython certainly fails (truncated data, unknown opcode, stack
   underflow, missing MARK, missing memo key), the stream stops there, and
   everything before the error is still reported: a payload that runs before
   a deliberate error ("exception-oriented programming") is never lost.
2. Where this emulator cannot tell whether CPython would fail (for example a
   type check on a value it only knows symbolically), it keeps going. Going
   further than the real loader can only add findings, never hide one.
3. FRAME boundaries: `pickle.loads(bytes)` reads linearly, but the C
   unpickler reading from a file object without `peek` (for example the
   `io.BytesIO` that `torch.load` wraps around `data.pkl`) drops the rest of
   a frame when an opcode straddles its end. A stream with any frame anomaly
   is therefore analysed in both views ([`ReadView`]), and both are reported.
4. Every resource an attacker controls is bounded by [`Limits`]; hitting one
   is reported as [`StopReason::Budget`], which callers must treat as
   inconclusive, never as clean.
*/

mod compat_table;
mod machine;
pub mod op;
mod value;

pub use machine::{is_plausible_start, run_stream};
pub use op::Op;
pub use value::{Blob, Int, Node, NodeId, Text, push_quoted};

use serde::Serialize;
use std::time::Instant;

/// Python 2 to 3 names, as `_compat_pickle` gives them, and stdlib module names.
pub mod names {
    pub use crate::compat_table::{IMPORT_MAPPING, NAME_MAPPING, STDLIB_MODULES};

    /// `sys.stdlib_module_names` membership of a module's top-level package.
    pub fn is_stdlib(module: &str) -> bool {
        let top = module.split('.').next().unwrap_or(module);
        STDLIB_MODULES.binary_search(&top).is_ok()
            // Python 2 stdlib names that fix_imports maps, seen as stdlib too.
            || IMPORT_MAPPING.iter().any(|(m, _)| *m == top)
    }
}

/// Bounds on everything an attacker controls. Defaults let a torch.save
/// checkpoint of 1 000 000 tensors finish (measured: it needs 12–16M nodes
/// and 8–10M memo entries); a node costs about 64 bytes, so the node budget
/// holds one stream near 1.3 GB.
#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    /// Opcodes executed per stream.
    pub max_ops: u64,
    /// Distinct memo keys.
    pub max_memo: usize,
    /// Values on the stack at once.
    pub max_stack: usize,
    /// Symbolic values created per stream.
    pub max_nodes: usize,
    /// Nested MARKs.
    pub max_marks: usize,
    /// Bytes of string data retained for analysis (strings beyond keep a prefix).
    pub max_retained_bytes: usize,
    /// Longest string retained whole.
    pub max_string: usize,
    /// Wall-clock deadline.
    #[serde(skip)]
    pub deadline: Option<Instant>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ops: 50_000_000,
            max_memo: 12_000_000,
            max_stack: 4_000_000,
            max_nodes: 20_000_000,
            max_marks: 100_000,
            max_retained_bytes: 256 << 20,
            max_string: 4096,
            deadline: None,
        }
    }
}

/// How the bytes are read; see the crate documentation, rule 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadView {
    /// `pickle.loads(bytes)`: one buffer, frames only checked for truncation.
    Linear,
    /// C unpickler over a file object without `peek` (`io.BytesIO`, as in
    /// `torch.load` of a zip checkpoint): leftover frame bytes are dropped.
    FileNoPeek,
    /// C unpickler over a buffered file (`pickle.load(open(f, 'rb'))`): a
    /// frame that fits the `peek` window is read with the bytes after it, a
    /// larger one exactly. Bit k set: the k-th FRAME met is read exactly.
    Mixed(u32),
    /// `joblib.load`: pickle's pure-Python unpickler, but the BUILD of a
    /// `joblib.numpy_pickle.NumpyArrayWrapper` reads the array's bytes (or,
    /// for object arrays, a whole inner pickle) from the file right there.
    Joblib,
}

impl ReadView {
    /// `linear`, `file-no-peek`, or `file-mixed-<bits>`.
    pub fn name(self) -> String {
        match self {
            ReadView::Linear => "linear".into(),
            ReadView::FileNoPeek => "file-no-peek".into(),
            ReadView::Mixed(m) => format!("file-mixed-{m:b}"),
            ReadView::Joblib => "joblib".into(),
        }
    }
}

impl ReadView {
    /// A phrase for people: which loader reads the bytes this way.
    pub fn describe(self) -> String {
        match self {
            ReadView::Linear => "pickle.loads reading".into(),
            ReadView::FileNoPeek => "file-no-peek reading (io.BytesIO, as torch.load)".into(),
            ReadView::Joblib => "joblib.load reading (arrays read inline)".into(),
            ReadView::Mixed(m) => {
                let exact: Vec<String> = (0..32)
                    .filter(|k| m & (1 << k) != 0)
                    .map(|k| (k + 1).to_string())
                    .collect();
                format!(
                    "buffered-file reading (open(f, 'rb'); frame {} read exactly)",
                    exact.join(", ")
                )
            }
        }
    }
}

impl Serialize for ReadView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// How a stream ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StopReason {
    /// STOP executed; the unpickler returned a value.
    Stop,
    /// CPython raises here; nothing after this offset runs.
    Error { offset: u64, message: String },
    /// A limit was reached; the rest of the stream was not analysed.
    Budget { offset: u64, limit: String },
}

/// One `find_class` call.
#[derive(Clone, Debug, Serialize)]
pub struct Import {
    /// Offset of the opcode (GLOBAL, STACK_GLOBAL, INST, EXT*).
    pub offset: u64,
    pub op: Op,
    /// Module as imported, after Python 2 name mapping.
    pub module: String,
    /// Attribute path inside the module, after Python 2 name mapping.
    pub name: String,
    /// The names as written in the pickle, when mapping changed them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<(String, String)>,
    /// Protocol in force (last PROTO), which decides mapping and dotted lookup.
    pub protocol: u8,
    /// A name that is only known by prefix (too long to retain).
    pub truncated: bool,
    /// For EXT1/2/4, the extension code looked up in `copyreg`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext_code: Option<u32>,
}

impl Import {
    /// `joblib.numpy_pickle.NumpyArrayWrapper`, whose BUILD makes `joblib.load`
    /// read array bytes inline (see [`ReadView::Joblib`]).
    pub fn is_joblib_array_wrapper(&self) -> bool {
        self.module == "joblib.numpy_pickle" && self.name == "NumpyArrayWrapper"
    }

    /// `module.name`.
    pub fn qualified(&self) -> String {
        if self.ext_code.is_some() {
            return format!(
                "copyreg._extension_registry[{}]",
                self.ext_code.unwrap_or(0)
            );
        }
        format!("{}.{}", self.module, self.name)
    }
}

/// What kind of call an opcode makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallKind {
    /// REDUCE: `callable(*args)`.
    Reduce,
    /// NEWOBJ: `cls.__new__(cls, *args)`.
    NewObj,
    /// NEWOBJ_EX: `cls.__new__(cls, *args, **kwargs)`.
    NewObjEx,
    /// OBJ: `cls(*args)`.
    Obj,
    /// INST: `cls(*args)`.
    Inst,
    /// BUILD: `obj.__setstate__(state)` or an update of `obj.__dict__`.
    Build,
    /// APPEND/APPENDS on something that is not a list made by the pickle:
    /// calls its `append`/`extend`.
    Append,
    /// SETITEM/SETITEMS on something that is not a dict made by the pickle:
    /// calls its `__setitem__`.
    SetItem,
    /// ADDITEMS on something that is not a set made by the pickle: calls `add`.
    AddItems,
}

impl CallKind {
    pub fn method(self) -> &'static str {
        match self {
            CallKind::Append => "extend",
            CallKind::SetItem => "__setitem__",
            CallKind::AddItems => "add",
            CallKind::Build => "__setstate__",
            CallKind::NewObj | CallKind::NewObjEx => "__new__",
            _ => "__call__",
        }
    }
}

/// One call the unpickler would make.
#[derive(Clone, Debug, Serialize)]
pub struct Call {
    pub offset: u64,
    pub op: Op,
    pub kind: CallKind,
    /// The callable (or, for BUILD and container methods, the receiver).
    pub callee: NodeId,
    /// Positional arguments (a tuple node), or BUILD's state.
    pub args: Option<NodeId>,
    pub kwargs: Option<NodeId>,
}

/// One `persistent_load(pid)` call.
#[derive(Clone, Debug, Serialize)]
pub struct PersistentRef {
    pub offset: u64,
    pub op: Op,
    pub pid: NodeId,
}

/// Something in the byte stream that a genuine pickler never writes.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Anomaly {
    /// A read crosses the end of the current frame.
    FrameStraddle { offset: u64, frame_end: u64 },
    /// A FRAME opcode before the current frame was used up.
    NestedFrame { offset: u64, frame_end: u64 },
    /// PROTO after the first opcode, or a second PROTO.
    LateProto { offset: u64, protocol: u8 },
    /// An opcode newer than the protocol the stream declared.
    OpcodeAboveProtocol { offset: u64, op: Op, protocol: u8 },
    /// A text literal this emulator does not evaluate exactly.
    UnparsedLiteral { offset: u64, op: Op },
}

/// Everything one pickle stream would do.
#[derive(Clone, Debug)]
pub struct Stream {
    /// Offset of the first opcode, in the caller's coordinates.
    pub start: u64,
    /// Offset just after the last opcode read (after STOP, or at the error).
    pub end: u64,
    pub view: ReadView,
    pub stop: StopReason,
    /// Protocol from the first PROTO, if any.
    pub protocol: Option<u8>,
    pub imports: Vec<Import>,
    pub calls: Vec<Call>,
    pub persistent_ids: Vec<PersistentRef>,
    pub anomalies: Vec<Anomaly>,
    /// Count of each opcode executed.
    pub op_counts: Vec<(Op, u64)>,
    pub ops: u64,
    /// The arena of symbolic values.
    pub nodes: Vec<Node>,
    /// The value STOP returned.
    pub result: Option<NodeId>,
    /// Joblib view: offsets of the inner pickles joblib loads for object
    /// arrays (each a stream of its own, analysed by the caller).
    pub inline_pickles: Vec<u64>,
}

impl Stream {
    /// Python-like text for a value, bounded in size.
    pub fn render(&self, id: NodeId) -> String {
        value::Renderer {
            stream: self,
            max_depth: 6,
            max_items: 6,
            max_str: 80,
        }
        .render(id)
    }

    /// Python-like text for a call, e.g. `posix.system('id')`.
    pub fn render_call(&self, call: &Call) -> String {
        let r = value::Renderer {
            stream: self,
            max_depth: 6,
            max_items: 6,
            max_str: 80,
        };
        let mut s = String::new();
        r.call(&mut s, call, 0);
        s
    }

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id as usize)
    }

    /// The import a value is, if it is a bare global.
    pub fn as_global(&self, id: NodeId) -> Option<&Import> {
        match self.node(id)? {
            Node::Global(i) => self.imports.get(*i),
            _ => None,
        }
    }

    /// A string value's text, if whole.
    pub fn as_str(&self, id: NodeId) -> Option<&str> {
        match self.node(id)? {
            Node::Str(t) if !t.is_truncated() => Some(&t.text),
            _ => None,
        }
    }

    pub fn as_int(&self, id: NodeId) -> Option<i64> {
        match self.node(id)? {
            Node::Int(i) => i.as_i64(),
            Node::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// Items of a tuple or list.
    pub fn as_seq(&self, id: NodeId) -> Option<&[NodeId]> {
        match self.node(id)? {
            Node::Tuple(v) => Some(v),
            Node::List(v) => Some(v),
            _ => None,
        }
    }

    pub fn used(&self, op: Op) -> bool {
        self.op_counts.iter().any(|(o, n)| *o == op && *n > 0)
    }

    /// True when the stream did nothing observable and failed: junk bytes, not a pickle.
    pub fn is_junk(&self) -> bool {
        matches!(self.stop, StopReason::Error { .. })
            && self.imports.is_empty()
            && self.calls.is_empty()
            && self.persistent_ids.is_empty()
            && self.ops < 4
    }
}

/// Options for an analysis.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub limits: Limits,
    /// Apply Python 2 name mapping at protocol < 3 (CPython's `fix_imports=True`).
    pub no_fix_imports: bool,
}

/// Analyse one stream starting at `data[start]` in every read view that can
/// differ: the linear view, plus the file view when the linear one saw a frame anomaly.
pub fn analyze_views(data: &[u8], start: usize, base: u64, opts: &Options) -> Vec<Stream> {
    let linear = run_stream(data, start, base, ReadView::Linear, opts);
    let framed = linear.anomalies.iter().any(|a| {
        matches!(
            a,
            Anomaly::FrameStraddle { .. } | Anomaly::NestedFrame { .. }
        )
    });
    let joblib = linear.imports.iter().any(Import::is_joblib_array_wrapper);
    let mut out = if framed {
        file_views(data, start, base, opts, linear)
    } else {
        vec![linear]
    };
    if joblib {
        out.push(run_stream(data, start, base, ReadView::Joblib, opts));
    }
    out
}

/// The linear reading saw a frame anomaly: add the file-object readings
/// (no peek, and per-frame mixes as a buffered file reads).
fn file_views(data: &[u8], start: usize, base: u64, opts: &Options, linear: Stream) -> Vec<Stream> {
    let frames = linear
        .op_counts
        .iter()
        .find(|(o, _)| *o == Op::Frame)
        .map(|(_, n)| *n)
        .unwrap_or(0);
    let mut out = vec![
        linear,
        run_stream(data, start, base, ReadView::FileNoPeek, opts),
    ];
    // Buffered files read some frames exactly and some with what follows:
    // try each combination over the first frames (bounded), keeping the
    // readings that reach imports or calls the others do not.
    let n = frames.min(MIXED_FRAMES as u64) as u32;
    if n >= 2 {
        let mut seen: std::collections::HashSet<(u64, String)> = std::collections::HashSet::new();
        let key = |s: &Stream| -> Vec<(u64, String)> {
            let mut v: Vec<(u64, String)> = s
                .imports
                .iter()
                .map(|i| (i.offset, i.qualified()))
                .collect();
            v.extend(s.calls.iter().map(|c| (c.offset, s.render_call(c))));
            v
        };
        for s in &out {
            seen.extend(key(s));
        }
        let all = (1u32 << n) - 1;
        for mask in 1..all {
            let s = run_stream(data, start, base, ReadView::Mixed(mask), opts);
            let k = key(&s);
            if k.iter().any(|x| !seen.contains(x)) {
                seen.extend(k);
                out.push(s);
            }
        }
    }
    out
}

/// Frames whose exact-or-buffered combinations are explored (2^N readings).
pub const MIXED_FRAMES: u32 = 6;

/// Analyse consecutive streams, as repeated `pickle.load(f)` calls would read
/// them, up to `max_streams`. Stops at the first stream that does not end in
/// STOP, and at junk that is not a pickle (returned as `Err(offset)` in the
/// second field: where the trailing non-pickle data starts).
pub fn analyze_all(
    data: &[u8],
    base: u64,
    opts: &Options,
    max_streams: usize,
) -> (Vec<Stream>, Option<u64>) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut trailing = None;
    let mut n = 0;
    while pos < data.len() {
        if n == max_streams {
            trailing = Some(base + pos as u64);
            break;
        }
        let views = analyze_views(data, pos, base, opts);
        let first = &views[0];
        if n > 0 && first.is_junk() {
            trailing = Some(base + pos as u64);
            break;
        }
        let stopped = matches!(first.stop, StopReason::Stop);
        let next = (first.end - base) as usize;
        out.extend(views);
        n += 1;
        if !stopped || next <= pos {
            break;
        }
        pos = next;
    }
    (out, trailing)
}
