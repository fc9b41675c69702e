//! A zip reader that sees what `torch.load` sees.
//!
//! Why not the `zip` crate: torch reads checkpoints with miniz, which finds
//! every record through the central directory, reads the local header only
//! for its name and extra lengths, ignores the local name, method, sizes and
//! flags, and (as torch builds it) never checks CRCs. Python's `zipfile`
//! checks all of those, and a checker that agrees with `zipfile` is blind to
//! archives built to differ (CVE-2025-1944, CVE-2025-1945, CVE-2025-10156).
//! This reader follows miniz, and reports every disagreement instead of
//! refusing the archive.

use serde::Serialize;
use std::io::Read;

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD64_LOC_SIG: u32 = 0x0706_4b50;
const EOCD64_SIG: u32 = 0x0606_4b50;
const CDH_SIG: u32 = 0x0201_4b50;
const LFH_SIG: u32 = 0x0403_4b50;

/// One central-directory entry and where its data lies.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub name: String,
    pub method: u16,
    pub flags: u16,
    pub crc32: u32,
    pub compressed_size: u64,
    pub size: u64,
    pub local_header_offset: u64,
    /// Offset of the data, from the local header's lengths; `None` when the
    /// local header is missing or broken (miniz then fails to read it).
    pub data_offset: Option<u64>,
    /// External attributes (bit 4: the DOS directory flag miniz honours).
    pub external_attr: u32,
}

impl Entry {
    /// miniz calls it a directory (a name ending in `/`, or the DOS
    /// directory attribute) and extracts nothing for it, whatever its size.
    pub fn is_directory(&self) -> bool {
        self.name.ends_with('/') || self.external_attr & 0x10 != 0
    }
}

/// A difference between how torch (miniz) and a strict reader see the archive.
#[derive(Clone, Debug, Serialize)]
pub struct Discrepancy {
    /// Entry name from the central directory, when it concerns one entry.
    pub entry: Option<String>,
    pub kind: DiscrepancyKind,
    /// The difference in words, with the values.
    pub what: String,
}

/// What differs, for callers that choose by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiscrepancyKind {
    /// A ZIP64 locator that points at no ZIP64 record.
    Zip64Locator,
    /// Bytes in front of the archive that zipfile skips and miniz does not.
    Prefix,
    /// One name twice in the central directory.
    DuplicateName,
    /// No local header where the central directory points: miniz cannot
    /// read the entry at all.
    NoLocalHeader,
    /// The local header names the entry otherwise.
    LocalName,
    Flags,
    Method,
    /// The local header's CRC-32 differs from the central one.
    Crc,
    Sizes,
    /// Two names that differ only in ASCII case: torch's lookup (miniz,
    /// case-insensitive) may pick either.
    CaseDuplicate,
    /// A directory (to miniz) with data: torch reads nothing, zipfile reads it.
    DirectoryWithData,
    /// The entry's data runs past the end of the file.
    DataPastEnd,
}

/// A parsed archive.
#[derive(Debug, Default)]
pub struct Archive {
    pub entries: Vec<Entry>,
    pub discrepancies: Vec<Discrepancy>,
    /// Where the end-of-central-directory record starts.
    pub eocd_offset: u64,
    /// Bytes in front of the archive that its offsets do not count.
    pub prefix: u64,
}

fn u16_at(d: &[u8], o: usize) -> Option<u16> {
    d.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}
