/*!
GGUF (llama.cpp's model format): header, metadata and tensor infos, read as
ggml's `gguf_init_from_file` reads them (little-endian; version 1 with
32-bit counts and lengths, versions 2 and 3 with 64-bit ones).

Nothing in a GGUF runs by itself, but two things in it reach code: the chat
templates (`tokenizer.chat_template`, `tokenizer.chat_template.NAME`), Jinja
programs that front-ends render, and malformed tensor infos, the way past
loader CVEs were exploited (sizes that overflow, data outside the file). This
module hands back the metadata strings that matter and the structural
problems it found; judging templates is the scanner's job.

Every count and length comes from the file, so each is checked against the
bytes that remain before anything is allocated; arrays are not materialised
(their elements are walked and counted), and nesting is bounded.
*/

use serde::Serialize;

/// Metadata keys and tensors read at most (llama.cpp models have a few
/// dozen keys and up to a few thousand tensors).
const MAX_KV: u64 = 1 << 16;
const MAX_TENSORS: u64 = 1 << 20;
const MAX_ARRAY_DEPTH: usize = 4;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;

#[derive(Clone, Debug, Serialize)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Bytes, when the type is known.
    pub bytes: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Gguf {
    pub version: u32,
    /// `(key, template)` for every chat template in the metadata.
    pub templates: Vec<(String, String)>,
    pub kv_count: u64,
    pub tensors: Vec<Tensor>,
    pub alignment: u64,
    /// Where the tensor data starts.
    pub data_offset: u64,
    /// Structural problems a conforming writer never produces.
    pub malformed: Vec<String>,
    /// The file ends before something it declares (a truncated download).
    pub truncated: Option<String>,
}

/// (block size in elements, bytes per block) of each ggml type, from ggml's
/// type traits (`GGML_QUANT_SIZES` in the `gguf` Python package; a live test
/// compares the two).
pub fn type_size(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 40),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        40 => (64, 36),   // NVFP4
        41 => (128, 18),  // Q1_0
        _ => return None,
    })
}

/// Why reading stopped: the file ended (a truncated download), or it holds
/// something no writer produces.
#[derive(Debug)]
enum E {
    Short(String),
    Bad(String),
}

impl std::fmt::Display for E {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            E::Short(s) | E::Bad(s) => f.write_str(s),
        }
    }
}

struct R<'a> {
    d: &'a [u8],
    p: usize,
    wide: bool,
}

impl<'a> R<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], E> {
        let n = usize::try_from(n).map_err(|_| E::Bad("length beyond the address space".into()))?;
        if self.d.len() - self.p < n {
            return Err(E::Short(format!(
                "needs {n} bytes at offset {}, {} remain",
                self.p,
                self.d.len() - self.p
            )));
        }
        let s = &self.d[self.p..self.p + n];
        self.p += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, E> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
    fn u64(&mut self) -> Result<u64, E> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    /// A count or length: 32 bits in version 1, 64 after.
    fn len(&mut self) -> Result<u64, E> {
        if self.wide {
            self.u64()
        } else {
            self.u32().map(u64::from)
        }
    }
    fn string(&mut self) -> Result<&'a [u8], E> {
        let n = self.len()?;
        self.take(n)
    }
    fn remaining(&self) -> u64 {
        (self.d.len() - self.p) as u64
    }
}

/// Bytes of a scalar value type; None for strings and arrays.
fn scalar_size(t: u32) -> Option<u64> {
    match t {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// Skip one value of type `t`; returns the string when it is one.
fn value<'a>(r: &mut R<'a>, t: u32, depth: usize) -> Result<Option<&'a [u8]>, E> {
    if let Some(n) = scalar_size(t) {
        r.take(n)?;
        return Ok(None);
    }
    match t {
        8 => r.string().map(Some),
        9 => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(E::Bad(format!(
                    "arrays nested deeper than {MAX_ARRAY_DEPTH}"
                )));
            }
            let et = r.u32()?;
            let n = r.len()?;
            if let Some(sz) = scalar_size(et) {
                let total = n
                    .checked_mul(sz)
                    .ok_or_else(|| E::Bad(format!("array of {n} elements overflows")))?;
                r.take(total)?;
            } else {
                // Every element takes at least 4 bytes: bound before walking.
                if n > r.remaining() / 4 {
                    return Err(E::Bad(format!(
                        "array of {n} elements in {} bytes",
                        r.remaining()
                    )));
                }
                for _ in 0..n {
                    value(r, et, depth + 1)?;
                }
            }
            Ok(None)
        }
        _ => Err(E::Bad(format!("unknown metadata value type {t}"))),
    }
}

