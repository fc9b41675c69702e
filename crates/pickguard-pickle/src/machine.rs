//! The symbolic unpickler: one stream, one read view.

use crate::op::Op;
use crate::value::{Blob, Int, Node, NodeId, Text};
use crate::{
    Anomaly, Call, CallKind, Import, Options, PersistentRef, ReadView, StopReason, Stream,
    names::{IMPORT_MAPPING, NAME_MAPPING},
};
use std::collections::HashMap;

/// Highest protocol CPython accepts in PROTO.
const HIGHEST_PROTOCOL: u8 = 5;

enum Fail {
    /// CPython raises: stream ends.
    Error(String),
    /// A limit was hit.
    Budget(String),
}

type R<T> = Result<T, Fail>;

fn err<T>(msg: impl Into<String>) -> R<T> {
    Err(Fail::Error(msg.into()))
}

/// The input as the chosen read view sees it.
struct Src<'a> {
    data: &'a [u8],
    pos: usize,
    view: ReadView,
    /// Linear view: end of the current frame, for anomaly detection.
    frame_end: Option<usize>,
    /// File view: end of the unpickler's buffer when it holds a frame.
    buf_end: Option<usize>,
    /// FRAME opcodes met so far (Mixed view).
    frames_seen: u32,
    anomalies: Vec<Anomaly>,
    base: u64,
}

impl<'a> Src<'a> {
    fn off(&self, p: usize) -> u64 {
        self.base + p as u64
    }

    /// Linear view: note reads that cross the end of the current frame.
    fn check_frame(&mut self, n: usize) {
        if let Some(fe) = self.frame_end {
            if self.pos >= fe {
                self.frame_end = None;
            } else if self.pos + n > fe {
                let a = Anomaly::FrameStraddle {
                    offset: self.off(self.pos),
                    frame_end: self.off(fe),
                };
                self.anomalies.push(a);
                self.frame_end = None;
            }
        }
    }

    /// File view: a read that does not fit in the buffer drops its leftover bytes.
    fn refill_for(&mut self, n: usize) {
        if let Some(be) = self.buf_end
            && self.pos + n > be
        {
            if self.pos < be {
                let a = Anomaly::FrameStraddle {
                    offset: self.off(self.pos),
                    frame_end: self.off(be),
                };
                self.anomalies.push(a);
                self.pos = be;
            }
            self.buf_end = None;
        }
    }

    /// `_Unpickler_Read`: exactly `n` bytes.
    fn read(&mut self, n: usize) -> R<&'a [u8]> {
        match self.view {
            ReadView::Linear | ReadView::Joblib => self.check_frame(n),
            ReadView::FileNoPeek | ReadView::Mixed(_) => self.refill_for(n),
        }
        if n > self.data.len() - self.pos {
            return err("pickle data was truncated");
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// `_Unpickler_ReadInto`, used for BINBYTES*/BYTEARRAY8: reads through
    /// the buffer end into the file, so no bytes are dropped in either view.
    fn read_into(&mut self, n: u64) -> R<(usize, usize)> {
        if matches!(self.view, ReadView::Linear | ReadView::Joblib) {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            self.check_frame(n);
        }
        let avail = (self.data.len() - self.pos) as u64;
        if n > avail {
            return err("pickle data was truncated");
        }
        let start = self.pos;
        self.pos += n as usize;
        if let Some(be) = self.buf_end
            && self.pos >= be
        {
            self.buf_end = None;
        }
        Ok((start, n as usize))
    }

    /// `_Unpickler_Readline`: up to and including `\n`; returns the line without it.
    fn readline(&mut self) -> R<&'a [u8]> {
        let rest = &self.data[self.pos..];
        let nl = rest.iter().position(|&b| b == b'\n');
        match self.view {
            ReadView::Linear | ReadView::Joblib => {
                let n = nl.map(|i| i + 1).unwrap_or(rest.len() + 1);
                self.check_frame(n);
            }
            ReadView::FileNoPeek | ReadView::Mixed(_) => {
                if let Some(be) = self.buf_end {
                    let in_buf = nl.is_some_and(|i| self.pos + i < be);
                    if !in_buf {
                        self.refill_for(usize::MAX / 2);
                        return self.readline();
                    }
                }
            }
        }
        match nl {
            Some(i) => {
                let line = &rest[..i];
                self.pos += i + 1;
                Ok(line)
            }
            None => err("pickle data was truncated (no newline)"),
        }
    }

    /// FRAME: length already read; position the buffer as the view does.
    fn frame(&mut self, len: u64, op_offset: usize) -> R<()> {
        let avail = (self.data.len() - self.pos) as u64;
        if len > avail {
            return err("pickle data was truncated (frame longer than the data)");
        }
        let len = len as usize;
        match self.view {
            ReadView::Linear | ReadView::Joblib => {
                if let Some(fe) = self.frame_end
                    && op_offset < fe
                {
                    let a = Anomaly::NestedFrame {
                        offset: self.off(op_offset),
                        frame_end: self.off(fe),
                    };
                    self.anomalies.push(a);
                }
                self.frame_end = Some(self.pos + len);
            }
            ReadView::FileNoPeek | ReadView::Mixed(_) => {
                let exact = match self.view {
                    ReadView::Mixed(m) => self.frames_seen < 32 && (m >> self.frames_seen) & 1 == 1,
                    _ => true,
                };
                self.frames_seen += 1;
                let fits = self.buf_end.is_some_and(|be| self.pos + len <= be);
                if !fits {
                    if let Some(be) = self.buf_end
                        && self.pos < be
                    {
                        let a = Anomaly::NestedFrame {
                            offset: self.off(op_offset),
                            frame_end: self.off(be),
                        };
                        self.anomalies.push(a);
                        self.pos = be;
                        if len > self.data.len() - self.pos {
                            return err("pickle data was truncated");
                        }
                    }
                    // Exactly the frame; or, through a peek window, the frame and
                    // what follows (no boundary to drop bytes at).
                    self.buf_end = if exact { Some(self.pos + len) } else { None };
                }
            }
        }
        Ok(())
    }
}