fn u32_at(d: &[u8], o: usize) -> Option<u32> {
    d.get(o..o + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}
fn u64_at(d: &[u8], o: usize) -> Option<u64> {
    d.get(o..o + 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

/// Find the end-of-central-directory record: the last signature in the
/// final 64 KiB + 22 bytes whose comment length reaches the end of the file
/// or, failing that, the last signature at all (miniz searches backwards).
pub fn find_eocd(data: &[u8]) -> Option<usize> {
    if data.len() < 22 {
        return None;
    }
    let lo = data.len().saturating_sub(22 + 0xffff);
    let mut i = data.len() - 22;
    loop {
        if u32_at(data, i) == Some(EOCD_SIG) {
            return Some(i);
        }
        if i == lo {
            return None;
        }
        i -= 1;
    }
}

/// (entries, central directory size, central directory offset) as the end
/// records declare them, ZIP64 included; `false` when a ZIP64 locator points
/// at no ZIP64 record (the 32-bit values are used then).
fn declared(data: &[u8], eocd: usize) -> (u64, u64, u64, bool) {
    let mut total = u16_at(data, eocd + 10).unwrap_or(0) as u64;
    let mut cd_size = u32_at(data, eocd + 12).unwrap_or(0) as u64;
    let mut cd_off = u32_at(data, eocd + 16).unwrap_or(0) as u64;
    let mut ok = true;
    // ZIP64: locator just before the EOCD.
    if eocd >= 20 && u32_at(data, eocd - 20) == Some(EOCD64_LOC_SIG) {
        let rec = u64_at(data, eocd - 12).unwrap_or(u64::MAX);
        let rec = usize::try_from(rec)
            .ok()
            .filter(|&r| u32_at(data, r) == Some(EOCD64_SIG));
        match rec {
            Some(r) => {
                total = u64_at(data, r + 32).unwrap_or(total);
                cd_size = u64_at(data, r + 40).unwrap_or(cd_size);
                cd_off = u64_at(data, r + 48).unwrap_or(cd_off);
            }
            None => ok = false,
        }
    }
    (total, cd_size, cd_off, ok)
}

/// Where an archive's end records say its parts are, for a reader that
/// fetches a file piece by piece (remote scans): everything [`read`] reads
/// lies in `central_directory`, the ZIP64 record and the local headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndRecords {
    pub eocd: u64,
    pub entries: u64,
    /// The ZIP64 end record the locator points at (56 bytes), if any.
    pub zip64_record: Option<u64>,
    /// The bytes holding the central directory, both where the end record
    /// says it starts and where it ends (a prefixed archive's real place).
    pub central_directory: (u64, u64),
}

/// The end records of the archive whose end-of-central-directory record is
/// in `data` (`None`: no such record). Values past the end of `data` are
/// returned as declared: the caller fetches them and asks again.
pub fn end_records(data: &[u8]) -> Option<EndRecords> {
    let eocd = find_eocd(data)?;
    let (entries, cd_size, cd_off, _) = declared(data, eocd);
    let zip64_record = (eocd >= 20 && u32_at(data, eocd - 20) == Some(EOCD64_LOC_SIG))
        .then(|| u64_at(data, eocd - 12))
        .flatten();
    let eocd = eocd as u64;
    let real = eocd.saturating_sub(cd_size);
    Some(EndRecords {
        eocd,
        entries,
        zip64_record,
        central_directory: (cd_off.min(real), eocd),
    })
}

/// The length of the local header at `lho` (fixed part, name and extra
/// field, by its own lengths; `None` when they lie outside `data`): where
/// miniz finds the entry's data.
pub fn local_header_len(data: &[u8], lho: u64) -> Option<u64> {
    let p = usize::try_from(lho).ok()?;
    let n = u16_at(data, p.checked_add(26)?)? as u64;
    let x = u16_at(data, p.checked_add(28)?)? as u64;
    Some(30 + n + x)
}

/// How many entries the archive's end records declare (`None`: no
/// end-of-central-directory record). Callers tell an archive over their
/// entry limit (a budget) from one that cannot be read.
pub fn declared_entries(data: &[u8]) -> Option<u64> {
    let eocd = find_eocd(data)?;
    Some(declared(data, eocd).0)
}

/// Read the central directory. `max_entries` bounds the work an archive can demand.
pub fn read(data: &[u8], max_entries: usize) -> Result<Archive, String> {
    let eocd = find_eocd(data).ok_or("no end-of-central-directory record")?;
    let mut ar = Archive {
        eocd_offset: eocd as u64,
        ..Default::default()
    };
    let (total, cd_size, cd_off, zip64_ok) = declared(data, eocd);
    if !zip64_ok {
        ar.discrepancies.push(Discrepancy {
            entry: None,
            kind: DiscrepancyKind::Zip64Locator,
            what: "ZIP64 locator points at no ZIP64 end-of-central-directory record".into(),
        });
    }
    if total as usize > max_entries {
        return Err(format!(
            "archive declares {total} entries, more than the limit of {max_entries}"
        ));
    }
    let cd_end = cd_off
        .checked_add(cd_size)
        .filter(|&e| e <= eocd as u64)
        .ok_or("central directory lies outside the file")?;
    // Data in front of the archive (a polyglot, or a self-extractor): Python's
    // zipfile shifts every offset by the difference; miniz does not.
    let mut shift = 0u64;
    if u32_at(data, cd_off as usize) != Some(CDH_SIG) && total > 0 {
        let real = (eocd as u64).checked_sub(cd_size);
        if let Some(real) =
            real.filter(|&r| r > cd_off && u32_at(data, r as usize) == Some(CDH_SIG))
        {
            shift = real - cd_off;
            ar.prefix = shift;
            ar.discrepancies.push(Discrepancy {
                entry: None,
                kind: DiscrepancyKind::Prefix,
                what: format!("{shift} bytes precede the archive; Python's zipfile shifts offsets to read it, miniz (torch) does not"),
            });
        }
    }
    let cd_off = cd_off + shift;
    let cd_end = cd_end + shift;
    let mut p = cd_off as usize;
    for _ in 0..total {
        if u32_at(data, p) != Some(CDH_SIG) {
            return Err(format!(
                "central directory entry at offset {p} has a bad signature"
            ));
        }
        let get16 = |o| u16_at(data, p + o).unwrap_or(0);
        let get32 = |o| u32_at(data, p + o).unwrap_or(0);
        let flags = get16(8);
        let method = get16(10);
        let crc32 = get32(16);
        let mut csize = get32(20) as u64;
        let mut usize_ = get32(24) as u64;
        let nlen = get16(28) as usize;
        let elen = get16(30) as usize;
        let clen = get16(32) as usize;
        let mut lho = get32(42) as u64;
        let lho_shift = shift;
        let name_b = data
            .get(p + 46..p + 46 + nlen)
            .ok_or("central directory entry truncated")?;
        let name = String::from_utf8_lossy(name_b).into_owned();
        let extra = data
            .get(p + 46 + nlen..p + 46 + nlen + elen)
            .ok_or("central directory entry truncated")?;
        // ZIP64 extended information: only the fields that overflowed, in order.
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = u16::from_le_bytes([extra[e], extra[e + 1]]);
            let sz = u16::from_le_bytes([extra[e + 2], extra[e + 3]]) as usize;
            if id == 1 {
                let mut q = e + 4;
                let end = (e + 4 + sz).min(extra.len());
                for field in [&mut usize_, &mut csize, &mut lho] {
                    if *field == 0xffff_ffff && q + 8 <= end {
                        *field = u64_at(extra, q).unwrap_or(*field);
                        q += 8;
                    }
                }
            }
            e += 4 + sz;
        }
        let lho = lho + lho_shift;
        let external_attr = get32(38);
        let data_offset = local_data_offset(
            data,
            lho,
            &name,
            flags,
            method,
            csize,
            usize_,
            crc32,
            &mut ar.discrepancies,
        );
        ar.entries.push(Entry {
            name,
            method,
            flags,
            crc32,
            compressed_size: csize,
            size: usize_,
            local_header_offset: lho,
            data_offset,
            external_attr,
        });
        let e = ar.entries.last().expect("just pushed");
        if e.is_directory() && (e.size > 0 || e.compressed_size > 0) {
            ar.discrepancies.push(Discrepancy {
                entry: Some(e.name.clone()),
                kind: DiscrepancyKind::DirectoryWithData,
                what: format!(
                    "a directory to miniz (torch reads no data for it) that holds {} bytes Python's zipfile reads",
                    e.size
                ),
            });
        }
        if let Some(d) = e.data_offset
            && d.checked_add(e.compressed_size)
                .is_none_or(|end| end > data.len() as u64)
        {
            ar.discrepancies.push(Discrepancy {
                entry: Some(e.name.clone()),
                kind: DiscrepancyKind::DataPastEnd,
                what: format!(
                    "its {} bytes of data at offset {d} run past the end of the file ({} bytes)",
                    e.compressed_size,
                    data.len()
                ),
            });
        }
        p += 46 + nlen + elen + clen;
        if p as u64 > cd_end {
            return Err("central directory entries run past its declared size".into());
        }
    }
    let mut names: Vec<&str> = ar.entries.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    for w in names.windows(2) {
        if w[0] == w[1] {
            ar.discrepancies.push(Discrepancy {
                entry: Some(w[0].to_owned()),
                kind: DiscrepancyKind::DuplicateName,
                what: "name appears more than once in the central directory".into(),
            });
        }
    }
    // miniz compares names without ASCII case: two that differ only there
    // are one record to torch, and which one it reads is not ours to guess.
    let mut folded: Vec<(String, &str)> = ar
        .entries
        .iter()
        .map(|e| (e.name.to_ascii_lowercase(), e.name.as_str()))
        .collect();
    folded.sort_unstable();
    let mut cases = Vec::new();
    for w in folded.windows(2) {
        if w[0].0 == w[1].0 && w[0].1 != w[1].1 {
            cases.push(Discrepancy {
                entry: Some(w[1].1.to_owned()),
                kind: DiscrepancyKind::CaseDuplicate,
                what: format!(
                    "names {:?} and {:?} differ only in case: torch's lookup ignores case and may read either",
                    w[0].1, w[1].1
                ),
            });
        }
    }
    ar.discrepancies.extend(cases);
    Ok(ar)
}

#[allow(clippy::too_many_arguments)]
fn local_data_offset(
    data: &[u8],
    lho: u64,
    name: &str,
    flags: u16,
    method: u16,
    csize: u64,
    usize_: u64,
    crc: u32,
    out: &mut Vec<Discrepancy>,
) -> Option<u64> {
    let mut note = |kind: DiscrepancyKind, what: String| {
        out.push(Discrepancy {
            entry: Some(name.to_owned()),
            kind,
            what,
        })
    };
    let p = usize::try_from(lho).ok()?;
    if u32_at(data, p) != Some(LFH_SIG) {
        note(
            DiscrepancyKind::NoLocalHeader,
            format!("no local file header at offset {lho}"),
        );
        return None;
    }
    let lflags = u16_at(data, p + 6)?;
    let lmethod = u16_at(data, p + 8)?;
    let lcrc = u32_at(data, p + 14)?;
    let lcsize = u32_at(data, p + 18)?;
    let lusize = u32_at(data, p + 22)?;
    let nlen = u16_at(data, p + 26)? as usize;
    let elen = u16_at(data, p + 28)? as usize;
    let lname = data.get(p + 30..p + 30 + nlen)?;
    if lname != name.as_bytes() {
        note(
            DiscrepancyKind::LocalName,
            format!("local header names it {:?}", String::from_utf8_lossy(lname)),
        );
    }
    if lflags & !0x0808 != flags & !0x0808 {
        note(
            DiscrepancyKind::Flags,
            format!("flags differ: central 0x{flags:04x}, local 0x{lflags:04x}"),
        );
    }
    if lmethod != method {
        note(
            DiscrepancyKind::Method,
            format!("compression method differs: central {method}, local {lmethod}"),
        );
    }
    // With a data descriptor (bit 3) local sizes and CRC may be zero.
    if lflags & 0x8 == 0 {
        if lcrc != crc {
            note(
                DiscrepancyKind::Crc,
                format!("CRC differs: central 0x{crc:08x}, local 0x{lcrc:08x}"),
            );
        }
        if lcsize != 0xffff_ffff && (lcsize as u64 != csize || lusize as u64 != usize_) {
            note(
                DiscrepancyKind::Sizes,
                format!("sizes differ: central {csize}/{usize_}, local {lcsize}/{lusize}"),
            );
        }
    }
    Some(lho + 30 + nlen as u64 + elen as u64)
}

/// The bytes of an entry as miniz returns them: stored data is the
/// uncompressed size from the central directory; deflated data is inflated
/// up to `max_size` bytes. Returns the bytes and whether the CRC matched.
pub fn entry_data<'a>(
    data: &'a [u8],
    e: &Entry,
    max_size: u64,
) -> Result<(std::borrow::Cow<'a, [u8]>, bool), String> {
    let start = e.data_offset.ok_or("entry has no readable local header")? as usize;
    let out: std::borrow::Cow<'a, [u8]> = match e.method {
        0 => {
            let end = start
                .checked_add(e.size as usize)
                .filter(|&x| x <= data.len())
                .ok_or("stored entry runs past the end of the file")?;
            std::borrow::Cow::Borrowed(&data[start..end])
        }
        8 => {
            let end = start
                .checked_add(e.compressed_size as usize)
                .filter(|&x| x <= data.len())
                .ok_or("deflated entry runs past the end of the file")?;
            let mut dec = flate2::read::DeflateDecoder::new(&data[start..end]).take(max_size + 1);
            let mut v = Vec::new();
            dec.read_to_end(&mut v)
                .map_err(|err| format!("deflate error: {err}"))?;
            if v.len() as u64 > max_size {
                return Err(format!("entry inflates past the limit of {max_size} bytes"));
            }
            std::borrow::Cow::Owned(v)
        }
        // Python's zipfile also decodes bzip2 (12) and LZMA (14) members.
        12 | 14 => {
            let end = start
                .checked_add(e.compressed_size as usize)
                .filter(|&x| x <= data.len())
                .ok_or("compressed entry runs past the end of the file")?;
            let raw = &data[start..end];
            let mut v = Vec::new();
            if e.method == 12 {
                bzip2::read::BzDecoder::new(raw)
                    .take(max_size + 1)
                    .read_to_end(&mut v)
                    .map_err(|err| format!("bzip2 error: {err}"))?;
            } else {
                v = zip_lzma(raw, e.size, max_size)?;
            }
            if v.len() as u64 > max_size {
                return Err(format!("entry inflates past the limit of {max_size} bytes"));
            }
            std::borrow::Cow::Owned(v)
        }
        m => return Err(format!("unsupported compression method {m}")),
    };
    let crc_ok = crc32fast::hash(&out) == e.crc32;
    Ok((out, crc_ok))
}

