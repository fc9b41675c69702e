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

/// An attribute, its value borrowed from the file (references to one heap
/// object share its bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute<'a> {
    /// As the library reads it: `name_size - 1` bytes, up to a NUL.
    pub name: String,
    pub value: Value<'a>,
}

/// An attribute's value, as far as a scanner needs it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// Fixed- or variable-length strings, one per element (a scalar: one),
    /// with trailing NULs removed; see [`readings`] for what readers make
    /// of NULs inside.
    Strings(Vec<&'a [u8]>),
    /// Another datatype (numbers, compounds...), by its HDF5 class number.
    Other { class: u8 },
}

impl<'a> Value<'a> {
    /// The single string of a scalar string attribute.
    pub fn as_str_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Strings(v) if v.len() == 1 => Some(v[0]),
            _ => None,
        }
    }
}

/// Every way a reader takes a string value: whole (numpy's fixed-length
/// strings keep NULs inside), and up to its first NUL (C readers:
/// PyTables measures variable-length strings with `strlen`, h5py and the
/// library's null-terminated conversions stop there too).
pub fn readings(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    let cut = &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())];
    std::iter::once(s).chain((cut.len() != s.len()).then_some(cut))
}

/// Longest name shown in an object path; longer ones are cut (with `…`),
/// and a path stops growing at [`MAX_PATH`] bytes, so shared long names
/// cannot multiply memory.
const MAX_NAME: usize = 256;
const MAX_PATH: usize = 1024;

fn show_name(b: &[u8]) -> String {
    let mut n = String::from_utf8_lossy(&b[..b.len().min(MAX_NAME)]).into_owned();
    if b.len() > MAX_NAME {
        n.push('…');
    }
    n
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
pub fn root_attributes(data: &[u8]) -> Res<Vec<Attribute<'_>>> {
    Ok(attributes(data, false)?
        .into_iter()
        .filter(|(p, _)| &**p == "/")
        .map(|(_, a)| a)
        .collect())
}

/// The attributes of every object reachable from the root group by hard
/// links (`all`), or of the root only: (object path, attribute), the root
/// first. A group whose links or an object whose attributes this reader
/// does not follow is an error, never a silent gap.
pub fn attributes(data: &[u8], all: bool) -> Res<Vec<(std::rc::Rc<str>, Attribute<'_>)>> {
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
    let mut todo: Vec<(std::rc::Rc<str>, usize)> = vec![("/".into(), root)];
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
            let p: std::rc::Rc<str> = if path.len() >= MAX_PATH {
                path.clone()
            } else if &*path == "/" {
                format!("/{}", show_name(name)).into()
            } else {
                format!("{path}/{}", show_name(name)).into()
            };
            todo.push((p, addr));
        }
    }
    Ok(out)
}

/// A link message: (name, object address) for a hard link; soft and
/// external links name no object in this file.
fn link<'m>(f: &File, m: &'m [u8]) -> Res<Option<(&'m [u8], usize)>> {
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
    Ok(Some((name, at)))
}

/// An old-style group: a v1 B-tree of symbol-table nodes, names in a
/// local heap.
fn symbol_table<'a>(
    f: &mut File<'a>,
    tree: u64,
    heap: u64,
    out: &mut Vec<(&'a [u8], usize)>,
) -> Res<()> {
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
                    // Names are only shown: look no further than that for
                    // the NUL (entries may share one huge name).
                    let name = names
                        .get(off..)
                        .map(|r| {
                            let r = &r[..r.len().min(MAX_NAME + 1)];
                            &r[..r.iter().position(|&b| b == 0).unwrap_or(r.len())]
                        })
                        .ok_or(Hdf5Error::Malformed("a link name outside its heap".into()))?;
                    let obj = f
                        .addr(f.uint(e + f.so, f.so)?)?
                        .ok_or(Hdf5Error::Malformed("a group entry to nowhere".into()))?;
                    out.push((name, obj));
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
fn attribute<'a>(f: &mut File<'a>, m: &'a [u8]) -> Res<Attribute<'a>> {
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
    // The library keeps name_size - 1 bytes whatever the last one is
    // (H5MM_strndup), up to a NUL.
    let name = &name[..name.len().saturating_sub(1)];
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
                        // numpy strips trailing NULs and keeps inner ones
                        // (a pickle holds them); see `readings`.
                        let e = c.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                        &c[..e]
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
fn heap_object<'a>(f: &mut File<'a>, coll: u64, idx: u64, len: usize) -> Res<&'a [u8]> {
    if len == 0 && coll == 0 {
        return Ok(&[]); // an empty string has no heap object
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
    let d = f.d;
    Ok(&d[data_at..data_at + len])
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
            // Free space: its size counts its header and is not padded;
            // the library reads on after it, and so must this.
            if osize < 8 + f.sl {
                break;
            }
            p = p
                .checked_add(osize)
                .ok_or(Hdf5Error::Malformed("free space past the end".into()))?;
            continue;
        }
        if data_at.checked_add(osize).is_none_or(|e| e > end) {
            return bad("a global heap object runs past its collection");
        }
        // A later object with the same index replaces an earlier one, as
        // the library fills its table while it reads.
        out.insert(id, (data_at, osize));
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

    fn names<'a>(attrs: &'a [Attribute]) -> Vec<&'a str> {
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
            let d = corpus(f);
            let attrs = root_attributes(&d).unwrap_or_else(|e| panic!("{f}: {e}"));
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
            let d = corpus(f);
            let all = attributes(&d, true).unwrap_or_else(|e| panic!("{f}: {e}"));
            let hit = all
                .iter()
                .find(|(p, a)| &**p == "/layers/extra/w" && a.name == "pandas_type")
                .unwrap_or_else(|| panic!("{f}: {all:?}"));
            let s = hit.1.value.as_str_bytes().expect("a string");
            assert!(s.starts_with(b"\x80\x02") && s.ends_with(b"."), "{f}");
            // The root alone does not see it.
            let root = attributes(&d, false).unwrap();
            assert!(root.iter().all(|(p, _)| &**p == "/"), "{f}");
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

