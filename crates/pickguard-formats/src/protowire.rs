//! The protobuf wire format, walked zero-copy (ONNX and TensorFlow
//! files): a generated decoder would copy every payload into memory, while
//! a scanner needs lengths and positions; lengths are checked against the
//! bytes left, groups (wire types 3/4) refused.

/// A cursor over one message's fields.
pub(crate) struct W<'a> {
    pub(crate) d: &'a [u8],
    pub(crate) p: usize,
}

/// A field's value: a number (varint or fixed) or length-delimited bytes.
pub(crate) enum Val<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

impl<'a> W<'a> {
    pub(crate) fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.d.get(self.p).ok_or("truncated varint")?;
            self.p += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }
    /// The next (field number, value), `None` at the end.
    pub(crate) fn next(&mut self) -> Result<Option<(u64, Val<'a>)>, String> {
        if self.p >= self.d.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (field, wt) = (key >> 3, key & 7);
        if field == 0 {
            return Err("field number 0".into());
        }
        let v = match wt {
            0 => Val::Int(self.varint()?),
            1 | 5 => {
                let n = if wt == 1 { 8 } else { 4 };
                let s = self
                    .d
                    .get(self.p..self.p + n)
                    .ok_or("truncated fixed-width field")?;
                self.p += n;
                let mut b = [0u8; 8];
                b[..n].copy_from_slice(s);
                Val::Int(u64::from_le_bytes(b))
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length overflows")?;
                let end = self
                    .p
                    .checked_add(n)
                    .filter(|&e| e <= self.d.len())
                    .ok_or_else(|| {
                        format!("a field of {n} bytes at {} runs past the end", self.p)
                    })?;
                let s = &self.d[self.p..end];
                self.p = end;
                Val::Bytes(s)
            }
            _ => return Err(format!("wire type {wt} (groups) is not allowed here")),
        };
        Ok(Some((field, v)))
    }
}

impl<'a> W<'a> {
    pub(crate) fn of(d: &'a [u8]) -> W<'a> {
        W { d, p: 0 }
    }
}
