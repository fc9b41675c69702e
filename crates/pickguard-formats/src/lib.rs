/*!
What a file is, decided by its bytes, never by its name; and readers for the
containers model files come in, written to see what the victim's loader sees.
*/

pub mod compress;
pub mod dtype;
pub mod gguf;
pub mod hdf5;
pub mod onnx;
mod protowire;
pub mod pyliteral;
pub mod sevenz;
pub mod tar;
pub mod tfgraph;
pub mod torch;
pub mod torch_legacy;
pub mod zip;

use serde::Serialize;

/// The kind of content at the start of a byte string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sniffed {
    /// Local file header at offset 0 (what `torch.load`'s `_is_zipfile` checks).
    Zip,
    /// POSIX/GNU tar (`ustar` magic at 257).
    Tar,
    /// NumPy `.npy` (`\x93NUMPY`).
    Npy,
    /// safetensors: 8-byte little-endian header length then `{`.
    Safetensors,
    Gzip,
    /// zlib stream (CMF 0x78 with a valid FCHECK): `joblib.dump(compress=...)`'s default.
    Zlib,
    /// LZMA "alone" format (`]\x00` properties), as joblib's `compress='lzma'` writes.
    Lzma,
    /// LZ4 frame.
    Lz4,
    Bzip2,
    Xz,
    Zstd,
    SevenZip,
    /// GGUF (`GGUF` magic).
    Gguf,
    /// ONNX `ModelProto` (protobuf: `ir_version` first, a graph).
    Onnx,
    /// HDF5 (Keras `.h5` models, `model.weights.h5` inside `.keras`).
    Hdf5,
    /// A TensorFlow SavedModel (`saved_model.pb`) or frozen GraphDef (`.pb`).
    TfGraph,
    /// Begins with a byte a pickle stream can begin with.
    PickleLike,
    Unknown,
}

/// Sniff the content.
pub fn sniff(data: &[u8]) -> Sniffed {
    let starts = |m: &[u8]| data.starts_with(m);
    if starts(b"PK\x03\x04") {
        Sniffed::Zip
    } else if data.len() >= 262 && &data[257..262] == b"ustar" {
        Sniffed::Tar
    } else if starts(b"\x93NUMPY") {
        Sniffed::Npy
    } else if starts(b"\x1f\x8b") {
        Sniffed::Gzip
    } else if starts(b"BZh") && data.len() > 3 && data[3].is_ascii_digit() {
        Sniffed::Bzip2
    } else if starts(b"\xfd7zXZ\x00") {
        Sniffed::Xz
    } else if data.len() >= 2
        && data[0] == 0x78
        && u16::from_be_bytes([data[0], data[1]]).is_multiple_of(31)
    {
        Sniffed::Zlib
    } else if starts(b"\x5d\x00\x00") && data.len() >= 13 {
        Sniffed::Lzma
    } else if starts(b"\x04\x22\x4d\x18") {
        Sniffed::Lz4
    } else if starts(b"\x28\xb5\x2f\xfd") {
        Sniffed::Zstd
    } else if starts(b"7z\xbc\xaf\x27\x1c") {
        Sniffed::SevenZip
    } else if starts(b"\x89HDF\r\n\x1a\n") {
        Sniffed::Hdf5
    } else if starts(b"GGUF") {
        Sniffed::Gguf
    } else if is_safetensors(data) {
        Sniffed::Safetensors
    } else if onnx::looks_like_onnx(data) {
        Sniffed::Onnx
    } else if tfgraph::looks_like_graph(data)
        || tfgraph::is_fingerprint(data)
        || tfgraph::keras_metadata(data).is_some()
    {
        Sniffed::TfGraph
    } else if pickguard_pickle::is_plausible_start(data) {
        Sniffed::PickleLike
    } else {
        Sniffed::Unknown
    }
}

fn is_safetensors(data: &[u8]) -> bool {
    if data.len() < 10 {
        return false;
    }
    let n = u64::from_le_bytes(data[..8].try_into().unwrap_or([0; 8]));
    n >= 2 && n <= (data.len() as u64 - 8) && data[8] == b'{'
}

/// Parse a NumPy `.npy` header: (header text, offset of the array data, whether
/// the dtype holds Python objects, i.e. the data is a pickle).
pub fn npy_header(data: &[u8]) -> Result<(String, usize, bool), String> {
    if !data.starts_with(b"\x93NUMPY") || data.len() < 10 {
        return Err("not an .npy file".into());
    }
    let major = data[6];
    let (hlen, start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([data[8], data[9]]) as usize, 10),
        2 | 3 => {
            if data.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u32::from_le_bytes([data[8], data[9], data[10], data[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= data.len())
        .ok_or("truncated .npy header")?;
    // Versions 1 and 2 are latin-1, version 3 UTF-8 (numpy.lib.format).
    let raw = &data[start..end];
    let header: String = if major == 3 {
        std::str::from_utf8(raw)
            .map_err(|_| "the .npy header is not UTF-8")?
            .to_owned()
    } else {
        raw.iter().map(|&b| b as char).collect()
    };
    // numpy reads the header with ast.literal_eval and the dtype with
    // descr_to_dtype: read it the same way, never by searching for 'O.
    let lit =
        pyliteral::parse(&header).map_err(|e| format!("header is not a Python literal: {e}"))?;
    let pyliteral::Lit::Dict(items) = &lit else {
        return Err("header is not a dictionary".into());
    };
    let descr = items
        .iter()
        .find(|(k, _)| *k == pyliteral::Lit::Str("descr".into()))
        .map(|(_, v)| v)
        .ok_or("header has no 'descr'")?;
    let object = pyliteral::descr_has_object(descr)?;
    Ok((header, end, object))
}
