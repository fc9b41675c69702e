//! Tensor element types: torch's names (dtype globals and legacy storage
//! classes), NumPy's type strings, and safetensors' names.

use serde::Serialize;

/// An element type pickguard can carry from a checkpoint to safetensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum DType {
    Bool,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F16,
    BF16,
    F32,
    F64,
    F8E4M3,
    F8E5M2,
    C64,
}

impl DType {
    pub fn size(self) -> u64 {
        use DType::*;
        match self {
            Bool | U8 | I8 | F8E4M3 | F8E5M2 => 1,
            U16 | I16 | F16 | BF16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | C64 => 8,
        }
    }

    /// The name in a safetensors header.
    pub fn safetensors_name(self) -> &'static str {
        use DType::*;
        match self {
            Bool => "BOOL",
            U8 => "U8",
            I8 => "I8",
            U16 => "U16",
            I16 => "I16",
            U32 => "U32",
            I32 => "I32",
            U64 => "U64",
            I64 => "I64",
            F16 => "F16",
            BF16 => "BF16",
            F32 => "F32",
            F64 => "F64",
            F8E4M3 => "F8_E4M3",
            F8E5M2 => "F8_E5M2",
            C64 => "C64",
        }
    }

    /// From its name in a safetensors header (`F32`, `F8_E4M3`...).
    pub fn from_safetensors_name(name: &str) -> Option<DType> {
        use DType::*;
        [
            Bool, U8, I8, U16, I16, U32, I32, U64, I64, F16, BF16, F32, F64, F8E4M3, F8E5M2, C64,
        ]
        .into_iter()
        .find(|d| d.safetensors_name() == name)
    }

    /// From a torch dtype global's name (`torch.float32` -> `float32`).
    pub fn from_torch_name(name: &str) -> Option<DType> {
        use DType::*;
        Some(match name {
            "bool" => Bool,
            "uint8" => U8,
            "int8" => I8,
            "uint16" => U16,
            "int16" | "short" => I16,
            "uint32" => U32,
            "int32" | "int" => I32,
            "uint64" => U64,
            "int64" | "long" => I64,
            "float16" | "half" => F16,
            "bfloat16" => BF16,
            "float32" | "float" => F32,
            "float64" | "double" => F64,
            "float8_e4m3fn" => F8E4M3,
            "float8_e5m2" => F8E5M2,
            "complex64" | "cfloat" => C64,
            _ => return None,
        })
    }

    /// From a legacy typed-storage class name (`FloatStorage`).
    pub fn from_storage_name(name: &str) -> Option<DType> {
        use DType::*;
        Some(match name {
            "BoolStorage" => Bool,
            "ByteStorage" => U8,
            "CharStorage" => I8,
            "ShortStorage" => I16,
            "IntStorage" => I32,
            "LongStorage" => I64,
            "HalfStorage" => F16,
            "BFloat16Storage" => BF16,
            "FloatStorage" => F32,
            "DoubleStorage" => F64,
            "ComplexFloatStorage" => C64,
            "UInt16Storage" => U16,
            "UInt32Storage" => U32,
            "UInt64Storage" => U64,
            "Float8_e4m3fnStorage" => F8E4M3,
            "Float8_e5m2Storage" => F8E5M2,
            // Untyped storages are bytes; the tensor's dtype comes from _rebuild_tensor_v3.
            "UntypedStorage" => U8,
            _ => return None,
        })
    }

    /// From a NumPy type string (`<f4`, `|b1`); big-endian types are not supported.
    pub fn from_numpy(descr: &str) -> Option<DType> {
        use DType::*;
        let d = descr.trim_start_matches(['<', '|', '=']);
        Some(match d {
            "b1" | "?" => Bool,
            "u1" => U8,
            "i1" => I8,
            "u2" => U16,
            "i2" => I16,
            "u4" => U32,
            "i4" => I32,
            "u8" => U64,
            "i8" => I64,
            "f2" => F16,
            "f4" => F32,
            "f8" => F64,
            "c8" => C64,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_agree() {
        assert_eq!(
            DType::from_torch_name("float32"),
            DType::from_storage_name("FloatStorage")
        );
        assert_eq!(DType::from_numpy("<f4"), Some(DType::F32));
        assert_eq!(DType::from_numpy(">f4"), None);
        assert_eq!(DType::from_torch_name("bfloat16").map(DType::size), Some(2));
        assert_eq!(DType::F8E4M3.safetensors_name(), "F8_E4M3");
    }
}
