//! Model files where they live: over HTTP(S) range requests and in
//! S3-compatible object stores, fetching only the bytes a scan reads.
//!
//! A remote file becomes an image of its full size (a sparse temporary
//! file, mapped) in which only fetched ranges hold data. What is fetched
//! follows what the scanner reads and what the victim's loader reads:
//! everything except the bytes of tensors (the data records of a torch
//! checkpoint, a GGUF file's or safetensors file's tensor data), which no
//! loader interprets. The scanner is told which ranges are absent and asks
//! for any it finds it needs ([`Fetched::ensure`] them and scan again);
//! what is still absent then is reported, never read as zeros.

mod plan;
mod source;

pub use plan::prepare;
pub use source::{Location, Object, Options, display, open};

use std::ops::Range;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Address(String),
    #[error("{0}")]
    Fetch(String),
    #[error("the object changed while it was read ({0}): nothing of it was scanned")]
    Changed(String),
    #[error("{0}")]
    TooMuch(String),
    #[error("{0}")]
    Local(String),
}

/// A remote file being read: its image and what of it is fetched.
pub struct Fetched {
    pub object: Object,
    image: Image,
    /// Fetched ranges, sorted and disjoint.
    have: Vec<Range<u64>>,
    /// Bytes fetched and requests made.
    pub bytes: u64,
    pub requests: u64,
    max_fetch: u64,
}

enum Image {
    Empty,
    Mapped(memmap2::MmapMut, #[allow(dead_code)] std::fs::File),
}

/// Ranges closer than this are fetched as one (fewer requests).
const MERGE_GAP: u64 = 16 << 10;
/// Largest single request (bounds memory in flight).
const CHUNK: u64 = 16 << 20;
/// Requests in flight at once.
const PARALLEL: usize = 8;

impl Fetched {
    pub fn new(object: Object, opts: &Options) -> Result<Fetched, Error> {
        let image = if object.size == 0 {
            Image::Empty
        } else {
            // A sparse file: pages that are never written take no space.
            let file = tempfile::tempfile()
                .map_err(|e| Error::Local(format!("temporary file for the image: {e}")))?;
            file.set_len(object.size)
                .map_err(|e| Error::Local(format!("sizing the image: {e}")))?;
            // SAFETY: the file is ours alone (unlinked at creation) and is
            // neither truncated nor written otherwise while mapped.
            #[allow(unsafe_code)]
            let map = unsafe { memmap2::MmapMut::map_mut(&file) }
                .map_err(|e| Error::Local(format!("mapping the image: {e}")))?;
            Image::Mapped(map, file)
        };
        let mut f = Fetched {
            image,
            have: Vec::new(),
            bytes: 0,
            requests: 1,
            max_fetch: opts.max_fetch,
            object,
        };
        if let Some((at, b)) = f.object.first.take() {
            f.bytes += b.len() as u64;
            f.write(at, &b);
        }
        Ok(f)
    }

    /// The file as fetched so far (absent ranges read as zeros: scan with
    /// [`Fetched::absent`]).
    pub fn data(&self) -> &[u8] {
        match &self.image {
            Image::Empty => &[],
            Image::Mapped(m, _) => m,
        }
    }

    fn write(&mut self, at: u64, b: &[u8]) {
        if let Image::Mapped(m, _) = &mut self.image {
            m[at as usize..at as usize + b.len()].copy_from_slice(b);
        }
        add(&mut self.have, at..at + b.len() as u64);
    }

    /// Ranges not fetched, sorted.
    pub fn absent(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = 0;
        for r in &self.have {
            if r.start > at {
                out.push((at, r.start));
            }
            at = r.end;
        }
        if at < self.object.size {
            out.push((at, self.object.size));
        }
        out
    }

    /// The first absent byte, or the size when everything is fetched.
    pub fn first_absent(&self) -> u64 {
        self.absent()
            .first()
            .map(|r| r.0)
            .unwrap_or(self.object.size)
    }

