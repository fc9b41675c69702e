//! Symbolic values: what the unpickler's stack and memo would hold.
//!
//! Nothing here is a Python object. Containers hold node ids into an arena,
//! so `DUP`, `GET` and shared references cost nothing (no "billion laughs"
//! expansion), and mutation through any alias is seen by every alias, as in
//! CPython.

use serde::Serialize;
use std::fmt::Write as _;

/// Index of a node in a stream's arena.
pub type NodeId = u32;

/// A string the pickle carries; long strings keep a prefix and their length.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Text {
    pub text: Box<str>,
    /// Length in bytes of the whole string in the pickle.
    pub len: u64,
}

impl Text {
    pub fn is_truncated(&self) -> bool {
        (self.text.len() as u64) < self.len
    }
}

/// A byte string: where it lies in the input and its first bytes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Blob {
    pub offset: u64,
    pub len: u64,
    pub head: Vec<u8>,
}

/// An integer; values outside `i64` keep only their size.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Int {
    Small(i64),
    /// Fits in 128 bits (the torch legacy magic number does); two halves
    /// keep `Node` small.
    Wide {
        lo: u64,
        hi: u64,
    },
    Big {
        bytes: u64,
    },
    /// A literal CPython would parse but this emulator does not evaluate.
    Unparsed,
}

impl Int {
    pub fn from_i128(v: i128) -> Int {
        match i64::try_from(v) {
            Ok(s) => Int::Small(s),
            Err(_) => Int::Wide {
                lo: v as u64,
                hi: (v >> 64) as u64,
            },
        }
    }
    pub fn as_i64(self) -> Option<i64> {
        match self {
            Int::Small(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_i128(self) -> Option<i128> {
        match self {
            Int::Small(v) => Some(v as i128),
            Int::Wide { lo, hi } => Some(((hi as i128) << 64) | lo as i128),
            _ => None,
        }
    }
}

/// One symbolic value.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    None,
    Bool(bool),
    Int(Int),
    Float(f64),
    Str(Text),
    Bytes(Box<Blob>),
    ByteArray(Box<Blob>),
    Tuple(Box<[NodeId]>),
    List(Vec<NodeId>),
    Dict(Vec<(NodeId, NodeId)>),
    Set(Vec<NodeId>),
    FrozenSet(Vec<NodeId>),
    /// The object `find_class` returns; index into the stream's imports.
    Global(usize),
    /// The result of a call; index into the stream's calls.
    Call(usize),
    /// What `persistent_load` returns; index into the stream's persistent ids.
    Persistent(usize),
    /// An out-of-band buffer (`NEXT_BUFFER`).
    Buffer,
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match self {
            Node::None => "None",
            Node::Bool(_) => "bool",
            Node::Int(_) => "int",
            Node::Float(_) => "float",
            Node::Str(_) => "str",
            Node::Bytes(_) => "bytes",
            Node::ByteArray(_) => "bytearray",
            Node::Tuple(_) => "tuple",
            Node::List(_) => "list",
            Node::Dict(_) => "dict",
            Node::Set(_) => "set",
            Node::FrozenSet(_) => "frozenset",
            Node::Global(_) => "global",
            Node::Call(_) => "call result",
            Node::Persistent(_) => "persistent object",
            Node::Buffer => "buffer",
        }
    }
}

/// Python-like rendering of symbolic values, bounded in depth and width.
pub(crate) struct Renderer<'s> {
    pub stream: &'s crate::Stream,
    pub max_depth: usize,
    pub max_items: usize,
    pub max_str: usize,
}