#[cfg(test)]
mod built {
    //! Files built byte by byte for what h5py will not write: the attacker
    //! review's shapes (2026-12-03), each checked against what the library
    //! does with it.
    use super::*;

    const U: [u8; 8] = [0xff; 8];

    fn q(x: usize) -> [u8; 8] {
        (x as u64).to_le_bytes()
    }

    fn pad8(mut v: Vec<u8>) -> Vec<u8> {
        v.resize(v.len().div_ceil(8) * 8, 0);
        v
    }

    /// Superblock v0 (96 bytes) whose root object header is at 96.
    fn superblock(eof: usize) -> Vec<u8> {
        let mut sb = SIGNATURE.to_vec();
        sb.extend([0, 0, 0, 0, 0, 8, 8, 0, 4, 0, 16, 0, 0, 0, 0, 0]);
        sb.extend(q(0));
        sb.extend(U);
        sb.extend(q(eof));
        sb.extend(U);
        sb.extend(q(0));
        sb.extend(q(96));
        sb.extend([0; 24]);
        assert_eq!(sb.len(), 96);
        sb
    }

    /// A v1 object header of (type, body) messages.
    fn header(msgs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (ty, b) in msgs {
            let b = pad8(b.clone());
            body.extend(ty.to_le_bytes());
            body.extend((b.len() as u16).to_le_bytes());
            body.extend([0; 4]);
            body.extend(b);
        }
        let mut h = vec![1, 0];
        h.extend((msgs.len() as u16).to_le_bytes());
        h.extend(1u32.to_le_bytes());
        h.extend((body.len() as u32).to_le_bytes());
        h.extend([0; 4]);
        h.extend(body);
        h
    }

    /// An attribute message v1 with a raw name field of `name_size`.
    fn attr(name: &[u8], name_size: u16, dt: &[u8], ds: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = vec![1, 0];
        m.extend(name_size.to_le_bytes());
        m.extend((dt.len() as u16).to_le_bytes());
        m.extend((ds.len() as u16).to_le_bytes());
        m.extend(pad8(name.to_vec()));
        m.extend(pad8(dt.to_vec()));
        m.extend(pad8(ds.to_vec()));
        m.extend(data);
        m
    }

    fn fixed_string(n: u32) -> Vec<u8> {
        let mut t = vec![0x13, 1, 0, 0];
        t.extend(n.to_le_bytes());
        t
    }

    fn vlen_string() -> Vec<u8> {
        let mut t = vec![0x19, 1, 0, 0];
        t.extend(16u32.to_le_bytes());
        t.extend(fixed_string(1));
        t
    }

    fn dataspace(dims: &[usize]) -> Vec<u8> {
        let mut d = vec![1, dims.len() as u8, 0, 0, 0, 0, 0, 0];
        for &n in dims {
            d.extend(q(n));
        }
        d
    }

    /// A global heap collection of (index, bytes) objects, free space
    /// objects as index 0 with their total size.
    fn collection(objs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (idx, data) in objs {
            body.extend(idx.to_le_bytes());
            body.extend([1, 0, 0, 0, 0, 0]);
            if *idx == 0 {
                body.extend(q(16 + data.len()));
                body.extend(data);
            } else {
                body.extend(q(data.len()));
                body.extend(pad8(data.clone()));
            }
        }
        let mut g = b"GCOL\x01\0\0\0".to_vec();
        g.extend(q(16 + body.len()));
        g.extend(body);
        g
    }

