//! 7z archives, decoded by `sevenz-rust2` (pure Rust, header memory
//! bounded) with the output bounded here. Members are handed over as an
//! extractor (`py7zr`, `7z x`) writes them: what decoded before an error
//! (a CRC failure is found only after the data) included.

use sevenz_rust2::{ArchiveReader, EntryDecision, Error, Password};
use std::io::Read;

/// Header buffers and decoder dictionaries, each (KiB).
const MEMORY_KB: usize = 256 << 10;

/// What the caller wants after a member.
pub enum Flow {
    Continue,
    Stop,
}

/// How reading ended early.
#[derive(Debug)]
pub enum Ended {
    /// The archive declares more members than allowed (the count).
    TooManyMembers(usize),
    /// Members decompress past the byte budget; `member` is the one that
    /// crossed it (not handed over).
    TooLarge { member: String },
    /// The archive or a member could not be decoded; `member` is the last
    /// one reached, if any.
    Unreadable { member: Option<String>, why: String },
}

fn why(e: &Error) -> String {
    match e {
        Error::PasswordRequired | Error::MaybeBadPassword(_) => {
            "it is encrypted (a password is needed)".to_string()
        }
        Error::UnsupportedCompressionMethod(m) if m.to_ascii_uppercase().contains("AES") => {
            format!("it is encrypted ({m}; a password is needed)")
        }
        Error::UnsupportedCompressionMethod(m) => {
            format!("it uses a compression method pickguard does not decode ({m})")
        }
        e => e.to_string(),
    }
}

/// Hand every member (name, bytes) to `each`, in archive order, within
/// `max_members` and `max_bytes` of decoded output in all. `Ok` when the
/// archive was read to its end or `each` stopped it.
pub fn for_each(
    data: &[u8],
    max_members: usize,
    max_bytes: u64,
    mut each: impl FnMut(&str, &[u8]) -> Flow,
) -> Result<(), Ended> {
    let mut ar = ArchiveReader::new_with_memory_limit(
        std::io::Cursor::new(data),
        Password::empty(),
        MEMORY_KB,
    )
    .map_err(|e| Ended::Unreadable {
        member: None,
        why: why(&e),
    })?;
    ar.set_thread_count(1);
    let declared = ar.archive().files.len();
    if declared > max_members {
        return Err(Ended::TooManyMembers(declared));
    }
    let mut used = 0u64;
    let mut current: Option<String> = None;
    let mut too_large = false;
    let res = ar.for_each_entries_with_decision_allowing_surplus(|e, r| {
        if e.is_directory() && !e.has_stream {
            return Ok(EntryDecision::Continue);
        }
        current = Some(e.name().to_owned());
        let remaining = max_bytes.saturating_sub(used);
        let mut buf = Vec::new();
        let read = r.take(remaining.saturating_add(1)).read_to_end(&mut buf);
        used += buf.len() as u64;
        if buf.len() as u64 > remaining {
            too_large = true;
            return Ok(EntryDecision::Stop);
        }
        let flow = each(e.name(), &buf);
        read.map_err(|e| Error::Io(e, "decoding a 7z member".into()))?;
        Ok(match flow {
            Flow::Continue => EntryDecision::Continue,
            Flow::Stop => EntryDecision::Stop,
        })
    });
    if too_large {
        return Err(Ended::TooLarge {
            member: current.unwrap_or_default(),
        });
    }
    res.map_err(|e| Ended::Unreadable {
        member: current,
        why: why(&e),
    })
}
