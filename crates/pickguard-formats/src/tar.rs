//! A minimal tar reader (ustar, GNU long names, pax headers), enough for
//! torch's legacy tar checkpoints and for finding pickles in tarballs.
//! Written here because members must be returned as slices of the mapped
//! file, with sizes checked against the file rather than trusted.

/// One regular-file member.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

fn octal(field: &[u8]) -> Option<u64> {
    // GNU base-256 for large sizes.
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    let s: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// List regular-file members; at most `max_members`.
pub fn members(data: &[u8], max_members: usize) -> Result<Vec<Member>, String> {
    let mut out = Vec::new();
    let mut p = 0usize;
    let mut long_name: Option<String> = None;
    while p + 512 <= data.len() {
        let h = &data[p..p + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let size =
            octal(&h[124..136]).ok_or_else(|| format!("bad size field in tar header at {p}"))?;
        let size = usize::try_from(size).map_err(|_| "tar member too large")?;
        let start = p + 512;
        if start.checked_add(size).is_none_or(|e| e > data.len()) {
            return Err(format!("tar member at {p} runs past the end of the file"));
        }
        let typ = h[156];
        let mut name: String = h[..100]
            .iter()
            .take_while(|&&b| b != 0)
            .map(|&b| b as char)
            .collect();
        if &h[257..262] == b"ustar" && h[345] != 0 {
            let prefix: String = h[345..500]
                .iter()
                .take_while(|&&b| b != 0)
                .map(|&b| b as char)
                .collect();
            name = format!("{prefix}/{name}");
        }
        match typ {
            b'L' => {
                long_name = Some(
                    String::from_utf8_lossy(&data[start..start + size])
                        .trim_end_matches('\0')
                        .to_owned(),
                );
            }
            b'x' => {
                for rec in String::from_utf8_lossy(&data[start..start + size]).lines() {
                    if let Some(v) = rec
                        .split_once(' ')
                        .and_then(|(_, kv)| kv.strip_prefix("path="))
                    {
                        long_name = Some(v.to_owned());
                    }
                }
            }
            b'0' | 0 | b'7' => {
                if out.len() == max_members {
                    return Err(format!("more than {max_members} tar members"));
                }
                out.push(Member {
                    name: long_name.take().unwrap_or(name),
                    offset: start,
                    size,
                });
            }
            _ => {
                long_name = None;
            }
        }
        p = start + size.div_ceil(512) * 512;
    }
    Ok(out)
}