/// Read a GGUF file's header, metadata and tensor infos.
pub fn read(data: &[u8]) -> Result<Gguf, String> {
    if !data.starts_with(b"GGUF") {
        return Err("not a GGUF file".into());
    }
    let mut r = R {
        d: data,
        p: 4,
        wide: true,
    };
    let mut g = Gguf {
        version: r.u32().map_err(|e| e.to_string())?,
        alignment: 32,
        ..Default::default()
    };
    if !(1..=3).contains(&g.version) {
        return Err(format!(
            "GGUF version {} is not one llama.cpp reads",
            g.version
        ));
    }
    r.wide = g.version >= 2;
    let n_tensors = r.len().map_err(|e| e.to_string())?;
    g.kv_count = r.len().map_err(|e| e.to_string())?;
    if g.kv_count > MAX_KV || n_tensors > MAX_TENSORS {
        g.malformed.push(format!(
            "{} metadata keys and {n_tensors} tensors declared",
            g.kv_count
        ));
        return Ok(g);
    }
    let mut keys = std::collections::BTreeSet::new();
    for _ in 0..g.kv_count {
        let step = (|| -> Result<(), E> {
            let raw_key = r.string()?;
            // llama.cpp keeps keys as C strings (`gguf_find_key` compares with
            // strcmp): a key is what comes before its first NUL, and the
            // first of two equal keys wins. A NUL in a key is never written.
            let cut = raw_key.split(|&b| b == 0).next().unwrap_or(raw_key);
            if cut.len() != raw_key.len() {
                g.malformed.push(format!(
                    "metadata key {:?} holds a NUL: llama.cpp reads it as {:?}",
                    String::from_utf8_lossy(raw_key),
                    String::from_utf8_lossy(cut)
                ));
            }
            let key = String::from_utf8_lossy(cut).into_owned();
            let t = r.u32()?;
            let at = r.p;
            let v = value(&mut r, t, 0)?;
            if !keys.insert(key.clone()) {
                g.malformed
                    .push(format!("metadata key {key} appears twice"));
            }
            if key == "general.alignment" {
                if t == 4 {
                    g.alignment = u64::from(u32::from_le_bytes(
                        data[at..at + 4].try_into().unwrap_or([0; 4]),
                    ));
                }
                if g.alignment == 0 || !g.alignment.is_power_of_two() {
                    g.malformed.push(format!(
                        "general.alignment {} is not a power of two",
                        g.alignment
                    ));
                    g.alignment = 32;
                }
            }
            if (key == "tokenizer.chat_template" || key.starts_with("tokenizer.chat_template."))
                && let Some(s) = v
            {
                // llama.cpp renders the C string (up to a NUL); gguf-py the
                // whole value: both are judged.
                let c = s.split(|&b| b == 0).next().unwrap_or(s);
                if c.len() != s.len() {
                    g.malformed
                        .push(format!("{key} holds a NUL byte at {}", c.len()));
                    g.templates.push((
                        format!("{key} (up to its NUL)"),
                        String::from_utf8_lossy(c).into_owned(),
                    ));
                }
                g.templates
                    .push((key, String::from_utf8_lossy(s).into_owned()));
            }
            Ok(())
        })();
        match step {
            Ok(()) => {}
            Err(E::Short(e)) => {
                g.truncated = Some(format!("metadata: {e}"));
                return Ok(g);
            }
            Err(E::Bad(e)) => {
                g.malformed.push(format!("metadata: {e}"));
                return Ok(g);
            }
        }
    }
    for i in 0..n_tensors {
        let step = (|| -> Result<Tensor, E> {
            let name = String::from_utf8_lossy(r.string()?).into_owned();
            let nd = r.u32()?;
            if nd > MAX_DIMS {
                return Err(E::Bad(format!(
                    "tensor {name} has {nd} dimensions (ggml allows {MAX_DIMS})"
                )));
            }
            let mut dims = Vec::with_capacity(nd as usize);
            for _ in 0..nd {
                dims.push(r.u64()?);
            }
            let ggml_type = r.u32()?;
            let offset = r.u64()?;
            Ok(Tensor {
                name,
                dims,
                ggml_type,
                offset,
                bytes: None,
            })
        })();
        match step {
            Ok(t) => g.tensors.push(t),
            Err(E::Short(e)) => {
                g.truncated = Some(format!("tensor info {i}: {e}"));
                return Ok(g);
            }
            Err(E::Bad(e)) => {
                g.malformed.push(e);
                return Ok(g);
            }
        }
    }
    let a = g.alignment;
    g.data_offset = (r.p as u64).div_ceil(a) * a;
    let data_len = (data.len() as u64).saturating_sub(g.data_offset);
    let mut spans: Vec<(u64, u64, usize)> = Vec::new();
    for (i, t) in g.tensors.iter_mut().enumerate() {
        let Some((block, size)) = type_size(t.ggml_type) else {
            g.malformed.push(format!(
                "tensor {} has unknown ggml type {}",
                t.name, t.ggml_type
            ));
            continue;
        };
        let elems = t
            .dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64);
        let Some(elems) = elems else {
            g.malformed.push(format!(
                "tensor {}: element count {:?} overflows",
                t.name, t.dims
            ));
            continue;
        };
        if t.dims.first().is_some_and(|d| d % block != 0) {
            g.malformed.push(format!(
                "tensor {}: first dimension {} is not a multiple of its type's block of {block}",
                t.name, t.dims[0]
            ));
            continue;
        }
        let bytes = (elems / block).checked_mul(size);
        let Some(bytes) = bytes else {
            g.malformed
                .push(format!("tensor {}: size overflows", t.name));
            continue;
        };
        t.bytes = Some(bytes);
        if t.offset % a != 0 {
            g.malformed.push(format!(
                "tensor {} at data offset {} is not aligned to {a}",
                t.name, t.offset
            ));
        }
        match t.offset.checked_add(bytes) {
            Some(end) if end <= data_len => spans.push((t.offset, end, i)),
            Some(end) => {
                if g.truncated.is_none() {
                    g.truncated = Some(format!(
                        "tensor {} ends at data offset {end}, the file holds {data_len} bytes of data",
                        t.name
                    ));
                }
            }
            None => g
                .malformed
                .push(format!("tensor {}: offset + size overflows", t.name)),
        }
    }
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 && w[1].1 > w[1].0 {
            g.malformed.push(format!(
                "tensors {} and {} overlap",
                g.tensors[w[0].2].name, g.tensors[w[1].2].name
            ));
            break;
        }
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }

    fn file(template: &str, tensors: &[(&str, &[u64], u32, u64)], data: usize) -> Vec<u8> {
        let mut f = b"GGUF".to_vec();
        f.extend(3u32.to_le_bytes());
        f.extend((tensors.len() as u64).to_le_bytes());
        f.extend(2u64.to_le_bytes());
        s(&mut f, "tokenizer.ggml.tokens");
        f.extend(9u32.to_le_bytes());
        f.extend(8u32.to_le_bytes());
        f.extend(2u64.to_le_bytes());
        s(&mut f, "<s>");
        s(&mut f, "</s>");
        s(&mut f, "tokenizer.chat_template");
        f.extend(8u32.to_le_bytes());
        s(&mut f, template);
        for (name, dims, t, off) in tensors {
            s(&mut f, name);
            f.extend((dims.len() as u32).to_le_bytes());
            for d in *dims {
                f.extend(d.to_le_bytes());
            }
            f.extend(t.to_le_bytes());
            f.extend(off.to_le_bytes());
        }
        while !f.len().is_multiple_of(32) {
            f.push(0);
        }
        f.extend(vec![0u8; data]);
        f
    }

    #[test]
    fn reads_templates_and_checks_tensors() {
        let g = read(&file(
            "{{ x }}",
            &[("a", &[4, 2], 0, 0), ("b", &[32], 8, 32)],
            96,
        ))
        .unwrap();
        assert_eq!(
            g.templates,
            vec![("tokenizer.chat_template".into(), "{{ x }}".into())]
        );
        assert!(g.malformed.is_empty() && g.truncated.is_none(), "{g:?}");
        assert_eq!(g.tensors[1].bytes, Some(34));
        let g = read(&file("", &[("a", &[8], 0, 0), ("b", &[8], 0, 0)], 64)).unwrap();
        assert!(g.malformed[0].contains("overlap"), "{g:?}");
        let g = read(&file("", &[("a", &[u64::MAX, 4], 0, 0)], 64)).unwrap();
        assert!(g.malformed[0].contains("overflows"), "{g:?}");
        let g = read(&file("", &[("a", &[1 << 20], 0, 0)], 64)).unwrap();
        assert!(g.truncated.is_some() && g.malformed.is_empty(), "{g:?}");
        let g = read(&file("", &[("a", &[8], 0, 4)], 64)).unwrap();
        assert!(g.malformed[0].contains("aligned"), "{g:?}");
    }

    #[test]
    fn hostile_counts_are_bounded() {
        let mut f = b"GGUF".to_vec();
        f.extend(3u32.to_le_bytes());
        f.extend(0u64.to_le_bytes());
        f.extend(1u64.to_le_bytes());
        s(&mut f, "k");
        f.extend(9u32.to_le_bytes());
        f.extend(8u32.to_le_bytes());
        f.extend(u64::MAX.to_le_bytes());
        let g = read(&f).unwrap();
        assert!(!g.malformed.is_empty(), "{g:?}");
        let mut f = b"GGUF".to_vec();
        f.extend(3u32.to_le_bytes());
        f.extend(0u64.to_le_bytes());
        f.extend(1u64.to_le_bytes());
        f.extend(u64::MAX.to_le_bytes());
        let g = read(&f).unwrap();
        assert!(g.truncated.is_some(), "{g:?}");
        assert!(read(b"GGUF\x09\x00\x00\x00").is_err());
        // A tensor whose name is "remain" is judged by structure, not by text.
        let g = read(&file("", &[("remain", &[1, 1, 1, 1, 1], 0, 0)], 64)).unwrap();
        assert!(!g.malformed.is_empty() && g.truncated.is_none(), "{g:?}");
    }

    #[test]
    fn keys_are_c_strings() {
        let mut f = b"GGUF".to_vec();
        f.extend(3u32.to_le_bytes());
        f.extend(0u64.to_le_bytes());
        f.extend(2u64.to_le_bytes());
        s(&mut f, "tokenizer.chat_template\0x");
        f.extend(8u32.to_le_bytes());
        s(&mut f, "{{ evil }}\0{% if %}");
        s(&mut f, "tokenizer.chat_template");
        f.extend(8u32.to_le_bytes());
        s(&mut f, "{{ ok }}");
        let g = read(&f).unwrap();
        let keys: Vec<&str> = g.templates.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            keys.contains(&"tokenizer.chat_template (up to its NUL)"),
            "{g:?}"
        );
        assert!(g.templates.iter().any(|(_, t)| t == "{{ evil }}"), "{g:?}");
        assert!(g.malformed.iter().any(|m| m.contains("NUL")), "{g:?}");
        assert!(g.malformed.iter().any(|m| m.contains("twice")), "{g:?}");
    }
}
