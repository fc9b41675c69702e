/*!
Checkpoints to safetensors without running any of their code.

1. The file is scanned with pickguard's engine; anything but clean (pure
   tensor data and plain values) is refused, naming the globals and where
   they are.
2. The restricted builder (`build.rs`) turns the pickle into plain values and
   tensor descriptions (dtype, shape, strides, offset, storage key).
3. The writer (`write.rs`) streams each tensor's bytes from the checkpoint
   file into the safetensors file (`copy_file_range` for contiguous tensors),
   so memory stays flat whatever the model size.
*/

mod build;
mod load;
mod npz;
mod write;

pub use build::Obj;
pub use load::{Checkpoint, Storage, load};
pub use write::{Shared, WriteOptions, WriteReport, named_tensors, write_safetensors};

use pickguard_formats::dtype::DType;
use serde::Serialize;

/// One tensor as the checkpoint describes it: a strided view of a storage.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct TensorSpec {
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// In elements.
    pub strides: Vec<u64>,
    /// In elements, from the start of the storage.
    pub offset: u64,
    pub storage: String,
}

impl TensorSpec {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    pub fn nbytes(&self) -> u64 {
        self.numel() * self.dtype.size()
    }

    /// Bytes from the storage start to the end of the last element (0 for an empty tensor).
    pub fn extent_bytes(&self) -> Option<u64> {
        if self.shape.contains(&0) {
            return Some(0);
        }
        let mut last = self.offset;
        for (&n, &st) in self.shape.iter().zip(&self.strides) {
            last = last.checked_add((n - 1).checked_mul(st)?)?;
        }
        last.checked_add(1)?.checked_mul(self.dtype.size())
    }

    /// True when the elements are laid out densely in C order.
    pub fn is_contiguous(&self) -> bool {
        let mut expect = 1u64;
        for (&n, &st) in self.shape.iter().zip(&self.strides).rev() {
            if n != 1 && st != expect {
                return false;
            }
            expect *= n;
        }
        true
    }
}

/// Why a conversion did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The file is not pure tensor data; nothing was executed or written.
    #[error("refused: {path} is {verdict}, not pure tensor data:\n{details}")]
    Refused {
        path: String,
        verdict: String,
        details: String,
    },
    #[error("unsupported: {what} (at offset {offset})")]
    Unsupported { what: String, offset: u64 },
    #[error("{0}")]
    Format(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl ConvertError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ConvertError {
        let context = context.into();
        move |source| ConvertError::Io { context, source }
    }
}
