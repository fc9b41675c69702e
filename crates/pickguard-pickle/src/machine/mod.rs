//! The symbolic unpickler: one stream, one read view.

use crate::op::Op;
use crate::value::{Blob, Int, Node, NodeId, Text};
use crate::{
    Anomaly, Call, CallKind, Import, Options, PersistentRef, ReadView, StopReason, Stream,
    names::{IMPORT_MAPPING, NAME_MAPPING},
};
use std::collections::HashMap;

mod joblib;
mod literal;
mod memo;
mod src;

use literal::*;
use memo::Memo;
use src::Src;

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
}
