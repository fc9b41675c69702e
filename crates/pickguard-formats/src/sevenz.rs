//! 7z archives, decoded by `sevenz-rust2` (pure Rust, header memory
//! bounded) with the output bounded here. Members are handed over as an
//! extractor (`py7zr`, `7z x`) writes them: what decoded before an error
//! (a CRC failure is found only after the data) included.

use sevenz_rust2::{ArchiveReader, EntryDecision, Error, Password};

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
    /// The deadline passed while a member was decoding (its name).
    OutOfTime { member: String },
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

/// Branch-converter filters (BCJ) whose start offset (their properties)
/// sevenz-rust2 does not apply: with a non-zero offset, py7zr (liblzma)
/// and pickguard would decode different bytes.
const BCJ: &[&[u8]] = &[
    &[0x03, 0x03, 0x01, 0x03],
    &[0x03, 0x03, 0x02, 0x05],
    &[0x03, 0x03, 0x04, 0x01],
    &[0x03, 0x03, 0x05, 0x01],
    &[0x03, 0x03, 0x07, 0x01],
    &[0x03, 0x03, 0x08, 0x05],
    &[0x0a],
    &[0x0b],
];

/// Bytes decoded between two looks at the deadline (PPMd decodes at about
/// a megabyte a second).
const STEP: usize = 64 << 10;

/// Hand every member (name, bytes) to `each`, in archive order, within
/// `max_members` and `budget` bytes of decoded output (`budget` is read
/// before each member and lowered as members decode: the caller lowers
/// it too for what nested reading uses) and before `deadline`. `Ok` when
/// the archive was read to its end or `each` stopped it.
pub fn for_each(
    data: &[u8],
    max_members: usize,
    budget: &std::cell::Cell<u64>,
    deadline: Option<std::time::Instant>,
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
    for b in &ar.archive().blocks {
        for c in &b.coders {
            if BCJ.contains(&c.encoder_method_id()) && c.properties().iter().any(|&x| x != 0) {
                return Err(Ended::Unreadable {
                    member: None,
                    why: "it uses a branch filter (BCJ) with a start offset, which pickguard's decoder does not apply (an extractor that does gets other bytes)".into(),
                });
            }
        }
    }
    let mut current: Option<String> = None;
    let mut too_large = false;
    let mut late = false;
    let res = ar.for_each_entries_with_decision_allowing_surplus(|e, r| {
        if e.is_directory() && !e.has_stream {
            return Ok(EntryDecision::Continue);
        }
        current = Some(e.name().to_owned());
        let remaining = budget.get();
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; STEP];
        let read = loop {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                late = true;
                return Ok(EntryDecision::Stop);
            }
            match r.read(&mut chunk) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() as u64 > remaining {
                        too_large = true;
                        return Ok(EntryDecision::Stop);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        budget.set(remaining - buf.len() as u64);
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
    if late {
        return Err(Ended::OutOfTime {
            member: current.unwrap_or_default(),
        });
    }
    res.map_err(|e| Ended::Unreadable {
        member: current,
        why: why(&e),
    })
}
