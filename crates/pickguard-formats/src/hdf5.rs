//! The root attributes of an HDF5 file, read as the HDF5 library reads
//! them, for Keras `.h5` models: `model_config` (the JSON Keras rebuilds
//! the model from) and every other attribute of the root group.
//!
//! Why not a library: the Rust HDF5 crates bind libhdf5 (C, and a parser of
//! attacker-controlled files in our process), and a scanner needs only the
//! root group's attribute messages. This reader follows the file-format
//! specification for that path only (superblock v0–v3, object headers v1
//! and v2 with continuations, attribute messages v1–v3, fixed and
//! variable-length strings from the global heap) and refuses everything
//! else with [`Hdf5Error::Unsupported`], so a caller never mistakes what it
//! did not read for what is not there. Every count and address is bounded by
//! the file and by [`MAX_STEPS`].

/// HDF5's signature; the superblock starts at 0, 512, 1024, 2048, ...
pub const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// Messages, continuation blocks and heap objects one read may visit.
pub const MAX_STEPS: usize = 1 << 20;

/// An attribute of the root group.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    pub name: String,
    pub value: Value,
}

/// An attribute's value, as far as a scanner needs it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Fixed- or variable-length strings, one per element (a scalar: one).
    Strings(Vec<Vec<u8>>),
    /// Another datatype (numbers, compounds...), by its HDF5 class number.
    Other { class: u8 },
}

impl Value {
    /// The single string of a scalar string attribute.
    pub fn as_str_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Strings(v) if v.len() == 1 => Some(&v[0]),
            _ => None,
        }
    }
}

/// Why the attributes could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hdf5Error {
    /// A structure this reader does not follow (dense attribute storage,
    /// shared messages, ...): the attributes are unknown, not absent.
    Unsupported(String),
    /// Not valid HDF5 at that point (the library fails too).
    Malformed(String),
}

impl std::fmt::Display for Hdf5Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hdf5Error::Unsupported(m) => write!(f, "not read: {m}"),
            Hdf5Error::Malformed(m) => write!(f, "malformed: {m}"),
        }
    }
}

type Res<T> = Result<T, Hdf5Error>;

fn bad<T>(m: impl Into<String>) -> Res<T> {
    Err(Hdf5Error::Malformed(m.into()))
}

fn unsupported<T>(m: impl Into<String>) -> Res<T> {
    Err(Hdf5Error::Unsupported(m.into()))
}

/// Where the superblock starts: the first signature at 0 or a power of two
/// from 512, as the library searches.
pub fn superblock_offset(data: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    loop {
        if data.get(at..at + 8)? == SIGNATURE {
            return Some(at);
        }
        at = if at == 0 { 512 } else { at.checked_mul(2)? };
    }
}

struct File<'a> {
    d: &'a [u8],
    /// Addresses are relative to the superblock (the library rebases them
    /// onto where it found the signature).
    base: usize,
    so: usize,
    sl: usize,
    steps: usize,
    /// Global heap collections read so far: object index -> (offset, size).
    heaps: std::collections::HashMap<usize, std::collections::HashMap<u64, (usize, usize)>>,
}

fn le(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

impl<'a> File<'a> {
    fn bytes(&self, at: usize, n: usize) -> Res<&'a [u8]> {
        at.checked_add(n)
            .and_then(|e| self.d.get(at..e))
            .map_or_else(|| bad(format!("{n} bytes at {at} run past the end")), Ok)
    }

    fn uint(&self, at: usize, n: usize) -> Res<u64> {
        self.bytes(at, n).map(le)
    }

    /// A file address, absolute; `None` for the undefined address.
    fn addr(&self, rel: u64) -> Res<Option<usize>> {
        let undefined = if self.so == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * self.so)) - 1
        };
        if rel == undefined {
            return Ok(None);
        }
        let abs = usize::try_from(rel)
            .ok()
            .and_then(|r| r.checked_add(self.base))
            .filter(|&a| a < self.d.len());
        match abs {
            Some(a) => Ok(Some(a)),
            None => bad(format!("address {rel} lies outside the file")),
        }
    }

    fn step(&mut self) -> Res<()> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return unsupported(format!("more than {MAX_STEPS} structures"));
        }
        Ok(())
    }
}