struct Machine<'a, 'o> {
    src: Src<'a>,
    opts: &'o Options,
    nodes: Vec<Node>,
    stack: Vec<NodeId>,
    marks: Vec<usize>,
    memo: Memo,
    proto: u8,
    first_proto: Option<u8>,
    imports: Vec<Import>,
    calls: Vec<Call>,
    persistent_ids: Vec<PersistentRef>,
    op_counts: [u64; 256],
    ops: u64,
    retained: usize,
    op_offset: usize,
    result: Option<NodeId>,
    inline_pickles: Vec<u64>,
}

/// The memo: a dense array for the small keys picklers write (as CPython
/// keeps it), a map for sparse large keys an attacker may choose, and the
/// count of distinct keys that MEMOIZE uses.
#[derive(Default)]
struct Memo {
    dense: Vec<Option<NodeId>>,
    sparse: HashMap<u64, NodeId>,
    len: usize,
}

impl Memo {
    const DENSE_LIMIT: u64 = 1 << 22;

    /// Store; false when a new key would exceed `max`.
    fn put(&mut self, key: u64, id: NodeId, max: usize) -> bool {
        if key < Self::DENSE_LIMIT {
            let k = key as usize;
            if k >= self.dense.len() {
                if self.len >= max {
                    return false;
                }
                self.dense.resize(
                    (k + 1)
                        .max(self.dense.len() * 2)
                        .min(Self::DENSE_LIMIT as usize),
                    None,
                );
            }
            if self.dense[k].is_none() {
                if self.len >= max {
                    return false;
                }
                self.len += 1;
            }
            self.dense[k] = Some(id);
        } else {
            if !self.sparse.contains_key(&key) {
                if self.len >= max {
                    return false;
                }
                self.len += 1;
            }
            self.sparse.insert(key, id);
        }
        true
    }

    fn get(&self, key: u64) -> Option<NodeId> {
        if key < Self::DENSE_LIMIT {
            self.dense.get(key as usize).copied().flatten()
        } else {
            self.sparse.get(&key).copied()
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// True if `data` starts with a byte a pickle stream can start with.
pub fn is_plausible_start(data: &[u8]) -> bool {
    match data.first() {
        Some(&0x80) => data.get(1).is_some_and(|&p| p <= HIGHEST_PROTOCOL),
        Some(&b) => Op::from_byte(b).is_some(),
        None => false,
    }
}

/// Run one stream from `data[start]` in one read view. `base` is added to
/// every reported offset.
pub fn run_stream(data: &[u8], start: usize, base: u64, view: ReadView, opts: &Options) -> Stream {
    // Roughly one value per three bytes of pickle; bounded by the limit.
    let guess = ((data.len() - start.min(data.len())) / 3)
        .min(opts.limits.max_nodes)
        .min(1 << 24);
    let mut m = Machine {
        src: Src {
            data,
            pos: start,
            view,
            frame_end: None,
            buf_end: None,
            frames_seen: 0,
            anomalies: Vec::new(),
            base,
        },
        opts,
        nodes: Vec::with_capacity(guess),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Memo::default(),
        proto: 0,
        first_proto: None,
        imports: Vec::new(),
        calls: Vec::new(),
        persistent_ids: Vec::new(),
        op_counts: [0; 256],
        ops: 0,
        retained: 0,
        op_offset: start,
        result: None,
        inline_pickles: Vec::new(),
    };
    let stop = match m.run() {
        Ok(()) => StopReason::Stop,
        Err(Fail::Error(message)) => StopReason::Error {
            offset: base + m.op_offset as u64,
            message,
        },
        Err(Fail::Budget(limit)) => StopReason::Budget {
            offset: base + m.op_offset as u64,
            limit,
        },
    };
    let op_counts = Op::ALL
        .iter()
        .filter(|o| m.op_counts[**o as u8 as usize] > 0)
        .map(|o| (*o, m.op_counts[*o as u8 as usize]))
        .collect();
    Stream {
        start: base + start as u64,
        end: base + m.src.pos as u64,
        view,
        stop,
        protocol: m.first_proto,
        imports: m.imports,
        calls: m.calls,
        persistent_ids: m.persistent_ids,
        anomalies: m.src.anomalies,
        op_counts,
        ops: m.ops,
        nodes: m.nodes,
        result: m.result,
        inline_pickles: m.inline_pickles,
    }
}

fn le_u64(b: &[u8]) -> u64 {
    let mut x = 0u64;
    for (i, &c) in b.iter().enumerate() {
        x |= (c as u64) << (8 * i);
    }
    x
}

/// Two's-complement little-endian integer of any width (LONG1/LONG4).
fn decode_long(b: &[u8]) -> Int {
    if b.is_empty() {
        return Int::Small(0);
    }
    if b.len() > 16 {
        // Could still fit if it is sign extension; check.
        let neg = b[b.len() - 1] & 0x80 != 0;
        let fill = if neg { 0xff } else { 0 };
        if b[16..].iter().all(|&c| c == fill) && ((b[15] & 0x80 != 0) == neg) {
            return decode_long(&b[..16]);
        }
        return Int::Big {
            bytes: b.len() as u64,
        };
    }
    let mut x = 0u128;
    for (i, &c) in b.iter().enumerate() {
        x |= (c as u128) << (8 * i);
    }
    if b[b.len() - 1] & 0x80 != 0 && b.len() < 16 {
        x |= u128::MAX << (8 * b.len());
    }
    Int::from_i128(x as i128)
}

/// `strtol(s, &end, 0)` followed by CPython's `PyLong_FromString` fallback,
/// approximated: decimal, `0x`, `0o`, `0b`, leading-zero octal, underscores.
fn parse_int_literal(s: &str) -> Option<i128> {
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let t = t.replace('_', "");
    let lower = t.to_ascii_lowercase();
    let v = if let Some(h) = lower.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if let Some(o) = lower.strip_prefix("0o") {
        i128::from_str_radix(o, 8).ok()?
    } else if let Some(b) = lower.strip_prefix("0b") {
        i128::from_str_radix(b, 2).ok()?
    } else if lower.len() > 1 && lower.starts_with('0') {
        i128::from_str_radix(&lower[1..], 8).ok()?
    } else {
        lower.parse::<i128>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// Decode a Python string-literal body with backslash escapes (STRING opcode).
fn unescape_bytes(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c != b'\\' || i + 1 == s.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let e = s[i + 1];
        i += 2;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                let mut k = 0;
                while k < 2 && i < s.len() && (b'0'..=b'7').contains(&s[i]) {
                    v = v * 8 + (s[i] - b'0') as u32;
                    i += 1;
                    k += 1;
                }
                out.push(v as u8);
            }
            b'x' if i + 2 <= s.len() => {
                let h = std::str::from_utf8(&s[i..i + 2])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.extend_from_slice(b"\\x"),
                }
            }
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\\' | b'\'' | b'"' => out.push(e),
            b'\n' => {}
            _ => {
                out.push(b'\\');
                out.push(e);
            }
        }
    }
    out
}

/// `raw-unicode-escape` decoding (UNICODE opcode).
fn raw_unicode_escape(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 1 < s.len() && (s[i + 1] == b'u' || s[i + 1] == b'U') {
            let n = if s[i + 1] == b'u' { 4 } else { 8 };
            if i + 2 + n <= s.len()
                && let Some(c) = std::str::from_utf8(&s[i + 2..i + 2 + n])
                    .ok()
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32)
            {
                out.push(c);
                i += 2 + n;
                continue;
            }
        }
        out.push(s[i] as char);
        i += 1;
    }
    out
}

