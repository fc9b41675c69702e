//! Getting bytes: memory maps for files, a buffer for standard input.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// A file's bytes.
pub enum Bytes {
    /// A regular file's map, and the file (for reads that should not fault
    /// the map's pages into this process, see [`Bytes::copy_to`]).
    Mapped(memmap2::Mmap, File),
    Owned(Vec<u8>),
}

impl Bytes {
    /// Copy `dst.len()` bytes from `offset` into `dst`: from the file with
    /// pread for a mapped file (so a 1 GiB copy does not also make 1 GiB of
    /// the map resident), from memory otherwise.
    pub fn copy_to(&self, offset: u64, dst: &mut [u8]) -> std::io::Result<()> {
        match self {
            Bytes::Mapped(_, f) => std::os::unix::fs::FileExt::read_exact_at(f, dst, offset),
            Bytes::Owned(v) => {
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|o| v.get(o..o.checked_add(dst.len())?))
                    .ok_or_else(|| std::io::Error::other("range outside the data"))?;
                dst.copy_from_slice(src);
                Ok(())
            }
        }
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m, _) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// Most bytes read from a stream (standard input, a pipe, a device).
pub const MAX_STREAM: u64 = 2 << 30;

/// Map a file read-only. Checkpoints are large and a scan touches only
/// their pickles and headers, so mapping avoids reading tensor bytes at all.
/// Anything that is not a regular file (a pipe, `/dev/stdin`, a process
/// substitution, a character device) is read as a bounded stream; so is a
/// regular file whose size says 0 (`/proc` files), so nothing is taken as
/// empty without being read.
pub fn open(path: &Path) -> std::io::Result<Bytes> {
    open_until(
        path,
        std::time::Instant::now() + std::time::Duration::from_secs(600),
    )
}

/// [`open`], giving up on a stream at `deadline`.
pub fn open_until(path: &Path, deadline: std::time::Instant) -> std::io::Result<Bytes> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let meta = std::fs::metadata(path)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(std::io::Error::other("is a directory"));
    }
    if ft.is_char_device() || ft.is_block_device() {
        return Err(std::io::Error::other(
            "a device, not a file: not scanned (copy the model to a file, or pipe it to `pickguard scan -`)",
        ));
    }
    if !ft.is_file() || meta.len() == 0 {
        // O_NONBLOCK: opening a FIFO nobody writes to must not hang.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_nonblock(ft.is_fifo()))
            .open(path)?;
        let v = read_stream(f, deadline)?;
        if v.is_empty() && !ft.is_file() {
            return Err(std::io::Error::other(
                "read nothing from this pipe or device (no writer, or no data): nothing was scanned",
            ));
        }
        return Ok(Bytes::Owned(v));
    }
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len < 64 * 1024 {
        let mut v = Vec::with_capacity(len as usize);
        (&file).read_to_end(&mut v)?;
        return Ok(Bytes::Owned(v));
    }
    map(file)
}

#[allow(unsafe_code)]
fn map(file: File) -> std::io::Result<Bytes> {
    // SAFETY: the map is read-only and private to this process. The one
    // hazard is another process truncating the file while it is mapped (a
    // SIGBUS), which a scanner shares with every mmap-based reader; files
    // are never written through the map.
    let m = unsafe { memmap2::Mmap::map(&file)? };
    Ok(Bytes::Mapped(m, file))
}

fn libc_nonblock(fifo: bool) -> i32 {
    // O_NONBLOCK on Linux.
    if fifo { 0o4000 } else { 0 }
}

/// Read a stream to its end: at most [`MAX_STREAM`] bytes, until `deadline`.
fn read_stream(mut r: impl Read, deadline: std::time::Instant) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(v),
            Ok(n) => {
                if v.len() as u64 + n as u64 > MAX_STREAM {
                    return Err(std::io::Error::other(format!(
                        "the stream is longer than {MAX_STREAM} bytes: not scanned"
                    )));
                }
                v.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    return Err(std::io::Error::other(
                        "the stream sent nothing before the time limit: not scanned",
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if std::time::Instant::now() > deadline {
            return Err(std::io::Error::other(
                "the stream did not end before the time limit (--timeout): not scanned",
            ));
        }
    }
}

/// All of standard input (bounded like any stream).
pub fn stdin(deadline: std::time::Instant) -> std::io::Result<Bytes> {
    let v = read_stream(std::io::stdin().lock(), deadline)?;
    Ok(Bytes::Owned(v))
}