/// The root group's attributes, in header order.
pub fn root_attributes(data: &[u8]) -> Res<Vec<Attribute>> {
    Ok(attributes(data, false)?
        .into_iter()
        .filter(|(p, _)| p == "/")
        .map(|(_, a)| a)
        .collect())
}

/// The attributes of every object reachable from the root group by hard
/// links (`all`), or of the root only: (object path, attribute), the root
/// first. A group whose links or an object whose attributes this reader
/// does not follow is an error, never a silent gap.
pub fn attributes(data: &[u8], all: bool) -> Res<Vec<(String, Attribute)>> {
    let base = superblock_offset(data).ok_or(Hdf5Error::Malformed("no HDF5 signature".into()))?;
    let mut f = File {
        d: data,
        base,
        so: 8,
        sl: 8,
        steps: 0,
        heaps: Default::default(),
    };
    let version = f.uint(base + 8, 1)? as u8;
    let root = match version {
        0 | 1 => {
            f.so = f.uint(base + 13, 1)? as usize;
            f.sl = f.uint(base + 14, 1)? as usize;
            check_sizes(&f)?;
            // 24 fixed bytes (v1: 4 more), then base, free-space, EOF and
            // driver addresses, then the root symbol-table entry: link name
            // offset, object header address.
            let p = base + if version == 1 { 28 } else { 24 } + 4 * f.so + f.so;
            f.uint(p, f.so)?
        }
        2 | 3 => {
            f.so = f.uint(base + 9, 1)? as usize;
            f.sl = f.uint(base + 10, 1)? as usize;
            check_sizes(&f)?;
            // base, extension, EOF, then the root object header address.
            f.uint(base + 12 + 3 * f.so, f.so)?
        }
        v => return unsupported(format!("superblock version {v}")),
    };
    let root = f
        .addr(root)?
        .ok_or(Hdf5Error::Malformed("no root group".into()))?;
    let mut out = Vec::new();
    let mut todo = vec![("/".to_owned(), root)];
    let mut seen = std::collections::HashSet::new();
    while let Some((path, at)) = todo.pop() {
        f.step()?;
        if !seen.insert(at) {
            continue; // a second hard link to an object already read
        }
        let mut children = Vec::new();
        for (ty, flags, body) in messages(&mut f, at)? {
            match ty {
                // Attribute Info: attributes past the compact limit live in
                // a fractal heap indexed by a v2 B-tree.
                0x0015 => {
                    let iflags = f.uint_in(body, 1, 1)?;
                    let p = 2 + if iflags & 1 != 0 { 2 } else { 0 };
                    if f.addr(f.uint_in(body, p, f.so)?)?.is_some() {
                        return unsupported(format!(
                            "attributes of {path} in dense storage (fractal heap)"
                        ));
                    }
                }
                0x000C => {
                    if flags & 0x02 != 0 {
                        return unsupported(format!("a shared attribute message on {path}"));
                    }
                    out.push((path.clone(), attribute(&mut f, body)?));
                }
                // Link Info: links past the compact limit, in a fractal heap.
                0x0002 if all => {
                    let lflags = f.uint_in(body, 1, 1)?;
                    let p = 2 + if lflags & 1 != 0 { 8 } else { 0 };
                    if f.addr(f.uint_in(body, p, f.so)?)?.is_some() {
                        return unsupported(format!("links of {path} in dense storage"));
                    }
                }
                0x0006 if all => {
                    if let Some(child) = link(&f, body)? {
                        children.push(child);
                    }
                }
                0x0011 if all => {
                    let (tree, heap) = (f.uint_in(body, 0, f.so)?, f.uint_in(body, f.so, f.so)?);
                    symbol_table(&mut f, tree, heap, &mut children)?;
                }
                _ => {}
            }
        }
        for (name, addr) in children.into_iter().rev() {
            let p = if path == "/" {
                format!("/{name}")
            } else {
                format!("{path}/{name}")
            };
            todo.push((p, addr));
        }
    }
    Ok(out)
}

