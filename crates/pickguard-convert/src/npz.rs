//! `.npz`: a zip of `.npy` members, each one numeric array.

use crate::build::Obj;
use crate::load::{Checkpoint, Storage};
use crate::{ConvertError, TensorSpec};
use pickguard_formats::dtype::DType;
use pickguard_formats::{npy_header, zip};
use std::collections::HashMap;
use std::sync::Arc;

/// The value after `'key':` in a NumPy header dict literal.
/// (dtype, shape, fortran order) from a header, read as numpy reads it:
/// the header is a Python literal (`ast.literal_eval`, here
/// `pickguard_formats::pyliteral`, the same reader scan uses), a dict with
/// exactly the keys descr, fortran_order and shape (a repeated key: the last
/// wins, as in Python), shape a tuple of ints, fortran_order a bool.
pub fn parse_header(h: &str) -> Result<(DType, Vec<u64>, bool), String> {
    use pickguard_formats::pyliteral::{Lit, parse};
    let Lit::Dict(items) = parse(h)? else {
        return Err("the header is not a dict".into());
    };
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (k, v) in items {
        match k {
            Lit::Str(k) if k == "descr" => descr = Some(v),
            Lit::Str(k) if k == "fortran_order" => fortran = Some(v),
            Lit::Str(k) if k == "shape" => shape = Some(v),
            other => return Err(format!("unexpected header key {other:?}")),
        }
    }
    let d = match descr.ok_or("no descr")? {
        Lit::Str(d) => d,
        Lit::List(_) => return Err("structured dtypes are not supported".into()),
        other => return Err(format!("descr {other:?} is not a dtype")),
    };
    let dtype = DType::from_numpy(&d)
        .ok_or_else(|| format!("dtype {d:?} is not a numeric type safetensors holds"))?;
    let fortran = match fortran.ok_or("no fortran_order")? {
        Lit::Bool(b) => b,
        other => return Err(format!("fortran_order {other:?} is not a bool")),
    };
    let Lit::Tuple(dims) = shape.ok_or("no shape")? else {
        return Err("shape is not a tuple".into());
    };
    let dims = dims
        .into_iter()
        .map(|x| match x {
            Lit::Int(n) if n >= 0 => {
                u64::try_from(n).map_err(|_| format!("dimension {n} too large"))
            }
            other => Err(format!("bad dimension {other:?}")),
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

#[cfg(test)]
mod header_tests {
    use super::parse_header;

    #[test]
    fn headers_read_as_numpy_reads_them() {
        let (_, shape, f) =
            parse_header("{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2, 3), }")
                .unwrap();
        assert_eq!((shape, f), (vec![2, 3], false));
        // A repeated key: the last one wins, as in a Python dict literal.
        let (_, shape, _) = parse_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'shape': (3, 4)}",
        )
        .unwrap();
        assert_eq!(shape, vec![3, 4]);
        // Escapes and concatenation spell the same dtype.
        let (d, shape, _) =
            parse_header("{'descr': '<' 'f\\x34', 'fortran_order': True, 'shape': ()}").unwrap();
        assert_eq!(shape, Vec::<u64>::new());
        assert_eq!(
            d,
            parse_header("{'descr': '<f4', 'fortran_order': True, 'shape': ()}")
                .unwrap()
                .0
        );
        // What numpy refuses is refused.
        for bad in [
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': [2]}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}",
        ] {
            assert!(parse_header(bad).is_err(), "{bad}");
        }
    }
}
