/*!
ONNX models (`ModelProto`, protobuf): the parts that reach outside the
model — external-data locations, operator domains a runtime must load code
for, model-local functions — and the tensor payload sizes.

Field numbers are those of `onnx/onnx.proto` (onnx 1.23). The protobuf
wire format is walked here rather than decoded with a generated message
type: a decoder would copy every `raw_data` payload (up to 2 GB) into
memory, while what matters is each payload's length and where it is; the
walk is zero-copy, bounds nesting (subgraphs inside attributes), and refuses
what the wire format does not allow (groups, lengths past the end).
*/

use crate::protowire::{Val, W};
use serde::Serialize;

const MAX_DEPTH: usize = 64;
const MAX_ITEMS: usize = 1 << 22;

/// Domains every ONNX runtime implements itself (no custom-op library).
pub const STANDARD_DOMAINS: &[&str] = &[
    "",
    "ai.onnx",
    "ai.onnx.ml",
    "ai.onnx.training",
    "ai.onnx.preview.training",
    "com.microsoft",
    "com.microsoft.nchwc",
    "com.microsoft.experimental",
    "org.pytorch.aten",
];

#[derive(Clone, Debug, Default, Serialize)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub data_type: i32,
    /// Length of `raw_data`, when present.
    pub raw_len: Option<u64>,
    /// Elements in the typed fields (`float_data`, `int64_data`, ...).
    pub typed: u64,
    /// `external_data` entries (`location`, `offset`, `length`, `checksum`).
    pub external: Vec<(String, String)>,
    /// `data_location == EXTERNAL`.
    pub is_external: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub domain: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Onnx {
    pub ir_version: i64,
    pub opsets: Vec<(String, i64)>,
    pub nodes: Vec<Node>,
    /// Model-local functions, as (domain, name).
    pub functions: Vec<(String, String)>,
    pub tensors: Vec<Tensor>,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Reader {
    out: Onnx,
    items: usize,
}

impl Reader {
    fn count(&mut self) -> Result<(), String> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(format!(
                "more than {MAX_ITEMS} nodes, tensors and attributes"
            ));
        }
        Ok(())
    }

    fn model(&mut self, d: &[u8]) -> Result<(), String> {
        let mut w = W { d, p: 0 };
        while let Some((f, v)) = w.next()? {
            match (f, v) {
                (1, Val::Int(i)) => self.out.ir_version = i as i64,
                (7, Val::Bytes(b)) => self.graph(b, 1)?,
                (8, Val::Bytes(b)) => {
                    let mut o = W { d: b, p: 0 };
                    let (mut dom, mut ver) = (String::new(), 0i64);
                    while let Some((f, v)) = o.next()? {
                        match (f, v) {
                            (1, Val::Bytes(s)) => dom = text(s),
                            (2, Val::Int(i)) => ver = i as i64,
                            _ => {}
                        }
                    }
                    self.out.opsets.push((dom, ver));
                }
                (20, Val::Bytes(b)) => {
                    // TrainingInfoProto: initialization (1), algorithm (2).
                    let mut t = W { d: b, p: 0 };
                    while let Some((f, v)) = t.next()? {
                        if let (1 | 2, Val::Bytes(g)) = (f, v) {
                            self.graph(g, 2)?;
                        }
                    }
                }
                (25, Val::Bytes(b)) => self.function(b, 1)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn graph(&mut self, d: &[u8], depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("graphs nested deeper than {MAX_DEPTH}"));
        }
        let mut w = W { d, p: 0 };
        while let Some((f, v)) = w.next()? {
            match (f, v) {
                (1, Val::Bytes(b)) => self.node(b, depth)?,
                (5, Val::Bytes(b)) => self.tensor(b)?,
                (15, Val::Bytes(b)) => self.sparse(b)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn function(&mut self, d: &[u8], depth: usize) -> Result<(), String> {
        let mut w = W { d, p: 0 };
        let (mut name, mut domain) = (String::new(), String::new());
        while let Some((f, v)) = w.next()? {
            match (f, v) {
                (1, Val::Bytes(s)) => name = text(s),
                (10, Val::Bytes(s)) => domain = text(s),
                (7, Val::Bytes(b)) => self.node(b, depth + 1)?,
                _ => {}
            }
        }
        self.out.functions.push((domain, name));
        Ok(())
    }

    fn node(&mut self, d: &[u8], depth: usize) -> Result<(), String> {
        self.count()?;
        let mut w = W { d, p: 0 };
        let mut n = Node::default();
        while let Some((f, v)) = w.next()? {
            match (f, v) {
                (3, Val::Bytes(s)) => n.name = text(s),
                (4, Val::Bytes(s)) => n.op_type = text(s),
                (7, Val::Bytes(s)) => n.domain = text(s),
                (5, Val::Bytes(b)) => self.attribute(b, depth)?,
                _ => {}
            }
        }
        self.out.nodes.push(n);
        Ok(())
    }

    fn attribute(&mut self, d: &[u8], depth: usize) -> Result<(), String> {
        self.count()?;
        let mut w = W { d, p: 0 };
        while let Some((f, v)) = w.next()? {
            match (f, v) {
                (5 | 10, Val::Bytes(b)) => self.tensor(b)?,
                (6 | 11, Val::Bytes(b)) => self.graph(b, depth + 1)?,
                (22 | 23, Val::Bytes(b)) => self.sparse(b)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn sparse(&mut self, d: &[u8]) -> Result<(), String> {
        let mut w = W { d, p: 0 };
        while let Some((f, v)) = w.next()? {
            if let (1 | 2, Val::Bytes(b)) = (f, v) {
                self.tensor(b)?;
            }
        }
        Ok(())
    }

    fn tensor(&mut self, d: &[u8]) -> Result<(), String> {
        self.count()?;
        let mut w = W { d, p: 0 };
        let mut t = Tensor::default();
        while let Some((f, v)) = w.next()? {
            match (f, v) {
                (1, Val::Int(i)) => t.dims.push(i as i64),
                (1, Val::Bytes(b)) => {
                    let mut p = W { d: b, p: 0 };
                    while p.p < b.len() {
                        t.dims.push(p.varint()? as i64);
                    }
                }
                (2, Val::Int(i)) => t.data_type = i as i32,
                (8, Val::Bytes(s)) => t.name = text(s),
                (9, Val::Bytes(b)) => t.raw_len = Some(b.len() as u64),
                (13, Val::Bytes(b)) => {
                    let mut e = W { d: b, p: 0 };
                    let (mut k, mut val) = (String::new(), String::new());
                    while let Some((f, v)) = e.next()? {
                        match (f, v) {
                            (1, Val::Bytes(s)) => k = text(s),
                            (2, Val::Bytes(s)) => val = text(s),
                            _ => {}
                        }
                    }
                    t.external.push((k, val));
                }
                (14, Val::Int(i)) => t.is_external = i == 1,
                // Packed typed data: float (4), int32 (5), int64 (7),
                // double (10), uint64 (11); unpacked ones one by one.
                (4 | 5 | 7 | 10 | 11, Val::Int(_)) => t.typed += 1,
                (4, Val::Bytes(b)) => t.typed += b.len() as u64 / 4,
                (10, Val::Bytes(b)) => t.typed += b.len() as u64 / 8,
                (5 | 7 | 11, Val::Bytes(b)) => {
                    t.typed += b.iter().filter(|&&x| x & 0x80 == 0).count() as u64
                }
                (6, Val::Bytes(_)) => t.typed += 1,
                _ => {}
            }
        }
        self.out.tensors.push(t);
        Ok(())
    }
}

/// Bytes per element of an ONNX data type, as (numerator, denominator):
/// 4-bit types pack two elements per byte. None for strings and unknowns.
pub fn element_size(data_type: i32) -> Option<(u64, u64)> {
    Some(match data_type {
        1 | 6 | 12 => (4, 1),
        2 | 3 | 9 | 17..=20 | 24 => (1, 1),
        4 | 5 | 10 | 16 => (2, 1),
        7 | 11 | 13 | 14 => (8, 1),
        15 => (16, 1),
        21..=23 => (1, 2),
        25 | 26 => (1, 4),
        _ => return None,
    })
}

/// Whether the bytes start the way every ONNX serializer writes a model:
/// `ir_version` (field 1, varint) first, then a model that walks cleanly
/// and has a graph.
pub fn looks_like_onnx(d: &[u8]) -> bool {
    if d.first() != Some(&0x08) {
        return false;
    }
    let mut w = W { d, p: 0 };
    let mut graph = false;
    let mut first = true;
    loop {
        match w.next() {
            Ok(Some((f, v))) => {
                if first && !matches!((f, &v), (1, Val::Int(1..=64))) {
                    return false;
                }
                first = false;
                if f == 7 && matches!(v, Val::Bytes(_)) {
                    graph = true;
                }
            }
            Ok(None) => return graph,
            Err(_) => return false,
        }
    }
}

/// Read a model.
pub fn read(d: &[u8]) -> Result<Onnx, String> {
    let mut r = Reader {
        out: Onnx::default(),
        items: 0,
    };
    r.model(d)?;
    Ok(r.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(out: &mut Vec<u8>, f: u64, body: &[u8]) {
        out.push(((f << 3) | 2) as u8);
        out.push(body.len() as u8);
        out.extend_from_slice(body);
    }

    #[test]
    fn walks_a_small_model() {
        let mut entry = Vec::new();
        field(&mut entry, 1, b"location");
        field(&mut entry, 2, b"../../etc/passwd");
        let mut t = vec![0x08, 4, 0x10, 1];
        field(&mut t, 8, b"w");
        field(&mut t, 13, &entry);
        t.extend([0x70, 1]);
        let mut node = Vec::new();
        field(&mut node, 4, b"Decrypt");
        field(&mut node, 7, b"com.acme");
        let mut g = Vec::new();
        field(&mut g, 1, &node);
        field(&mut g, 5, &t);
        let mut m = vec![0x08, 9];
        field(&mut m, 7, &g);
        assert!(looks_like_onnx(&m));
        let o = read(&m).unwrap();
        assert_eq!(o.ir_version, 9);
        assert_eq!(o.nodes[0].domain, "com.acme");
        assert_eq!(o.tensors[0].external[0].1, "../../etc/passwd");
        assert!(o.tensors[0].is_external);
        assert_eq!(o.tensors[0].dims, vec![4]);
        // Lengths past the end and groups are refused.
        assert!(read(&[0x08, 9, 0x3a, 0x7f]).is_err());
        assert!(read(&[0x08, 9, 0x3b]).is_err());
        assert!(!looks_like_onnx(b"\x80\x04K\x01."));
    }

    #[test]
    fn deep_subgraphs_are_bounded() {
        // node -> attribute(g) -> graph -> node -> ... nested 200 times.
        let mut g: Vec<u8> = Vec::new();
        for _ in 0..200 {
            let mut attr = Vec::new();
            attr.push((6 << 3) | 2);
            push_len(&mut attr, g.len());
            attr.extend(&g);
            let mut node = Vec::new();
            node.push((5 << 3) | 2);
            push_len(&mut node, attr.len());
            node.extend(&attr);
            let mut ng = Vec::new();
            ng.push((1 << 3) | 2);
            push_len(&mut ng, node.len());
            ng.extend(&node);
            g = ng;
        }
        let mut m = vec![0x08, 9, (7 << 3) | 2];
        push_len(&mut m, g.len());
        m.extend(&g);
        assert!(read(&m).unwrap_err().contains("deeper"));
    }

    fn push_len(out: &mut Vec<u8>, mut n: usize) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
}