    /// The whole file from one answer, replacing whatever was fetched.
    pub(crate) async fn fetch_whole_once(&mut self) -> Result<(), Error> {
        if self.object.size > self.max_fetch {
            return Err(Error::TooMuch(format!(
                "{}: the server gives no strong ETag, so ranges read apart could come from different versions of the file; it is read whole or not at all, and its {} bytes are over --max-fetch {}",
                self.object.display, self.object.size, self.max_fetch
            )));
        }
        let b = self.object.get_whole(self.max_fetch).await?;
        self.requests += 1;
        self.bytes += b.len() as u64;
        self.write(0, &b);
        Ok(())
    }

    /// Fetch whatever of `want` is not fetched yet.
    pub async fn ensure(
        &mut self,
        want: impl IntoIterator<Item = Range<u64>>,
    ) -> Result<(), Error> {
        let size = self.object.size;
        let mut need: Vec<Range<u64>> = Vec::new();
        for r in want {
            let r = r.start.min(size)..r.end.min(size);
            if r.is_empty() {
                continue;
            }
            for gap in missing(&self.have, r) {
                add(&mut need, gap);
            }
        }
        // Merge near neighbours, then split into bounded requests.
        let mut merged: Vec<Range<u64>> = Vec::new();
        for r in need {
            match merged.last_mut() {
                Some(last) if r.start <= last.end + MERGE_GAP => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        let mut parts = Vec::new();
        for r in merged {
            let mut a = r.start;
            while a < r.end {
                let b = (a + CHUNK).min(r.end);
                parts.push(a..b);
                a = b;
            }
        }
        let total: u64 = parts.iter().map(|r| r.end - r.start).sum();
        if total == 0 {
            return Ok(());
        }
        if self.object.whole {
            // The server sent everything at first; nothing can be missing.
            return Err(Error::Fetch(format!(
                "{}: bytes are missing from a whole-file answer",
                self.object.display
            )));
        }
        if self.bytes + total > self.max_fetch {
            return Err(Error::TooMuch(format!(
                "{}: scanning it needs more than {} of its {} bytes (--max-fetch {}): not scanned",
                self.object.display, self.bytes, size, self.max_fetch
            )));
        }
        let obj = self.object.clone();
        let mut got = futures_util::stream::iter(parts.into_iter().map(|r| {
            let obj = &obj;
            async move { obj.get(r.clone()).await.map(|b| (r.start, b)) }
        }))
        .buffer_unordered(PARALLEL);
        use futures_util::StreamExt;
        while let Some(res) = got.next().await {
            let (at, b) = res?;
            self.requests += 1;
            self.bytes += b.len() as u64;
            self.write(at, &b);
        }
        Ok(())
    }
}

/// Add `r` to a sorted, disjoint set, merging what touches.
fn add(set: &mut Vec<Range<u64>>, r: Range<u64>) {
    if r.is_empty() {
        return;
    }
    let mut r = r;
    let mut out = Vec::with_capacity(set.len() + 1);
    let mut placed = false;
    for s in set.drain(..) {
        if s.end < r.start {
            out.push(s);
        } else if r.end < s.start {
            if !placed {
                out.push(r.clone());
                placed = true;
            }
            out.push(s);
        } else {
            r = r.start.min(s.start)..r.end.max(s.end);
        }
    }
    if !placed {
        out.push(r);
    }
    out.sort_by_key(|x| x.start);
    *set = out;
}

/// The parts of `r` not in `set`.
fn missing(set: &[Range<u64>], r: Range<u64>) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = r.start;
    for s in set {
        if s.end <= at {
            continue;
        }
        if s.start >= r.end {
            break;
        }
        if s.start > at {
            out.push(at..s.start);
        }
        at = at.max(s.end);
        if at >= r.end {
            break;
        }
    }
    if at < r.end {
        out.push(at..r.end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_sets() {
        let mut s = Vec::new();
        add(&mut s, 10..20);
        add(&mut s, 30..40);
        add(&mut s, 0..5);
        assert_eq!(s, vec![0..5, 10..20, 30..40]);
        add(&mut s, 18..31);
        assert_eq!(s, vec![0..5, 10..40]);
        add(&mut s, 5..10);
        assert_eq!(s, vec![0..40]);
        assert_eq!(missing(&[2..4, 6..8], 0..10), vec![0..2, 4..6, 8..10]);
        assert_eq!(missing(&[0..4, 4..10], 3..5), Vec::<Range<u64>>::new());
        assert_eq!(missing(&[], 3..5), vec![3..5]);
    }
}
