//! Whole-file decompression as Python's decompressing readers do it.
//!
//! joblib, `torch.load` of a gzip'd file and friends hand the unpickler a
//! decompressing reader; the unpickler sees every stream the reader yields,
//! one after another, and whatever decoded before a corrupt tail. This
//! module reproduces that, with the output bounded by the caller.

/// Why a stream did not decompress to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unpack {
    /// The output passed the limit.
    TooBig,
    /// The data is not a valid stream of its kind (from here on).
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
pub fn decompress(kind: crate::Sniffed, data: &[u8], limit: u64) -> (Vec<u8>, Result<(), Unpack>) {
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
        crate::Sniffed::Gzip => {
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
        crate::Sniffed::Zlib => {
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
        crate::Sniffed::Lzma => {
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
        crate::Sniffed::Xz => {
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
        crate::Sniffed::Bzip2 => copy(bzip2::read::MultiBzDecoder::new(data), &mut w),
        crate::Sniffed::Lz4 => copy(lz4_flex::frame::FrameDecoder::new(data), &mut w),
        // zstd frames one after another, skippable frames passed over, as
        // Python's readers across frames (`compression.zstd`, zstandard's
        // `read_across_frames=True`) decode them. The window is capped by
        // ruzstd (128 MiB), the output by the budget.
        crate::Sniffed::Zstd => {
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
