/*!
Model integrity compatible with OpenSSF model signing (`model_signing` 1.1.x):
a manifest of per-file SHA-256 digests (`manifest.rs`), an in-toto statement
over it, signed as a DSSE envelope inside a Sigstore bundle v0.3 (`bundle.rs`).
*/

mod bundle;
pub mod manifest;
mod x509;

pub use bundle::{
    SignedStatement, Trust, VerifyOptions, VerifyReport, public_key_hint, sign,
    sign_with_certificate, verify,
};
pub use manifest::{GIT_PATHS, HashOptions, Manifest, Resource, hash_model};

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: is a symbolic link (use --allow-symlinks to follow links)")]
    Symlink(PathBuf),
    #[error("{0}: not a regular file or directory")]
    NotRegular(PathBuf),
    #[error("{0}: file name is not UTF-8 and cannot be recorded in a manifest")]
    NonUtf8Name(PathBuf),
    #[error("key: {0}")]
    Key(String),
    #[error("signature file: {0}")]
    Bundle(String),
}

impl SignError {
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SignError + '_ {
        move |source| SignError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
