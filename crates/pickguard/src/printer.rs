//! Standard output for every command.
//!
//! A closed pipe (`pickguard scan models/ | head`) ends the output, never
//! the command: the command finishes and exits with its verdict, so a CI
//! gate that pipes the report still fails on a malicious file. Any other
//! write error (a full disk behind a redirect) is an error: a report that
//! was not written is never reported as written.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Write `s` to standard output. After the reader has gone, writes are
/// dropped and succeed.
pub fn write(s: &str) -> std::io::Result<()> {
    write_bytes(s.as_bytes())
}

/// [`write`] for bytes.
pub fn write_bytes(b: &[u8]) -> std::io::Result<()> {
    if CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(b).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        r => r,
    }
}

/// `println!` through [`write`]: evaluates to `std::io::Result<()>`.
macro_rules! outln {
    () => { $crate::printer::write("\n") };
    ($($t:tt)*) => { $crate::printer::write(&(format!($($t)*) + "\n")) };
}