impl Machine<'_, '_> {
    fn push_node(&mut self, n: Node) -> R<NodeId> {
        if self.nodes.len() >= self.opts.limits.max_nodes {
            return Err(Fail::Budget(format!(
                "max_nodes={}",
                self.opts.limits.max_nodes
            )));
        }
        self.nodes.push(n);
        Ok((self.nodes.len() - 1) as NodeId)
    }

    fn push(&mut self, n: Node) -> R<()> {
        let id = self.push_node(n)?;
        self.push_id(id)
    }

    fn push_id(&mut self, id: NodeId) -> R<()> {
        if self.stack.len() >= self.opts.limits.max_stack {
            return Err(Fail::Budget(format!(
                "max_stack={}",
                self.opts.limits.max_stack
            )));
        }
        self.stack.push(id);
        Ok(())
    }

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> R<NodeId> {
        if self.stack.len() <= self.fence() {
            return err("unpickling stack underflow");
        }
        Ok(self.stack.pop().unwrap_or(0))
    }

    fn top(&self) -> R<NodeId> {
        if self.stack.len() <= self.fence() {
            return err("unpickling stack underflow");
        }
        Ok(self.stack[self.stack.len() - 1])
    }

    /// `marker()`: pop the metastack, return where the mark was.
    fn marker(&mut self) -> R<usize> {
        match self.marks.pop() {
            Some(m) => Ok(m),
            None => err("could not find MARK"),
        }
    }

    /// Items above a mark, removed from the stack.
    fn pop_mark_items(&mut self) -> R<Vec<NodeId>> {
        let m = self.marker()?;
        let m = m.min(self.stack.len());
        Ok(self.stack.split_off(m))
    }

    /// A str value. Invalid UTF-8 (a UnicodeDecodeError in CPython) is
    /// decoded lossily and the stream goes on (fidelity rule 2).
    fn text(&mut self, bytes: &[u8]) -> R<Node> {
        let keep = bytes.len().min(self.opts.limits.max_string);
        let keep = if self.retained + keep > self.opts.limits.max_retained_bytes {
            keep.min(64)
        } else {
            keep
        };
        self.retained += keep;
        let text: Box<str> = String::from_utf8_lossy(&bytes[..keep]).into();
        Ok(Node::Str(Text {
            text,
            len: bytes.len() as u64,
        }))
    }

    /// Latin-1-ish decoding used for STRING/BINSTRING (encoding is the loader's choice).
    fn text_latin1(&mut self, bytes: &[u8]) -> R<Node> {
        let keep = bytes.len().min(self.opts.limits.max_string);
        self.retained += keep;
        let text: String = bytes[..keep].iter().map(|&b| b as char).collect();
        Ok(Node::Str(Text {
            text: text.into(),
            len: bytes.len() as u64,
        }))
    }

