//! The raw storage section of a legacy (stacked-pickle) torch checkpoint:
//! after the storage-key list, for each key in order, an int64 element count
//! and `count × element size` bytes.

/// Where one storage's bytes lie.
#[derive(Clone, Debug, PartialEq)]
pub struct RawStorage {
    pub key: String,
    /// Offset of the first data byte (after the count).
    pub offset: u64,
    /// Elements, as the file declares.
    pub numel: u64,
    pub element_size: u64,
}

/// Why the walk stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum WalkError {
    /// A key whose element size the caller could not give.
    UnknownElementSize { key: String, at: u64 },
    /// The file ends inside a storage.
    Truncated { key: String, at: u64 },
}

/// Walk the section starting at `start`, with the element size of each key
/// (from the object stream's persistent ids). Returns the storages and the
/// offset just after the last one.
pub fn walk(
    data: &[u8],
    start: usize,
    keys: &[String],
    element_size: impl Fn(&str) -> Option<u64>,
) -> Result<(Vec<RawStorage>, usize), WalkError> {
    let mut pos = start;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let at = pos as u64;
        let Some(es) = element_size(k) else {
            return Err(WalkError::UnknownElementSize { key: k.clone(), at });
        };
        let Some(nb) = data.get(pos..pos + 8) else {
            return Err(WalkError::Truncated { key: k.clone(), at });
        };
        let numel = u64::from_le_bytes(nb.try_into().unwrap_or([0; 8]));
        let len = numel
            .checked_mul(es)
            .filter(|&l| l <= (data.len() - pos - 8) as u64);
        let Some(len) = len else {
            return Err(WalkError::Truncated { key: k.clone(), at });
        };
        out.push(RawStorage {
            key: k.clone(),
            offset: at + 8,
            numel,
            element_size: es,
        });
        pos += 8 + len as usize;
    }
    Ok((out, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_and_stops() {
        let mut d = vec![0u8; 3];
        d.extend_from_slice(&2u64.to_le_bytes());
        d.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        d.extend_from_slice(&1u64.to_le_bytes());
        d.extend_from_slice(&[9]);
        let keys = vec!["a".to_string(), "b".to_string()];
        let (s, end) = walk(&d, 3, &keys, |k| Some(if k == "a" { 4 } else { 1 })).unwrap();
        assert_eq!(s[0].offset, 11);
        assert_eq!(s[1].offset, 27);
        assert_eq!(end, d.len());
        assert!(matches!(
            walk(&d, 3, &keys, |_| Some(8)),
            Err(WalkError::Truncated { .. })
        ));
        assert!(matches!(
            walk(&d, 3, &keys, |_| None),
            Err(WalkError::UnknownElementSize { .. })
        ));
    }
}
