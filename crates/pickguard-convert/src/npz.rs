//! `.npz`: a zip of `.npy` members, each one numeric array.

use crate::build::Obj;
use crate::load::{Checkpoint, Storage};
use crate::{ConvertError, TensorSpec};
use pickguard_formats::dtype::DType;
use pickguard_formats::{npy_header, zip};
use std::collections::HashMap;
use std::sync::Arc;

/// The value after `'key':` in a NumPy header dict literal.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let i = header.find(&format!("'{key}'"))?;
    let rest = header[i + key.len() + 2..].trim_start();
    Some(rest.strip_prefix(':')?.trim_start())
}

/// (dtype, shape, fortran order) from a header.
pub fn parse_header(h: &str) -> Result<(DType, Vec<u64>, bool), String> {
    let descr = field(h, "descr").ok_or("no descr")?;
    let q = descr.chars().next().ok_or("empty descr")?;
    if q != '\'' && q != '"' {
        return Err("structured dtypes are not supported".into());
    }
    let d = &descr[1..descr[1..].find(q).ok_or("unterminated descr")? + 1];
    let dtype = DType::from_numpy(d)
        .ok_or_else(|| format!("dtype {d:?} is not a numeric type safetensors holds"))?;
    let fortran = field(h, "fortran_order")
        .ok_or("no fortran_order")?
        .starts_with("True");
    let shape = field(h, "shape").ok_or("no shape")?;
    let shape = shape.strip_prefix('(').ok_or("shape is not a tuple")?;
    let shape = &shape[..shape.find(')').ok_or("unterminated shape")?];
    let dims = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<u64>()
                .map_err(|_| format!("bad dimension {s:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((dtype, dims, fortran))
}

pub fn load(data: &[u8], ar: &zip::Archive, max: u64) -> Result<Checkpoint, ConvertError> {
    let mut entries = Vec::new();
    let mut tensors = Vec::new();
    let mut storages = HashMap::new();
    for e in &ar.entries {
        let Some(name) = e.name.strip_suffix(".npy") else {
            return Err(ConvertError::Format(format!(
                "member {} is not an .npy array",
                e.name
            )));
        };
        let (bytes, _) = zip::entry_data(data, e, max).map_err(ConvertError::Format)?;
        let (header, start, object) =
            npy_header(&bytes).map_err(|m| ConvertError::Format(format!("{}: {m}", e.name)))?;
        if object {
            return Err(ConvertError::Unsupported {
                what: format!("{}: an object array is not numeric data", e.name),
                offset: 0,
            });
        }
        let (dtype, shape, fortran) =
            parse_header(&header).map_err(|m| ConvertError::Unsupported {
                what: format!("{}: {m}", e.name),
                offset: 0,
            })?;
        let mut strides = vec![0u64; shape.len()];
        let mut acc = 1u64;
        let order: Vec<usize> = if fortran {
            (0..shape.len()).collect()
        } else {
            (0..shape.len()).rev().collect()
        };
        for i in order {
            strides[i] = acc;
            acc = acc.saturating_mul(shape[i]);
        }
        let t = TensorSpec {
            dtype,
            shape,
            strides,
            offset: 0,
            storage: e.name.clone(),
        };
        let len = t.nbytes();
        if start as u64 + len > bytes.len() as u64 {
            return Err(ConvertError::Format(format!(
                "{}: array data is truncated",
                e.name
            )));
        }
        let st = match (&bytes, e.method, e.data_offset) {
            (std::borrow::Cow::Borrowed(_), 0, Some(off)) => Storage::File {
                offset: off + start as u64,
                len,
            },
            _ => Storage::Memory(Arc::new(bytes[start..start + len as usize].to_vec())),
        };
        storages.insert(e.name.clone(), st);
        entries.push((name.to_owned(), Obj::Tensor(tensors.len())));
        tensors.push(t);
    }
    Ok(Checkpoint {
        format: "npz".into(),
        root: Obj::Dict(entries),
        tensors,
        storages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        assert_eq!(parse_header(h).unwrap(), (DType::F32, vec![2, 3], false));
        let h = "{'descr': '|b1', 'fortran_order': True, 'shape': (4,), }";
        assert_eq!(parse_header(h).unwrap(), (DType::Bool, vec![4], true));
        assert_eq!(
            parse_header("{'descr': '<i8', 'fortran_order': False, 'shape': (), }")
                .unwrap()
                .1,
            Vec::<u64>::new()
        );
        assert!(
            parse_header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }")
                .is_err()
        );
        assert!(parse_header("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }").is_err());
    }
}