/// A link message: (name, object address) for a hard link; soft and
/// external links name no object in this file.
fn link(f: &File, m: &[u8]) -> Res<Option<(String, usize)>> {
    if f.uint_in(m, 0, 1)? != 1 {
        return unsupported("link message version");
    }
    let flags = f.uint_in(m, 1, 1)? as u8;
    let mut p = 2;
    let kind = if flags & 0x08 != 0 {
        p += 1;
        f.uint_in(m, 2, 1)?
    } else {
        0
    };
    if flags & 0x04 != 0 {
        p += 8;
    }
    if flags & 0x10 != 0 {
        p += 1;
    }
    let n = 1usize << (flags & 3);
    let len = f.uint_in(m, p, n)? as usize;
    p += n;
    let name = p
        .checked_add(len)
        .and_then(|e| m.get(p..e))
        .ok_or(Hdf5Error::Malformed("link name past the message".into()))?;
    p += len;
    if kind != 0 {
        return Ok(None);
    }
    let at = f
        .addr(f.uint_in(m, p, f.so)?)?
        .ok_or(Hdf5Error::Malformed("a hard link to nowhere".into()))?;
    Ok(Some((String::from_utf8_lossy(name).into_owned(), at)))
}

/// An old-style group: a v1 B-tree of symbol-table nodes, names in a
/// local heap.
fn symbol_table(f: &mut File, tree: u64, heap: u64, out: &mut Vec<(String, usize)>) -> Res<()> {
    let heap = f
        .addr(heap)?
        .ok_or(Hdf5Error::Malformed("a group without a name heap".into()))?;
    if f.bytes(heap, 4)? != b"HEAP" {
        return bad("no local heap where a group's names should be");
    }
    let seg_size = usize::try_from(f.uint(heap + 8, f.sl)?).unwrap_or(usize::MAX);
    let seg = f
        .addr(f.uint(heap + 8 + 2 * f.sl, f.so)?)?
        .ok_or(Hdf5Error::Malformed("a name heap without data".into()))?;
    let names = f.bytes(seg, seg_size)?;
    let mut nodes = vec![tree];
    let mut seen = std::collections::HashSet::new();
    while let Some(node) = nodes.pop() {
        f.step()?;
        let Some(at) = f.addr(node)? else {
            continue; // an empty group
        };
        if !seen.insert(at) {
            return bad("a group's B-tree loops");
        }
        match f.bytes(at, 4)? {
            b"TREE" => {
                if f.uint(at + 4, 1)? != 0 {
                    return bad("a group B-tree node of another type");
                }
                let used = f.uint(at + 6, 2)? as usize;
                // Keys (a heap offset each) and children interleaved,
                // after the two sibling addresses.
                let mut p = at + 8 + 2 * f.so + f.sl;
                for _ in 0..used {
                    f.step()?;
                    nodes.push(f.uint(p, f.so)?);
                    p += f.so + f.sl;
                }
            }
            b"SNOD" => {
                let n = f.uint(at + 6, 2)? as usize;
                let each = 2 * f.so + 24;
                for i in 0..n {
                    f.step()?;
                    let e = at + 8 + i * each;
                    let off = usize::try_from(f.uint(e, f.so)?).unwrap_or(usize::MAX);
                    let name = names
                        .get(off..)
                        .map(|r| &r[..r.iter().position(|&b| b == 0).unwrap_or(r.len())])
                        .ok_or(Hdf5Error::Malformed("a link name outside its heap".into()))?;
                    let obj = f
                        .addr(f.uint(e + f.so, f.so)?)?
                        .ok_or(Hdf5Error::Malformed("a group entry to nowhere".into()))?;
                    out.push((String::from_utf8_lossy(name).into_owned(), obj));
                }
            }
            _ => return bad("a group B-tree points at neither a node nor a symbol table"),
        }
    }
    Ok(())
}

fn check_sizes(f: &File) -> Res<()> {
    if [2, 4, 8].contains(&f.so) && [2, 4, 8].contains(&f.sl) {
        Ok(())
    } else {
        bad(format!("sizes of offsets/lengths {}/{}", f.so, f.sl))
    }
}

impl<'a> File<'a> {
    fn uint_in(&self, b: &[u8], at: usize, n: usize) -> Res<u64> {
        at.checked_add(n)
            .and_then(|e| b.get(at..e))
            .map(le)
            .map_or_else(|| bad("a message is shorter than its fields"), Ok)
    }
}