impl Renderer<'_> {
    pub fn render(&self, id: NodeId) -> String {
        let mut out = String::new();
        self.node(&mut out, id, 0);
        out
    }

    fn seq(&self, out: &mut String, items: &[NodeId], depth: usize) {
        for (i, &it) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            if i == self.max_items {
                let _ = write!(out, "… {} more", items.len() - i);
                break;
            }
            self.node(out, it, depth + 1);
        }
    }

    pub fn node(&self, out: &mut String, id: NodeId, depth: usize) {
        let Some(node) = self.stream.nodes.get(id as usize) else {
            out.push('?');
            return;
        };
        if depth > self.max_depth {
            out.push('…');
            return;
        }
        match node {
            Node::None => out.push_str("None"),
            Node::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
            Node::Int(Int::Small(v)) => {
                let _ = write!(out, "{v}");
            }
            Node::Int(i @ Int::Wide { .. }) => {
                let _ = write!(out, "{}", i.as_i128().unwrap_or_default());
            }
            Node::Int(Int::Big { bytes }) => {
                let _ = write!(out, "<{bytes}-byte int>");
            }
            Node::Int(Int::Unparsed) => out.push_str("<int>"),
            Node::Float(f) => {
                let _ = write!(out, "{f:?}");
            }
            Node::Str(t) => {
                push_quoted(out, &t.text, self.max_str);
                if t.is_truncated() {
                    let _ = write!(out, "…<{} bytes>", t.len);
                }
            }
            Node::Bytes(b) | Node::ByteArray(b) => {
                if matches!(node, Node::ByteArray(_)) {
                    out.push_str("bytearray(");
                }
                out.push('b');
                let shown: String = b
                    .head
                    .iter()
                    .take(self.max_str)
                    .map(|&c| c as char)
                    .collect();
                push_quoted(out, &shown, self.max_str);
                if b.len as usize > shown.len() {
                    let _ = write!(out, "…<{} bytes>", b.len);
                }
                if matches!(node, Node::ByteArray(_)) {
                    out.push(')');
                }
            }
            Node::Tuple(items) => {
                out.push('(');
                self.seq(out, items, depth);
                if items.len() == 1 {
                    out.push(',');
                }
                out.push(')');
            }
            Node::List(items) => {
                out.push('[');
                self.seq(out, items, depth);
                out.push(']');
            }
            Node::Set(items) | Node::FrozenSet(items) => {
                let frozen = matches!(node, Node::FrozenSet(_));
                if frozen {
                    out.push_str("frozenset(");
                }
                if items.is_empty() {
                    out.push_str(if frozen { "" } else { "set()" });
                } else {
                    out.push('{');
                    self.seq(out, items, depth);
                    out.push('}');
                }
                if frozen {
                    out.push(')');
                }
            }
            Node::Dict(pairs) => {
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    if i == self.max_items {
                        let _ = write!(out, "… {} more", pairs.len() - i);
                        break;
                    }
                    self.node(out, *k, depth + 1);
                    out.push_str(": ");
                    self.node(out, *v, depth + 1);
                }
                out.push('}');
            }
            Node::Global(i) => match self.stream.imports.get(*i) {
                Some(imp) => out.push_str(&imp.qualified()),
                None => out.push('?'),
            },
            Node::Call(i) => match self.stream.calls.get(*i) {
                Some(call) => self.call(out, call, depth),
                None => out.push('?'),
            },
            Node::Persistent(i) => {
                out.push_str("persistent_load(");
                if let Some(p) = self.stream.persistent_ids.get(*i) {
                    self.node(out, p.pid, depth + 1);
                }
                out.push(')');
            }
            Node::Buffer => out.push_str("<out-of-band buffer>"),
        }
    }

    pub fn call(&self, out: &mut String, call: &crate::Call, depth: usize) {
        use crate::CallKind as K;
        let args = |out: &mut String| {
            if let Some(a) = call.args {
                match self.stream.nodes.get(a as usize) {
                    Some(Node::Tuple(items)) => self.seq(out, items, depth),
                    _ => {
                        out.push('*');
                        self.node(out, a, depth + 1);
                    }
                }
            }
        };
        match call.kind {
            K::Reduce | K::Obj | K::Inst => {
                self.node(out, call.callee, depth + 1);
                out.push('(');
                args(out);
                out.push(')');
            }
            K::NewObj | K::NewObjEx => {
                self.node(out, call.callee, depth + 1);
                out.push_str(".__new__(");
                self.node(out, call.callee, depth + 1);
                if let Some(Node::Tuple(items)) =
                    call.args.and_then(|a| self.stream.nodes.get(a as usize))
                    && !items.is_empty()
                {
                    out.push_str(", ");
                }
                args(out);
                if let Some(k) = call.kwargs {
                    out.push_str(", **");
                    self.node(out, k, depth + 1);
                }
                out.push(')');
            }
            K::Build => {
                self.node(out, call.callee, depth + 1);
                out.push_str(".__setstate__(");
                args(out);
                out.push(')');
            }
            K::Append | K::SetItem | K::AddItems => {
                self.node(out, call.callee, depth + 1);
                let _ = write!(out, ".{}(", call.kind.method());
                args(out);
                out.push(')');
            }
        }
    }
}

/// Python-style quoting with control and non-printable characters escaped.
pub fn push_quoted(out: &mut String, s: &str, max: usize) {
    out.push('\'');
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || c == '\u{fffd}' => {
                let n = c as u32;
                let _ = match n {
                    0..=0xff => write!(out, "\\x{n:02x}"),
                    0x100..=0xffff => write!(out, "\\u{n:04x}"),
                    _ => write!(out, "\\U{n:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out.push('\'');
}
