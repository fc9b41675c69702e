//! What of a remote file a scan needs, decided from the file's own
//! structure as the formats crate reads it.
//!
//! Only three formats are read sparsely, because only their bulk is bytes
//! no loader interprets: a torch zip's data records, a GGUF file's tensor
//! data, a safetensors file's tensor data. Everything else (pickles,
//! joblib, HDF5, ONNX, archives) is fetched whole, within `--max-fetch`.
//! Before a file is read sparsely, the readings the scanner makes of any
//! file are checked against what is fetched: a pickle from byte 0 that
//! runs into unfetched bytes, and an HDF5 superblock where h5py looks for
//! one (512, 1024, 2048... bytes in), make it fetched whole.

use crate::{Error, Fetched, Object, Options};
use pickguard_formats::{Sniffed, gguf, hdf5, sniff, torch, zip};
use pickguard_pickle as pk;
use std::ops::Range;

const HEAD: u64 = crate::source::PROBE;
/// The end-of-central-directory search window (64 KiB comment + record),
/// and room for the ZIP64 locator.
const TAIL: u64 = 0xffff + 22 + 20 + 1024;
/// Most of the file a pickle read from byte 0 may make pickguard fetch
/// piece by piece before the file is fetched whole.
const PICKLE_PROBE_MAX: u64 = 64 << 20;
/// Archives with more entries are fetched whole (each entry costs a
/// request for its local header).
const MAX_SPARSE_ENTRIES: usize = 100_000;

/// Open `object` and fetch what the scan needs of it. `pickle` are the
/// scanner's pickle options (the reading from byte 0 is made with them).
pub async fn prepare(
    object: Object,
    opts: &Options,
    pickle: &pk::Options,
) -> Result<Fetched, Error> {
    let mut f = Fetched::new(object, opts)?;
    let size = f.object.size;
    if !f.object.versioned() {
        f.fetch_whole_once().await?;
        return Ok(f);
    }
    let mut want = vec![0..HEAD.min(size), size.saturating_sub(TAIL)..size];
    // h5py finds a superblock at 0, 512, 1024, 2048, ... bytes.
    let mut at = 512u64;
    while at < size {
        want.push(at..at + 8);
        at = at.saturating_mul(2);
    }
    f.ensure(want).await?;
    let kind = sniff(f.data());
    let sparse = match kind {
        Sniffed::Zip => zip_plan(&mut f).await?,
        Sniffed::Gguf => gguf_plan(&mut f).await?,
        Sniffed::Safetensors => safetensors_plan(&mut f).await?,
        _ => false,
    };
    let polyglot_zip = kind != Sniffed::Zip && zip::find_eocd(f.data()).is_some();
    let hdf5_inside = hdf5::superblock_offset(f.data()).is_some_and(|o| o > 0);
    if !sparse || polyglot_zip || hdf5_inside {
        f.ensure(Some(0..size)).await?;
        return Ok(f);
    }
    pickle_from_start(&mut f, pickle).await?;
    Ok(f)
}

/// A pickle read from byte 0 (the scanner does it for every file) must
/// stop inside what is fetched; fetch on until it does.
async fn pickle_from_start(f: &mut Fetched, pickle: &pk::Options) -> Result<(), Error> {
    let size = f.object.size;
    let mut step = 4u64 << 10;
    loop {
        let a = f.first_absent();
        if a >= size || !pk::is_plausible_start(f.data()) {
            return Ok(());
        }
        let s = pk::run_stream(&f.data()[..a as usize], 0, 0, pk::ReadView::Linear, pickle);
        let ran_out = match &s.stop {
            pk::StopReason::Error { message, .. } => {
                message.starts_with("pickle data was truncated")
            }
            _ => false,
        };
        if !ran_out {
            return Ok(());
        }
        if a > PICKLE_PROBE_MAX {
            return f.ensure(Some(0..size)).await;
        }
        f.ensure(Some(a..a + step)).await?;
        step = (step * 2).min(4 << 20);
    }
}

/// Everything but the data of a torch checkpoint's `data/` records.
/// `false`: read it whole.
async fn zip_plan(f: &mut Fetched) -> Result<bool, Error> {
    let size = f.object.size;
    let Some(mut end) = zip::end_records(f.data()) else {
        return Ok(false);
    };
    if let Some(r) = end.zip64_record {
        f.ensure(Some(r..r.saturating_add(56))).await?;
        match zip::end_records(f.data()) {
            Some(e) => end = e,
            None => return Ok(false),
        }
    }
    let (a, b) = end.central_directory;
    if a > b || b > size {
        return Ok(false);
    }
    f.ensure(Some(a..b)).await?;
    let Ok(ar) = zip::read(f.data(), MAX_SPARSE_ENTRIES) else {
        return Ok(false);
    };
    // Local headers: the fixed part, the name and room for the alignment
    // padding torch writes; then whatever their own lengths say.
    f.ensure(ar.entries.iter().map(|e| {
        let l = e.local_header_offset;
        l..l.saturating_add(30 + e.name.len() as u64 + 128)
    }))
    .await?;
    let rest: Vec<Range<u64>> = ar
        .entries
        .iter()
        .filter_map(|e| {
            let l = e.local_header_offset;
            Some(l..l + zip::local_header_len(f.data(), l)?)
        })
        .collect();
    f.ensure(rest).await?;
    let Ok(ar) = zip::read(f.data(), MAX_SPARSE_ENTRIES) else {
        return Ok(false);
    };
    let Some(layout) = torch::Layout::of(&ar) else {
        return Ok(false);
    };
    let mut skip: Vec<Range<u64>> = ar
        .entries
        .iter()
        .filter(|e| {
            layout
                .relative_folded(&e.name)
                .is_some_and(|r| r.starts_with("data/"))
        })
        .filter_map(|e| {
            let d = e.data_offset?;
            Some(d.min(size)..d.saturating_add(e.compressed_size).min(size))
        })
        .collect();
    skip.sort_by_key(|r| r.start);
    // Everything else, gaps between records included.
    let mut want = Vec::new();
    let mut at = 0;
    for r in skip {
        if r.start > at {
            want.push(at..r.start);
        }
        at = at.max(r.end);
    }
    want.push(at..size);
    f.ensure(want).await?;
    Ok(true)
}

/// The header, metadata and tensor infos of a GGUF file.
async fn gguf_plan(f: &mut Fetched) -> Result<bool, Error> {
    let size = f.object.size;
    let mut n = HEAD.min(size);
    loop {
        f.ensure(Some(0..n)).await?;
        let g = match gguf::read(&f.data()[..n as usize]) {
            Ok(g) => g,
            Err(_) => return Ok(false),
        };
        if g.data_offset > 0 && g.data_offset <= n {
            return Ok(true);
        }
        if n == size {
            return Ok(false);
        }
        // Truncated, or malformed in a way that may depend on how much of
        // the file the reader was given (counts are bounded by the bytes
        // left): read on. The scanner checks the header it reads was fetched.
        n = n.saturating_mul(2).min(size);
    }
}

/// The header of a safetensors file.
async fn safetensors_plan(f: &mut Fetched) -> Result<bool, Error> {
    let d = f.data();
    let n = u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]));
    let Some(end) = n.checked_add(8).filter(|&e| e <= f.object.size) else {
        return Ok(false);
    };
    f.ensure(Some(0..end)).await?;
    Ok(true)
}
