//! Getting bytes: memory maps for files, a buffer for standard input.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// A file's bytes.
pub enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// Map a file read-only. Checkpoints are large and a scan touches only
/// their pickles and headers, so mapping avoids reading tensor bytes at all.
pub fn open(path: &Path) -> std::io::Result<Bytes> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Bytes::Owned(Vec::new()));
    }
    if len < 64 * 1024 {
        let mut v = Vec::with_capacity(len as usize);
        (&file).read_to_end(&mut v)?;
        return Ok(Bytes::Owned(v));
    }
    map(&file)
}

#[allow(unsafe_code)]
fn map(file: &File) -> std::io::Result<Bytes> {
    // SAFETY: the map is read-only and private to this process. The one
    // hazard is another process truncating the file while it is mapped (a
    // SIGBUS), which a scanner shares with every mmap-based reader; files
    // are never written through the map.
    let m = unsafe { memmap2::Mmap::map(file)? };
    Ok(Bytes::Mapped(m))
}

/// All of standard input.
pub fn stdin() -> std::io::Result<Bytes> {
    let mut v = Vec::new();
    std::io::stdin().lock().read_to_end(&mut v)?;
    Ok(Bytes::Owned(v))
}