    /// A file: superblock, the root header (built knowing where the heap
    /// collection after it starts), the collection.
    fn file(root: impl Fn(usize) -> Vec<u8>, heap: &[u8]) -> Vec<u8> {
        let probe = root(0).len();
        let at = 96 + probe;
        let mut d = superblock(at + heap.len());
        d.extend(root(at));
        d.extend(heap);
        d
    }

    fn vlen_refs(refs: &[(usize, usize, u32)]) -> Vec<u8> {
        let mut v = Vec::new();
        for &(len, coll, idx) in refs {
            v.extend((len as u32).to_le_bytes());
            v.extend(q(coll));
            v.extend(idx.to_le_bytes());
        }
        v
    }

    #[test]
    fn a_name_is_its_size_less_one_byte_up_to_a_nul() {
        let d = file(
            |_| {
                header(&[(
                    0x0C,
                    attr(
                        b"model_configX",
                        13,
                        &fixed_string(2),
                        &dataspace(&[]),
                        b"{}",
                    ),
                )])
            },
            &[],
        );
        let a = root_attributes(&d).unwrap();
        assert_eq!(a[0].name, "model_config");
        assert_eq!(a[0].value.as_str_bytes(), Some(&b"{}"[..]));
    }

    #[test]
    fn heap_references_share_bytes_and_the_later_duplicate_wins() {
        let big = vec![b'('; 10_000];
        let heap = collection(&[
            (1, b"benign".to_vec()),
            (0, vec![0; 48]),
            (1, big.clone()),
            (0, vec![0; 16]),
        ]);
        let d = file(
            |at| {
                let refs: Vec<_> = (0..1000).map(|_| (big.len(), at, 1)).collect();
                header(&[(
                    0x0C,
                    attr(
                        b"a\0",
                        2,
                        &vlen_string(),
                        &dataspace(&[1000]),
                        &vlen_refs(&refs),
                    ),
                )])
            },
            &heap,
        );
        let a = root_attributes(&d).unwrap();
        let Value::Strings(v) = &a[0].value else {
            panic!("{:?}", a[0].value)
        };
        assert_eq!(v.len(), 1000);
        assert!(
            v.iter()
                .all(|s| s.as_ptr() == v[0].as_ptr() && s.len() == big.len())
        );
        assert_eq!(v[0], &big[..], "the object after the free space");
    }

    #[test]
    fn a_string_is_read_whole_and_up_to_its_first_nul() {
        let r: Vec<&[u8]> = readings(b"cos\nsystem\n.\0JUNK").collect();
        assert_eq!(
            r,
            vec![&b"cos\nsystem\n.\0JUNK"[..], &b"cos\nsystem\n."[..]]
        );
        assert_eq!(readings(b"plain").count(), 1);
    }

    #[test]
    fn many_links_sharing_one_long_name_stay_small() {
        // The root is an old-style group: a B-tree with one symbol-table
        // node of 2000 entries, all named by one 64 KiB name, all linking
        // to one child that has an attribute.
        const N: usize = 2000;
        let root_at = 96;
        let root = |tree: usize, heap: usize| {
            let mut st = q(tree).to_vec();
            st.extend(q(heap));
            header(&[(0x11, st)])
        };
        let root_len = root(0, 0).len();
        let heap_at = root_at + root_len;
        let names: Vec<u8> = [vec![0; 8], vec![b'A'; 65536], vec![0; 8]].concat();
        let heap_len = 32;
        let names_at = heap_at + heap_len;
        let tree_at = names_at + names.len();
        let tree_len = 8 + 16 + 8 + 8 + 8;
        let snod_at = tree_at + tree_len;
        let snod_len = 8 + N * 40;
        let child_at = snod_at + snod_len;
        let mut d = superblock(0);
        d.extend(root(tree_at, heap_at));
        d.extend(b"HEAP\0\0\0\0");
        d.extend(q(names.len()));
        d.extend(U);
        d.extend(q(names_at));
        d.extend(&names);
        d.extend(b"TREE\0\0\x01\0");
        d.extend(U);
        d.extend(U);
        d.extend(q(0));
        d.extend(q(snod_at));
        d.extend(q(8));
        d.extend(b"SNOD\x01\0");
        d.extend((N as u16).to_le_bytes());
        for _ in 0..N {
            d.extend(q(8));
            d.extend(q(child_at));
            d.extend([0; 24]);
        }
        assert_eq!(d.len(), child_at);
        d.extend(header(&[(
            0x0C,
            attr(b"note\0", 5, &fixed_string(3), &dataspace(&[]), b"abc"),
        )]));
        let all = attributes(&d, true).unwrap();
        assert_eq!(all.len(), 1, "one child however many links reach it");
        assert!(all[0].0.len() <= MAX_NAME + 8, "{}", all[0].0.len());
        assert!(all[0].0.ends_with('…'));
    }
}