/// A zip LZMA member (APPNOTE 5.8.8): a 2-byte LZMA SDK version, a 2-byte
/// properties length, the 5-byte properties, then a raw LZMA1 stream, as
/// Python's zipfile reads it (`_LZMADecompressor`). Decoded up to the
/// member's uncompressed size (an end-of-stream marker may also end it).
fn zip_lzma(raw: &[u8], size: u64, max_size: u64) -> Result<Vec<u8>, String> {
    if raw.len() < 4 {
        return Err("LZMA member too short".into());
    }
    let plen = u16::from_le_bytes([raw[2], raw[3]]) as usize;
    if plen != 5 || raw.len() < 4 + plen {
        return Err(format!("LZMA member with {plen}-byte properties"));
    }
    let props = &raw[4..9];
    // lzma-rs reads the .lzma ("alone") layout: the properties, then (not
    // here: the size is provided) the unpacked size.
    let mut stream = Vec::with_capacity(5 + raw.len() - 9);
    stream.extend_from_slice(props);
    stream.extend_from_slice(&raw[9..]);
    let opts = lzma_rs::decompress::Options {
        unpacked_size: lzma_rs::decompress::UnpackedSize::UseProvided(Some(size.min(max_size + 1))),
        // The dictionary size is the file's to choose: cap it like the output.
        memlimit: Some((max_size.saturating_add(1)).min(usize::MAX as u64) as usize),
        allow_incomplete: false,
    };
    let mut out = Vec::new();
    lzma_rs::lzma_decompress_with_options(&mut &stream[..], &mut out, &opts)
        .map_err(|e| format!("lzma error: {e}"))?;
    Ok(out)
}