    fn blob(&mut self, start: usize, len: usize, bytearray: bool) -> R<Node> {
        let head = self.src.data[start..start + len.min(64)].to_vec();
        let b = Blob {
            offset: self.src.off(start),
            len: len as u64,
            head,
        };
        Ok(if bytearray {
            Node::ByteArray(Box::new(b))
        } else {
            Node::Bytes(Box::new(b))
        })
    }

    fn memo_put(&mut self, key: u64, id: NodeId) -> R<()> {
        if !self.memo.put(key, id, self.opts.limits.max_memo) {
            return Err(Fail::Budget(format!(
                "max_memo={}",
                self.opts.limits.max_memo
            )));
        }
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> R<()> {
        match self.memo.get(key) {
            Some(id) => self.push_id(id),
            None => err(format!("Memo value not found at index {key}")),
        }
    }

    fn line_str(&mut self) -> R<String> {
        let l = self.src.readline()?;
        Ok(String::from_utf8_lossy(l).into_owned())
    }

    /// `find_class(module, name)` as `_pickle.c` does it, recorded, pushed.
    fn find_class(
        &mut self,
        module: String,
        name: String,
        truncated: bool,
        ext: Option<u32>,
    ) -> R<NodeId> {
        let mut written = None;
        let (mut m, mut n) = (module, name);
        if self.proto < 3 && !self.opts.no_fix_imports && ext.is_none() {
            if let Some((_, (m2, n2))) = NAME_MAPPING.iter().find(|((a, b), _)| *a == m && *b == n)
            {
                written = Some((m.clone(), n.clone()));
                m = (*m2).to_owned();
                n = (*n2).to_owned();
            } else if let Some((_, m2)) = IMPORT_MAPPING.iter().find(|(a, _)| *a == m) {
                written = Some((m.clone(), n.clone()));
                m = (*m2).to_owned();
            }
        }
        let imp = Import {
            offset: self.src.off(self.op_offset),
            op: Op::from_byte(self.src.data[self.op_offset]).unwrap_or(Op::Global),
            module: m,
            name: n,
            written,
            protocol: self.proto,
            truncated,
            ext_code: ext,
        };
        self.imports.push(imp);
        self.push_node(Node::Global(self.imports.len() - 1))
    }

    fn record_call(
        &mut self,
        op: Op,
        kind: CallKind,
        callee: NodeId,
        args: Option<NodeId>,
        kwargs: Option<NodeId>,
    ) -> R<NodeId> {
        let offset = self.src.off(self.op_offset);
        self.calls.push(Call {
            offset,
            op,
            kind,
            callee,
            args,
            kwargs,
        });
        self.push_node(Node::Call(self.calls.len() - 1))
    }

    /// True when a receiver is a plain container made by the pickle, so
    /// APPEND/SETITEM/ADDITEMS are data operations, not method calls.
    fn is_plain(&self, id: NodeId, want: fn(&Node) -> bool) -> bool {
        self.nodes.get(id as usize).is_some_and(want)
    }

    fn run(&mut self) -> R<()> {
        let deadline = self.opts.limits.deadline;
        loop {
            self.op_offset = self.src.pos;
            if self.ops >= self.opts.limits.max_ops {
                return Err(Fail::Budget(format!(
                    "max_ops={}",
                    self.opts.limits.max_ops
                )));
            }
            if self.ops & 0xffff == 0
                && let Some(d) = deadline
                && std::time::Instant::now() >= d
            {
                return Err(Fail::Budget("time".into()));
            }
            let b = self.src.read(1)?[0];
            let Some(op) = Op::from_byte(b) else {
                return err(format!("invalid load key, '\\x{b:02x}'"));
            };
            self.ops += 1;
            self.op_counts[b as usize] += 1;
            if op.protocol() > self.proto && self.first_proto.is_some() && op != Op::Proto {
                let a = crate::Anomaly::OpcodeAboveProtocol {
                    offset: self.src.off(self.op_offset),
                    op,
                    protocol: self.proto,
                };
                if self.src.anomalies.len() < 1000 {
                    self.src.anomalies.push(a);
                }
            }
            if self.step(op)? {
                return Ok(());
            }
        }
    }

    /// Execute one opcode; true at STOP.
    fn step(&mut self, op: Op) -> R<bool> {
        match op {
            Op::Proto => {
                let p = self.src.read(1)?[0];
                if p > HIGHEST_PROTOCOL {
                    return err(format!("unsupported pickle protocol: {p}"));
                }
                if self.ops > 1 || self.first_proto.is_some() {
                    self.src.anomalies.push(Anomaly::LateProto {
                        offset: self.src.off(self.op_offset),
                        protocol: p,
                    });
                }
                if self.first_proto.is_none() {
                    self.first_proto = Some(p);
                }
                self.proto = p;
            }
            Op::Frame => {
                let len = le_u64(self.src.read(8)?);
                if len > i64::MAX as u64 {
                    return err("FRAME length exceeds system's maximum");
                }
                self.src.frame(len, self.op_offset)?;
            }
            Op::Stop => {
                let v = self.pop()?;
                self.result = Some(v);
                return Ok(true);
            }
            Op::Mark => {
                if self.marks.len() >= self.opts.limits.max_marks {
                    return Err(Fail::Budget(format!(
                        "max_marks={}",
                        self.opts.limits.max_marks
                    )));
                }
                self.marks.push(self.stack.len());
            }
            Op::Pop => {
                let len = self.stack.len();
                if self.marks.last() == Some(&len) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            Op::PopMark => {
                let m = self.marker()?;
                self.stack.truncate(m);
            }
            Op::Dup => {
                let t = self.top()?;
                self.push_id(t)?;
            }
            Op::None => self.push(Node::None)?,
            Op::NewTrue => self.push(Node::Bool(true))?,
            Op::NewFalse => self.push(Node::Bool(false))?,
            Op::Int => {
                let l = self.line_str()?;
                let t = l.trim_end_matches('\0');
                let node = if t == "00" {
                    Node::Bool(false)
                } else if t == "01" {
                    Node::Bool(true)
                } else {
                    match parse_int_literal(t) {
                        Some(v) => Node::Int(Int::from_i128(v)),
                        None => {
                            self.src.anomalies.push(Anomaly::UnparsedLiteral {
                                offset: self.src.off(self.op_offset),
                                op,
                            });
                            Node::Int(Int::Unparsed)
                        }
                    }
                };
                self.push(node)?;
            }
            Op::Long => {
                let l = self.line_str()?;
                let t = l.trim_end_matches('L');
                let node = match parse_int_literal(t) {
                    Some(v) => Int::from_i128(v),
                    None if t
                        .trim()
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '-' || c == '+') =>
                    {
                        Int::Big {
                            bytes: t.len() as u64 / 2,
                        }
                    }
                    None => {
                        self.src.anomalies.push(Anomaly::UnparsedLiteral {
                            offset: self.src.off(self.op_offset),
                            op,
                        });
                        Int::Unparsed
                    }
                };
                self.push(Node::Int(node))?;
            }
            Op::BinInt => {
                let b = self.src.read(4)?;
                let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                self.push(Node::Int(Int::Small(v as i64)))?;
            }
            Op::BinInt1 => {
                let v = self.src.read(1)?[0];
                self.push(Node::Int(Int::Small(v as i64)))?;
            }
            Op::BinInt2 => {
                let b = self.src.read(2)?;
                self.push(Node::Int(Int::Small(
                    u16::from_le_bytes([b[0], b[1]]) as i64
                )))?;
            }
            Op::Long1 => {
                let n = self.src.read(1)?[0] as usize;
                let b = self.src.read(n)?;
                self.push(Node::Int(decode_long(b)))?;
            }
            Op::Long4 => {
                let b = self.src.read(4)?;
                let n = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if n < 0 {
                    return err("LONG pickle has negative byte count");
                }
                let (s, n) = self.src.read_into(n as u64)?;
                let v = decode_long(&self.src.data[s..s + n]);
                self.push(Node::Int(v))?;
            }
            Op::Float => {
                let l = self.line_str()?;
                let v = l.trim().parse::<f64>().unwrap_or(f64::NAN);
                self.push(Node::Float(v))?;
            }
            Op::BinFloat => {
                let b = self.src.read(8)?;
                let v = f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                self.push(Node::Float(v))?;
            }
            Op::String => {
                let l = self.src.readline()?;
                // CPython: strip one pair of matching quotes, else error.
                let body =
                    if l.len() >= 2 && (l[0] == b'\'' || l[0] == b'"') && l[l.len() - 1] == l[0] {
                        &l[1..l.len() - 1]
                    } else {
                        return err("the STRING opcode argument must be quoted");
                    };
                let bytes = unescape_bytes(body);
                let n = self.text_latin1(&bytes)?;
                self.push(n)?;
            }
            Op::BinString | Op::ShortBinString => {
                let n = if op == Op::BinString {
                    let b = self.src.read(4)?;
                    let n = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    if n < 0 {
                        return err("BINSTRING pickle has negative byte count");
                    }
                    n as usize
                } else {
                    self.src.read(1)?[0] as usize
                };
                let b = self.src.read(n)?;
                let node = self.text_latin1(b)?;
                self.push(node)?;
            }
            Op::Unicode => {
                let l = self.src.readline()?;
                let s = raw_unicode_escape(l);
                let node = self.text(s.as_bytes())?;
                self.push(node)?;
            }
            Op::BinUnicode | Op::ShortBinUnicode | Op::BinUnicode8 => {
                let n = match op {
                    Op::BinUnicode => le_u64(self.src.read(4)?),
                    Op::ShortBinUnicode => self.src.read(1)?[0] as u64,
                    _ => le_u64(self.src.read(8)?),
                };
                if n > i64::MAX as u64 {
                    return err("BINUNICODE8 exceeds system's maximum size");
                }
                if n > (self.src.data.len() - self.src.pos) as u64 {
                    return err("pickle data was truncated");
                }
                let b = self.src.read(n as usize)?;
                let node = self.text(b)?;
                self.push(node)?;
            }
            Op::BinBytes | Op::ShortBinBytes | Op::BinBytes8 | Op::ByteArray8 => {
                let n = match op {
                    Op::BinBytes => le_u64(self.src.read(4)?),
                    Op::ShortBinBytes => self.src.read(1)?[0] as u64,
                    _ => le_u64(self.src.read(8)?),
                };
                if n > i64::MAX as u64 {
                    return err("BINBYTES exceeds system's maximum size");
                }
                let (s, n) = self.src.read_into(n)?;
                let node = self.blob(s, n, op == Op::ByteArray8)?;
                self.push(node)?;
            }
            Op::EmptyTuple => self.push(Node::Tuple(Box::new([])))?,
            Op::EmptyList => self.push(Node::List(Vec::new()))?,
            Op::EmptyDict => self.push(Node::Dict(Vec::new()))?,
            Op::EmptySet => self.push(Node::Set(Vec::new()))?,
            Op::Tuple => {
                let items = self.pop_mark_items()?;
                self.push(Node::Tuple(items.into()))?;
            }
            Op::Tuple1 | Op::Tuple2 | Op::Tuple3 => {
                let n = match op {
                    Op::Tuple1 => 1,
                    Op::Tuple2 => 2,
                    _ => 3,
                };
                if self.stack.len() < self.fence() + n {
                    return err("unpickling stack underflow");
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Node::Tuple(items.into()))?;
            }
            Op::List => {
                let items = self.pop_mark_items()?;
                self.push(Node::List(items))?;
            }
            Op::FrozenSet => {
                let items = self.pop_mark_items()?;
                self.push(Node::FrozenSet(items))?;
            }
            Op::Dict => {
                let items = self.pop_mark_items()?;
                if items.len() % 2 != 0 {
                    return err("odd number of items for DICT");
                }
                let pairs = items.chunks(2).map(|c| (c[0], c[1])).collect();
                self.push(Node::Dict(pairs))?;
            }
            Op::Append | Op::Appends => {
                let x = if op == Op::Append {
                    self.stack.len().saturating_sub(1)
                } else {
                    self.marker()?
                };
                let len = self.stack.len();
                if x > len || x <= self.fence() {
                    return err("unpickling stack underflow");
                }
                if len == x {
                    return Ok(false);
                }
                let items = self.stack.split_off(x);
                let target = self.stack[x - 1];
                if self.is_plain(target, |n| matches!(n, Node::List(_))) {
                    if let Some(Node::List(v)) = self.nodes.get_mut(target as usize) {
                        v.extend(items);
                    }
                } else {
                    let args = self.push_node(Node::Tuple(items.into()))?;
                    self.record_call(op, CallKind::Append, target, Some(args), None)?;
                }
            }
            Op::SetItem | Op::SetItems => {
                let x = if op == Op::SetItem {
                    self.stack.len().saturating_sub(2)
                } else {
                    self.marker()?
                };
                let len = self.stack.len();
                if x > len || x <= self.fence() || (op == Op::SetItem && len < 3) {
                    return err("unpickling stack underflow");
                }
                if len == x {
                    return Ok(false);
                }
                if !(len - x).is_multiple_of(2) {
                    return err("odd number of items for SETITEMS");
                }
                let items = self.stack.split_off(x);
                let target = self.stack[x - 1];
                if self.is_plain(target, |n| matches!(n, Node::Dict(_))) {
                    if let Some(Node::Dict(v)) = self.nodes.get_mut(target as usize) {
                        v.extend(items.chunks(2).map(|c| (c[0], c[1])));
                    }
                } else {
                    let args = self.push_node(Node::Tuple(items.into()))?;
                    self.record_call(op, CallKind::SetItem, target, Some(args), None)?;
                }
            }
            Op::AddItems => {
                let x = self.marker()?;
                let len = self.stack.len();
                if x > len || x <= self.fence() {
                    return err("unpickling stack underflow");
                }
                if len == x {
                    return Ok(false);
                }
                let items = self.stack.split_off(x);
                let target = self.stack[x - 1];
                if self.is_plain(target, |n| matches!(n, Node::Set(_))) {
                    if let Some(Node::Set(v)) = self.nodes.get_mut(target as usize) {
                        v.extend(items);
                    }
                } else {
                    let args = self.push_node(Node::Tuple(items.into()))?;
                    self.record_call(op, CallKind::AddItems, target, Some(args), None)?;
                }
            }
            Op::Get => {
                let l = self.line_str()?;
                match parse_int_literal(&l) {
                    Some(k) if k >= 0 => self.memo_get(k as u64)?,
                    _ => return err("GET argument is not a valid index"),
                }
            }
            Op::BinGet => {
                let k = self.src.read(1)?[0] as u64;
                self.memo_get(k)?;
            }
            Op::LongBinGet => {
                let k = le_u64(self.src.read(4)?);
                self.memo_get(k)?;
            }
            Op::Put => {
                let l = self.line_str()?;
                let k = match parse_int_literal(&l) {
                    Some(k) if k < 0 => return err("negative PUT argument"),
                    Some(k) => k as u64,
                    None => return err("PUT argument is not an integer"),
                };
                let t = self.top()?;
                self.memo_put(k, t)?;
            }
            Op::BinPut => {
                let k = self.src.read(1)?[0] as u64;
                let t = self.top()?;
                self.memo_put(k, t)?;
            }
            Op::LongBinPut => {
                let k = le_u64(self.src.read(4)?);
                let t = self.top()?;
                self.memo_put(k, t)?;
            }
            Op::Memoize => {
                let t = self.top()?;
                let k = self.memo.len() as u64;
                self.memo_put(k, t)?;
            }
            Op::Global => {
                let m = self.src.readline()?;
                if m.is_empty() {
                    return err("pickle data was truncated (empty GLOBAL module)");
                }
                let module = self.global_text(m)?;
                let n = self.src.readline()?;
                if n.is_empty() {
                    return err("pickle data was truncated (empty GLOBAL name)");
                }
                let name = self.global_text(n)?;
                let g = self.find_class(module, name, false, None)?;
                self.push_id(g)?;
            }
            Op::StackGlobal => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (ms, mt) = self.name_operand(module)?;
                let (ns, nt) = self.name_operand(name)?;
                let g = self.find_class(ms, ns, mt || nt, None)?;
                self.push_id(g)?;
            }
            Op::Inst => {
                let mark = self.marker()?;
                let m = self.src.readline()?;
                if m.is_empty() {
                    return err("pickle data was truncated (empty INST module)");
                }
                let module = self.ascii_text(m)?;
                let n = self.src.readline()?;
                if n.is_empty() {
                    return err("pickle data was truncated (empty INST name)");
                }
                let name = self.ascii_text(n)?;
                let cls = self.find_class(module, name, false, None)?;
                let items = self.stack.split_off(mark.min(self.stack.len()));
                let args = self.push_node(Node::Tuple(items.into()))?;
                let r = self.record_call(op, CallKind::Inst, cls, Some(args), None)?;
                self.push_id(r)?;
            }
            Op::Obj => {
                let items = self.pop_mark_items()?;
                let Some((&cls, rest)) = items.split_first() else {
                    return err("unpickling stack underflow (OBJ without class)");
                };
                let args = self.push_node(Node::Tuple(rest.into()))?;
                let r = self.record_call(op, CallKind::Obj, cls, Some(args), None)?;
                self.push_id(r)?;
            }
            Op::Ext1 | Op::Ext2 | Op::Ext4 => {
                let code = match op {
                    Op::Ext1 => self.src.read(1)?[0] as u32,
                    Op::Ext2 => {
                        u16::from_le_bytes(self.src.read(2)?.try_into().unwrap_or([0, 0])) as u32
                    }
                    _ => {
                        let b = self.src.read(4)?;
                        let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        if v <= 0 {
                            return err("EXT specifies code <= 0");
                        }
                        v as u32
                    }
                };
                if code == 0 {
                    return err("EXT specifies code <= 0");
                }
                let g = self.find_class(String::new(), String::new(), false, Some(code))?;
                self.push_id(g)?;
            }
            Op::Reduce => {
                let args = self.pop()?;
                let callee = self.pop()?;
                let r = self.record_call(op, CallKind::Reduce, callee, Some(args), None)?;
                self.push_id(r)?;
            }
            Op::NewObj => {
                let args = self.pop()?;
                let cls = self.pop()?;
                let r = self.record_call(op, CallKind::NewObj, cls, Some(args), None)?;
                self.push_id(r)?;
            }
            Op::NewObjEx => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                let r = self.record_call(op, CallKind::NewObjEx, cls, Some(args), Some(kwargs))?;
                self.push_id(r)?;
            }
            Op::Build => {
                let state = self.pop()?;
                let inst = self.top()?;
                self.record_call(op, CallKind::Build, inst, Some(state), None)?;
                if self.src.view == ReadView::Joblib && self.is_joblib_wrapper(inst) {
                    self.joblib_array(state)?;
                }
            }
            Op::PersId => {
                let l = self.src.readline()?;
                let pid = self.ascii_text(l)?;
                let pid = self.push_node(Node::Str(Text {
                    len: pid.len() as u64,
                    text: pid.into(),
                }))?;
                self.persistent(op, pid)?;
            }
            Op::BinPersId => {
                let pid = self.pop()?;
                self.persistent(op, pid)?;
            }
            Op::NextBuffer => self.push(Node::Buffer)?,
            Op::ReadonlyBuffer => {
                self.top()?;
            }
        }
        Ok(false)
    }

    fn persistent(&mut self, op: Op, pid: NodeId) -> R<()> {
        let offset = self.src.off(self.op_offset);
        self.persistent_ids.push(PersistentRef { offset, op, pid });
        let n = self.push_node(Node::Persistent(self.persistent_ids.len() - 1))?;
        self.push_id(n)
    }

    /// GLOBAL lines are decoded as UTF-8 (strict) by CPython.
    fn global_text(&mut self, b: &[u8]) -> R<String> {
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => err("UnicodeDecodeError in GLOBAL name"),
        }
    }

    /// INST and PERSID lines are decoded as ASCII (strict) by CPython.
    fn ascii_text(&mut self, b: &[u8]) -> R<String> {
        if b.is_ascii() {
            Ok(String::from_utf8_lossy(b).into_owned())
        } else {
            err("UnicodeDecodeError: INST/PERSID name is not ASCII")
        }
    }

    /// STACK_GLOBAL operands must be `str`.
    fn name_operand(&mut self, id: NodeId) -> R<(String, bool)> {
        match self.nodes.get(id as usize) {
            Some(Node::Str(t)) => Ok((t.text.to_string(), t.is_truncated())),
            Some(Node::Call(_)) | Some(Node::Persistent(_)) => {
                // A computed value might be a str at run time: we cannot
                // name the global. Keep going with a placeholder the policy
                // treats as unknown.
                Ok(("<computed>".into(), true))
            }
            _ => err("STACK_GLOBAL requires str"),
        }
    }

    /// Is `id` an object made by calling `joblib.numpy_pickle.NumpyArrayWrapper`?
    fn is_joblib_wrapper(&self, id: NodeId) -> bool {
        let Some(Node::Call(k)) = self.nodes.get(id as usize) else {
            return false;
        };
        let Some(c) = self.calls.get(*k) else {
            return false;
        };
        matches!(self.nodes.get(c.callee as usize), Some(Node::Global(g))
            if self.imports.get(*g).is_some_and(Import::is_joblib_array_wrapper))
    }

    /// `NumpyArrayWrapper.read_array`: skip the array's bytes, or analyse
    /// the inner pickle of an object array. What cannot be sized exactly
    /// stops the analysis as a budget (inconclusive), never as an error.
    fn joblib_array(&mut self, state: NodeId) -> R<()> {
        let unknown = |why: &str| Err(Fail::Budget(format!("joblib array: {why}")));
        if self.src.frame_end.is_some_and(|fe| self.src.pos < fe) {
            return unknown("read inside a frame (not modelled)");
        }
        self.src.frame_end = None;
        let Some(Node::Dict(items)) = self.nodes.get(state as usize) else {
            return unknown("state is not a dict");
        };
        let field = |name: &str| {
            items
                .iter()
                .rev()
                .find_map(|&(k, v)| match self.nodes.get(k as usize) {
                    Some(Node::Str(t)) if &*t.text == name => Some(v),
                    _ => None,
                })
        };
        let (Some(dtype), Some(shape)) = (field("dtype"), field("shape")) else {
            return unknown("no dtype or shape");
        };
        let align = field("numpy_array_alignment_bytes");
        let Some((itemsize, object)) = self.dtype_size(dtype, 0) else {
            return unknown("dtype not understood");
        };
        if object {
            // A fresh pure-Python Unpickler on the file: one whole stream.
            let start = self.src.pos;
            let inner = run_stream(
                self.src.data,
                start,
                self.src.base,
                ReadView::Linear,
                self.opts,
            );
            match inner.stop {
                StopReason::Stop => {}
                StopReason::Error { message, .. } => {
                    return err(format!("object array: {message}"));
                }
                StopReason::Budget { limit, .. } => return Err(Fail::Budget(limit)),
            }
            self.inline_pickles.push(self.src.off(start));
            self.src.pos = (inner.end - self.src.base) as usize;
            return Ok(());
        }
        let Some(Node::Tuple(dims)) = self.nodes.get(shape as usize) else {
            return unknown("shape is not a tuple");
        };
        let mut count: u64 = 1;
        for &d in dims.iter() {
            let n = match self.nodes.get(d as usize) {
                Some(Node::Int(i)) => i.as_i128().and_then(|v| u64::try_from(v).ok()),
                _ => None,
            };
            let Some(n) = n else {
                return unknown("shape is not non-negative integers");
            };
            count = count.saturating_mul(n);
        }
        let size = count.saturating_mul(itemsize);
        let has_align = match align.map(|a| self.nodes.get(a as usize)) {
            None | Some(Some(Node::None)) => false,
            Some(Some(Node::Int(_))) => true,
            _ => return unknown("alignment is not an int"),
        };
        if has_align {
            let pad = *self.src.read(1)?.first().unwrap_or(&0) as usize;
            self.src.read(pad)?;
        }
        let avail = (self.src.data.len() - self.src.pos) as u64;
        if size > avail {
            return err(format!(
                "joblib array data truncated: {size} bytes wanted, {avail} left"
            ));
        }
        self.src.pos += size as usize;
        Ok(())
    }

    /// Item size and `hasobject` of a `numpy.dtype(str, ...)` value, with
    /// the state its BUILD gave it (which decides flexible sizes and fields).
    fn dtype_size(&self, id: NodeId, depth: usize) -> Option<(u64, bool)> {
        if depth > 8 {
            return None;
        }
        let Some(Node::Call(k)) = self.nodes.get(id as usize) else {
            return None;
        };
        let c = self.calls.get(*k)?;
        let named = matches!(self.nodes.get(c.callee as usize), Some(Node::Global(g))
            if self.imports.get(*g).is_some_and(|i| i.module == "numpy" && i.name == "dtype"));
        if !named || c.kind != CallKind::Reduce {
            return None;
        }
        let Some(Node::Tuple(args)) = self.nodes.get(c.args? as usize) else {
            return None;
        };
        let Some(Node::Str(t)) = self.nodes.get(*args.first()? as usize) else {
            return None;
        };
        let code = t.text.trim_start_matches(['<', '>', '|', '=']);
        let (kind, digits) = code.split_at(code.find(|ch: char| ch.is_ascii_digit())?);
        let n: u64 = digits.parse().ok()?;
        // The last BUILD on this dtype: (version, order, subarray, names,
        // fields, elsize, alignment, flags[, metadata]).
        let st = self
            .calls
            .iter()
            .rev()
            .find(|b| b.kind == CallKind::Build && b.callee == id)
            .and_then(|b| b.args);
        let mut elsize = -1i128;
        if let Some(st) = st {
            let Some(Node::Tuple(v)) = self.nodes.get(st as usize) else {
                return None;
            };
            let node = |i: usize| v.get(i).and_then(|&f| self.nodes.get(f as usize));
            elsize = match node(5) {
                Some(Node::Int(i)) => i.as_i128()?,
                _ => return None,
            };
            if !matches!(node(2), Some(Node::None)) {
                return None; // subarray dtypes: not modelled
            }
            match node(4) {
                Some(Node::None) => {}
                // Structured: {name: (dtype, offset[, title])}; the record
                // holds objects if any field does; its size is elsize.
                Some(Node::Dict(fields)) if kind == "V" && elsize >= 0 => {
                    let mut object = false;
                    for &(_, f) in fields {
                        let Some(Node::Tuple(t)) = self.nodes.get(f as usize) else {
                            return None;
                        };
                        object |= self.dtype_size(*t.first()?, depth + 1)?.1;
                    }
                    return Some((elsize as u64, object));
                }
                _ => return None,
            }
        }
        match kind {
            "O" => Some((8, true)),
            "b" | "i" | "u" | "f" | "c" | "M" | "m" if elsize < 0 => Some((n, false)),
            "S" | "V" => Some((if elsize >= 0 { elsize as u64 } else { n }, false)),
            "U" => Some((
                if elsize >= 0 {
                    elsize as u64
                } else {
                    n.checked_mul(4)?
                },
                false,
            )),
            _ => None,
        }
    }
}