/// Every message of the object header at `at`, following continuations:
/// (type, flags, body).
fn messages<'a>(f: &mut File<'a>, at: usize) -> Res<Vec<(u16, u8, &'a [u8])>> {
    let mut out = Vec::new();
    let d = f.d;
    // Blocks still to read: (start, end, v2).
    let mut blocks: Vec<(usize, usize, bool)> = Vec::new();
    let v2 = d.get(at..at + 4) == Some(b"OHDR");
    let mut track_order = false;
    if v2 {
        let flags = f.uint(at + 5, 1)? as u8;
        if f.uint(at + 4, 1)? != 2 {
            return unsupported("object header version in OHDR");
        }
        track_order = flags & 0x04 != 0;
        let mut p = at + 6;
        if flags & 0x20 != 0 {
            p += 16;
        }
        if flags & 0x10 != 0 {
            p += 4;
        }
        let n = 1usize << (flags & 3);
        let size = f.uint(p, n)? as usize;
        p += n;
        f.bytes(p, size)?;
        blocks.push((p, p + size, true));
    } else {
        if f.uint(at, 1)? != 1 {
            return bad(format!("no object header at {at}"));
        }
        let size = f.uint(at + 8, 4)? as usize;
        f.bytes(at + 16, size)?;
        blocks.push((at + 16, at + 16 + size, false));
    }
    let mut seen = std::collections::HashSet::new();
    while let Some((start, end, v2)) = blocks.pop() {
        f.step()?;
        if !seen.insert(start) {
            return bad("an object header continues into itself");
        }
        let hdr = if v2 {
            4 + usize::from(track_order) * 2
        } else {
            8
        };
        let mut p = start;
        while p + hdr <= end {
            f.step()?;
            let (ty, size, flags) = if v2 {
                (
                    f.uint(p, 1)? as u16,
                    f.uint(p + 1, 2)? as usize,
                    f.uint(p + 3, 1)? as u8,
                )
            } else {
                (
                    f.uint(p, 2)? as u16,
                    f.uint(p + 2, 2)? as usize,
                    f.uint(p + 4, 1)? as u8,
                )
            };
            let body_at = p + hdr;
            if body_at + size > end {
                return bad("a header message runs past its block");
            }
            let body = &d[body_at..body_at + size];
            if ty == 0x0010 {
                let (a, len) = (f.uint_in(body, 0, f.so)?, f.uint_in(body, f.so, f.sl)?);
                let a = f
                    .addr(a)?
                    .ok_or(Hdf5Error::Malformed("continuation to nowhere".into()))?;
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                f.bytes(a, len)?;
                if v2 {
                    if d.get(a..a + 4) != Some(b"OCHK") || len < 8 {
                        return bad("continuation block without OCHK");
                    }
                    // Signature first, checksum last.
                    blocks.push((a + 4, a + len - 4, true));
                } else {
                    blocks.push((a, a + len, false));
                }
            } else {
                out.push((ty, flags, body));
            }
            p = body_at + size;
        }
    }
    Ok(out)
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// An attribute message.
fn attribute(f: &mut File, m: &[u8]) -> Res<Attribute> {
    let version = f.uint_in(m, 0, 1)?;
    let flags = f.uint_in(m, 1, 1)?;
    let name_size = f.uint_in(m, 2, 2)? as usize;
    let dt_size = f.uint_in(m, 4, 2)? as usize;
    let ds_size = f.uint_in(m, 6, 2)? as usize;
    let (mut p, pad): (usize, fn(usize) -> usize) = match version {
        1 => (8, pad8),
        2 => (8, |n| n),
        3 => (9, |n| n),
        v => return unsupported(format!("attribute message version {v}")),
    };
    if version > 1 && flags & 0x03 != 0 {
        return unsupported("an attribute with a shared datatype or dataspace");
    }
    let field = |p: usize, n: usize| {
        p.checked_add(n)
            .and_then(|e| m.get(p..e))
            .ok_or(Hdf5Error::Malformed(
                "attribute shorter than its fields".into(),
            ))
    };
    let name = field(p, name_size)?;
    p += pad(name_size);
    let dt = field(p, dt_size)?;
    p += pad(dt_size);
    let ds = field(p, ds_size)?;
    p += pad(ds_size);
    let data = m.get(p..).unwrap_or(&[]);
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let name = String::from_utf8_lossy(&name[..end]).into_owned();
    let n = elements(f, ds)?;
    let class = dt.first().map_or(255, |b| b & 0x0f);
    let size = f.uint_in(dt, 4, 4)? as usize;
    let value = match class {
        3 => {
            let need = n.checked_mul(size).filter(|&x| x <= data.len());
            let Some(need) = need else {
                return bad(format!(
                    "attribute {name:?}: string data shorter than declared"
                ));
            };
            Value::Strings(
                data[..need]
                    .chunks(size.max(1))
                    .map(|c| {
                        // Null-padded strings keep NULs inside (numpy strips
                        // only trailing ones; a pickle holds them); a
                        // null-terminated one is read up to its first NUL,
                        // a prefix of this, so the longer reading covers both.
                        let e = c.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                        c[..e].to_vec()
                    })
                    .collect(),
            )
        }
        9 if dt.get(1).is_some_and(|b| b & 0x0f == 1) => {
            // Variable-length string: per element, a length then a global
            // heap ID (collection address, object index).
            let each = 4 + f.so + 4;
            if n.checked_mul(each).is_none_or(|x| x > data.len()) {
                return bad(format!(
                    "attribute {name:?}: string references run past the message"
                ));
            }
            let mut v = Vec::with_capacity(n.min(1024));
            for i in 0..n {
                let e = &data[i * each..(i + 1) * each];
                let len = le(&e[..4]) as usize;
                let coll = le(&e[4..4 + f.so]);
                let idx = le(&e[4 + f.so..]);
                v.push(heap_object(f, coll, idx, len)?);
            }
            Value::Strings(v)
        }
        c => Value::Other { class: c },
    };
    Ok(Attribute { name, value })
}

/// Elements a dataspace message describes.
fn elements(f: &File, ds: &[u8]) -> Res<usize> {
    let version = f.uint_in(ds, 0, 1)?;
    let rank = f.uint_in(ds, 1, 1)? as usize;
    let p = match version {
        1 => 8,
        2 => match f.uint_in(ds, 3, 1)? {
            0 => return Ok(1),
            2 => return Ok(0),
            _ => 4,
        },
        v => return unsupported(format!("dataspace version {v}")),
    };
    let mut n = 1usize;
    for i in 0..rank {
        let dim = f.uint_in(ds, p + i * f.sl, f.sl)?;
        n = usize::try_from(dim)
            .ok()
            .and_then(|d| n.checked_mul(d))
            .filter(|&n| n <= MAX_STEPS)
            .ok_or(Hdf5Error::Unsupported(format!(
                "an attribute of more than {MAX_STEPS} elements"
            )))?;
    }
    Ok(n)
}

/// Object `idx` of the global heap collection at `coll`, `len` bytes of it.
/// Each collection is read once.
fn heap_object(f: &mut File, coll: u64, idx: u64, len: usize) -> Res<Vec<u8>> {
    if len == 0 && coll == 0 {
        return Ok(Vec::new()); // an empty string has no heap object
    }
    let at = f
        .addr(coll)?
        .ok_or(Hdf5Error::Malformed("a string in no heap".into()))?;
    if !f.heaps.contains_key(&at) {
        let objects = collection(f, at)?;
        f.heaps.insert(at, objects);
    }
    let Some(&(data_at, size)) = f.heaps.get(&at).and_then(|c| c.get(&idx)) else {
        return bad(format!("global heap object {idx} not found"));
    };
    if len > size {
        return bad("a string longer than its heap object");
    }
    Ok(f.d[data_at..data_at + len].to_vec())
}

/// The objects of the global heap collection at `at`.
fn collection(f: &mut File, at: usize) -> Res<std::collections::HashMap<u64, (usize, usize)>> {
    if f.bytes(at, 4)? != b"GCOL" {
        return bad(format!("no global heap collection at {at}"));
    }
    let size = usize::try_from(f.uint(at + 8, f.sl)?).unwrap_or(usize::MAX);
    let end = at
        .checked_add(size)
        .filter(|&e| e <= f.d.len())
        .ok_or(Hdf5Error::Malformed(
            "global heap collection past the end".into(),
        ))?;
    let mut out = std::collections::HashMap::new();
    let mut p = at + 8 + f.sl;
    while p + 8 + f.sl <= end {
        f.step()?;
        let id = f.uint(p, 2)?;
        let osize = usize::try_from(f.uint(p + 8, f.sl)?).unwrap_or(usize::MAX);
        let data_at = p + 8 + f.sl;
        if id == 0 {
            break; // free space: the rest of the collection
        }
        if data_at.checked_add(osize).is_none_or(|e| e > end) {
            return bad("a global heap object runs past its collection");
        }
        // Which of two objects with one index the library returns is its
        // own business: such a heap is not read.
        if out.insert(id, (data_at, osize)).is_some() {
            return bad(format!("global heap object {id} appears twice"));
        }
        p = data_at + pad8(osize);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_found_where_the_library_looks() {
        let mut d = vec![0u8; 2048 + 8];
        assert_eq!(superblock_offset(&d), None);
        d[1024..1032].copy_from_slice(SIGNATURE);
        assert_eq!(superblock_offset(&d), Some(1024));
        d[100..108].copy_from_slice(SIGNATURE);
        assert_eq!(superblock_offset(&d), Some(1024), "100 is not searched");
        d[0..8].copy_from_slice(SIGNATURE);
        assert_eq!(superblock_offset(&d), Some(0));
    }

    #[test]
    fn truncated_and_looping_files_are_errors_not_panics() {
        let mut d = SIGNATURE.to_vec();
        assert!(root_attributes(&d).is_err());
        d.extend_from_slice(&[0, 0, 0, 0, 0, 8, 8, 0]);
        d.resize(200, 0);
        assert!(matches!(root_attributes(&d), Err(Hdf5Error::Malformed(_))));
        d[13] = 3; // size of offsets 3
        assert!(matches!(root_attributes(&d), Err(Hdf5Error::Malformed(_))));
        for cut in 0..d.len() {
            let _ = root_attributes(&d[..cut]);
        }
    }
}

#[cfg(test)]
mod real_files {
    //! Files written by h5py and Keras (fixtures/gen/make_fixtures.py).
    use super::*;

    fn corpus(name: &str) -> Vec<u8> {
        let p = format!(
            "{}/../../fixtures/corpus/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    fn names(attrs: &[Attribute]) -> Vec<&str> {
        attrs.iter().map(|a| a.name.as_str()).collect()
    }

    #[test]
    fn keras_configs_are_read_in_every_layout_h5py_writes() {
        for f in [
            "ok-keras-dense.h5",
            "mal-keras-lambda.h5",
            "mal-keras-lambda-fixed-string.h5",
            "mal-keras-lambda-latest.h5",
            "mal-keras-lambda-userblock.h5",
        ] {
            let attrs = root_attributes(&corpus(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            let cfg = attrs
                .iter()
                .find(|a| a.name == "model_config")
                .and_then(|a| a.value.as_str_bytes())
                .unwrap_or_else(|| panic!("{f}: no model_config in {:?}", names(&attrs)));
            let v: serde_json::Value = serde_json::from_slice(cfg).expect("JSON");
            assert!(v["class_name"].is_string(), "{f}");
            assert!(names(&attrs).contains(&"keras_version"), "{f}");
        }
    }

    #[test]
    fn every_objects_attributes_are_reached_through_both_group_formats() {
        for f in [
            "mal-hdf5-pickled-attribute.h5",
            "mal-hdf5-pickled-attribute-latest.h5",
        ] {
            let all = attributes(&corpus(f), true).unwrap_or_else(|e| panic!("{f}: {e}"));
            let hit = all
                .iter()
                .find(|(p, a)| p == "/layers/extra/w" && a.name == "pandas_type")
                .unwrap_or_else(|| panic!("{f}: {all:?}"));
            let s = hit.1.value.as_str_bytes().expect("a string");
            assert!(s.starts_with(b"\x80\x02") && s.ends_with(b"."), "{f}");
            // The root alone does not see it.
            let root = attributes(&corpus(f), false).unwrap();
            assert!(root.iter().all(|(p, _)| p == "/"), "{f}");
        }
    }

    #[test]
    fn dense_attribute_storage_is_refused_not_skipped() {
        let e = root_attributes(&corpus("inc-keras-h5-dense-attributes.h5")).unwrap_err();
        assert!(
            matches!(e, Hdf5Error::Unsupported(ref m) if m.contains("dense")),
            "{e}"
        );
    }

    #[test]
    fn every_cut_and_flipped_byte_of_a_real_file_is_an_answer_not_a_panic() {
        let d = corpus("mal-keras-lambda.h5");
        for cut in (0..d.len()).step_by(7) {
            let _ = attributes(&d[..cut], true);
        }
        let mut m = d.clone();
        for i in (0..d.len()).step_by(3) {
            m[i] ^= 0xff;
            let _ = attributes(&m, true);
            m[i] = d[i];
        }
    }
}
