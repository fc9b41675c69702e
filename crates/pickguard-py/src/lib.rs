//! `pickguard._native`: the extension module behind the `pickguard` Python
//! package. Thin on purpose: each function calls `pickguard::api` (the same
//! code paths as the command line) and hands back JSON text or plain Python
//! values; the typed layer in `python/pickguard` builds the classes and the
//! tensors. No panic crosses into Python: every entry point runs under
//! `catch_unwind` and a panic becomes `pickguard.errors.InternalError`.

use pickguard::api;
use pickguard_convert::{ConvertError, Obj};
use pickguard_scan::{ScanOptions, Scanner};
use pyo3::call::PyCallArgs;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyDict, PyList};
use std::ffi::OsString;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An exception of `pickguard.errors` (a Python module, so the classes are
/// ordinary, documented Python classes).
fn error<'py>(py: Python<'py>, class: &str, args: impl PyCallArgs<'py>) -> PyErr {
    match py
        .import("pickguard.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1(args))
    {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

fn pickguard_error(py: Python<'_>, e: impl std::fmt::Display) -> PyErr {
    error(py, "PickguardError", (format!("{e:#}"),))
}

/// Run `f`, turning a panic into `InternalError` instead of unwinding into Python.
fn guarded<T>(py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(error(
                py,
                "InternalError",
                (format!(
                    "internal error in pickguard (a bug; please report it): {what}"
                ),),
            ))
        }
    }
}

fn scanner(config: Option<&Path>, allow: &[String]) -> anyhow::Result<Scanner> {
    Ok(Scanner::new(
        api::policy(config, allow)?,
        ScanOptions::default(),
    ))
}

fn timeout(seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "timeout must be a positive number of seconds, not {seconds}"
            ))
        })
}

fn json<T: serde::Serialize + ?Sized>(py: Python<'_>, v: &T) -> PyResult<String> {
    serde_json::to_string(v).map_err(|e| pickguard_error(py, e))
}

/// Run the `pickguard` command line (argv[0] first); returns the exit status.
#[pyfunction]
fn cli(py: Python<'_>, argv: Vec<OsString>) -> PyResult<u8> {
    guarded(py, || Ok(py.detach(|| pickguard::main(argv))))
}

/// Scan one file (or FIFO, device...): the report as JSON.
#[pyfunction]
#[pyo3(signature = (path, config=None, allow=Vec::new(), timeout_s=120.0))]
fn scan_file(
    py: Python<'_>,
    path: PathBuf,
    config: Option<PathBuf>,
    allow: Vec<String>,
    timeout_s: f64,
) -> PyResult<String> {
    guarded(py, || {
        let t = timeout(timeout_s)?;
        let s = scanner(config.as_deref(), &allow).map_err(|e| pickguard_error(py, e))?;
        let r = py.detach(|| api::scan_file(&s, &path, t));
        json(py, &r)
    })
}

/// Scan bytes in memory, named `name` in the report.
#[pyfunction]
#[pyo3(signature = (data, name, config=None, allow=Vec::new(), timeout_s=120.0))]
fn scan_bytes(
    py: Python<'_>,
    data: Vec<u8>,
    name: String,
    config: Option<PathBuf>,
    allow: Vec<String>,
    timeout_s: f64,
) -> PyResult<String> {
    guarded(py, || {
        let t = timeout(timeout_s)?;
        let mut s = scanner(config.as_deref(), &allow).map_err(|e| pickguard_error(py, e))?;
        s.options.pickle.limits.deadline = Some(std::time::Instant::now() + t);
        let r = py.detach(|| s.scan_bytes(&name, &data));
        json(py, &r)
    })
}

/// Check a policy file and allow patterns without scanning (errors early).
#[pyfunction]
#[pyo3(signature = (config=None, allow=Vec::new()))]
fn check_policy(py: Python<'_>, config: Option<PathBuf>, allow: Vec<String>) -> PyResult<()> {
    guarded(py, || {
        scanner(config.as_deref(), &allow).map_err(|e| pickguard_error(py, e))?;
        Ok(())
    })
}

/// The files a scan of `paths` reads, and error reports (JSON) for what it cannot.
#[pyfunction]
#[pyo3(signature = (paths, follow_links=true))]
fn walk(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    follow_links: bool,
) -> PyResult<(Vec<PathBuf>, Vec<String>)> {
    guarded(py, || {
        let (files, errors) = py.detach(|| api::walk(&paths, follow_links));
        let errors = errors
            .iter()
            .map(|r| json(py, r))
            .collect::<PyResult<Vec<_>>>()?;
        Ok((files, errors))
    })
}

fn convert_error(py: Python<'_>, e: ConvertError) -> PyErr {
    match e {
        ConvertError::Io { context, source } => {
            let msg = format!("{context}: {source}");
            if source.kind() == std::io::ErrorKind::NotFound {
                PyFileNotFoundError::new_err(msg)
            } else {
                PyOSError::new_err(msg)
            }
        }
        e @ ConvertError::Unsupported { .. } => {
            let ConvertError::Unsupported { offset, .. } = &e else {
                unreachable!()
            };
            let offset = *offset;
            error(py, "UnsupportedError", (e.to_string(), offset))
        }
        e => error(py, "FormatError", (e.to_string(),)),
    }
}

/// Python form of a rebuilt value: tensors as `(0, index)`, values without
/// a plain form as `(1, description)` (the tree holds no other tuples).
fn tree<'py>(py: Python<'py>, o: &Obj, depth: usize) -> PyResult<Bound<'py, PyAny>> {
    // Python rebuilds the tree recursively (two frames a level): stay well
    // inside its recursion limit rather than fail with RecursionError.
    if depth > MAX_DEPTH {
        return Err(error(
            py,
            "FormatError",
            (format!(
                "the checkpoint's values nest deeper than {MAX_DEPTH} levels; pickguard.load rebuilds at most that (pickguard convert reads deeper ones)"
            ),),
        ));
    }
    Ok(match o {
        Obj::None => py.None().into_bound(py),
        Obj::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Obj::Int(i) => i.into_pyobject(py)?.into_any(),
        Obj::Float(f) => f.into_pyobject(py)?.into_any(),
        Obj::Str(s) => s.into_pyobject(py)?.into_any(),
        Obj::List(v) => {
            let l = PyList::empty(py);
            for x in v {
                l.append(tree(py, x, depth + 1)?)?;
            }
            l.into_any()
        }
        Obj::Dict(kv) => {
            let d = PyDict::new(py);
            for (k, v) in kv {
                d.set_item(k, tree(py, v, depth + 1)?)?;
            }
            d.into_any()
        }
        Obj::Tensor(i) => (0u8, *i).into_pyobject(py)?.into_any(),
        Obj::Opaque(s) => (1u8, s).into_pyobject(py)?.into_any(),
    })
}

const MAX_DEPTH: usize = 200;

type Spec = (String, Vec<u64>, Vec<u64>, u64, String);

/// Rebuild a checkpoint without pickle: `(tree, tensor specs, storages)`,
/// where a spec is `(dtype, shape, strides, offset, storage key)` (strides
/// and offset in elements) and storages map keys to `bytearray`s. A file
/// that is not pure tensor data raises `RefusedError` with its scan report.
#[pyfunction]
fn load<'py>(
    py: Python<'py>,
    path: PathBuf,
) -> PyResult<(Bound<'py, PyAny>, Vec<Spec>, Bound<'py, PyDict>)> {
    guarded(py, || {
        let s = Scanner::default();
        let loaded = match py.detach(|| api::load(&path, &s)) {
            Ok(l) => l,
            Err(api::LoadError::Refused(r)) => {
                let mut lines = Vec::new();
                for f in &r.findings {
                    lines.push(format!("{} {}", f.rule.id(), f.message));
                }
                let msg = format!(
                    "{} is {}, not pure tensor data; nothing was loaded:\n  {}",
                    r.path,
                    r.verdict.as_str(),
                    lines.join("\n  ")
                );
                return Err(error(py, "RefusedError", (msg, json(py, &*r)?)));
            }
            Err(api::LoadError::Convert(e)) => return Err(convert_error(py, e)),
        };
        let storages = loaded.storages().map_err(|e| convert_error(py, e))?;
        let out = PyDict::new(py);
        for (k, len) in storages {
            let mut failure = None;
            let ba = PyByteArray::new_with(py, len, |dst| {
                if let Err(e) = loaded.read_storage(k, dst) {
                    failure = Some(e);
                }
                Ok(())
            })?;
            if let Some(e) = failure {
                return Err(convert_error(py, e));
            }
            out.set_item(k, ba)?;
        }
        let specs = loaded
            .tensors()
            .iter()
            .map(|t| {
                (
                    t.dtype.safetensors_name().to_owned(),
                    t.shape.clone(),
                    t.strides.clone(),
                    t.offset,
                    t.storage.clone(),
                )
            })
            .collect();
        Ok((tree(py, loaded.root(), 0)?, specs, out))
    })
}

/// `pickguard convert`: the outcomes as JSON (one per checkpoint).
#[pyfunction]
#[pyo3(signature = (src, dst=None, key=None, strip_prefixes=Vec::new(), shared="alias", extra_json=None, overwrite=false))]
#[allow(clippy::too_many_arguments)]
fn convert(
    py: Python<'_>,
    src: PathBuf,
    dst: Option<PathBuf>,
    key: Option<String>,
    strip_prefixes: Vec<String>,
    shared: &str,
    extra_json: Option<PathBuf>,
    overwrite: bool,
) -> PyResult<String> {
    guarded(py, || {
        let shared = match shared {
            "alias" => api::Shared::Alias,
            "copy" => api::Shared::Copy,
            "refuse" => api::Shared::Refuse,
            other => {
                return Err(PyValueError::new_err(format!(
                    "shared must be 'alias', 'copy' or 'refuse', not {other:?}"
                )));
            }
        };
        let opts = api::WriteOptions {
            key,
            strip_prefixes,
            shared,
            extra_json,
            overwrite,
        };
        let out = py
            .detach(|| api::convert(&src, dst.as_deref(), &opts))
            .map_err(|e| pickguard_error(py, e))?;
        json(py, &out)
    })
}

fn hash_options(ignore_paths: Vec<String>, allow_symlinks: bool) -> api::HashOptions {
    api::HashOptions {
        ignore_paths,
        allow_symlinks,
        ..Default::default()
    }
}

/// `pickguard hash`: the model-signing manifest as JSON.
#[pyfunction]
#[pyo3(signature = (model, ignore_paths=Vec::new(), allow_symlinks=false))]
fn hash(
    py: Python<'_>,
    model: PathBuf,
    ignore_paths: Vec<String>,
    allow_symlinks: bool,
) -> PyResult<String> {
    guarded(py, || {
        let opts = hash_options(ignore_paths, allow_symlinks);
        let m = py
            .detach(|| api::hash(&model, &opts))
            .map_err(|e| pickguard_error(py, e))?;
        json(py, &m)
    })
}

/// `pickguard verify`: the report as JSON (`ok` is the answer).
#[pyfunction]
#[pyo3(signature = (model, signature, public_key=None, cert_chain=Vec::new(), ignore_paths=Vec::new(), allow_symlinks=false, ignore_unsigned_files=false))]
#[allow(clippy::too_many_arguments)]
fn verify(
    py: Python<'_>,
    model: PathBuf,
    signature: PathBuf,
    public_key: Option<PathBuf>,
    cert_chain: Vec<PathBuf>,
    ignore_paths: Vec<String>,
    allow_symlinks: bool,
    ignore_unsigned_files: bool,
) -> PyResult<String> {
    guarded(py, || {
        let opts = api::VerifyOptions {
            hash: hash_options(ignore_paths, allow_symlinks),
            ignore_unsigned_files,
        };
        let r = py
            .detach(|| api::verify(&model, &signature, public_key.as_ref(), &cert_chain, &opts))
            .map_err(|e| error(py, "VerificationError", (format!("{e:#}"),)))?;
        json(py, &r)
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("HAS_BPF", cfg!(feature = "bpf"))?;
    m.add_function(wrap_pyfunction!(cli, m)?)?;
    m.add_function(wrap_pyfunction!(scan_file, m)?)?;
    m.add_function(wrap_pyfunction!(scan_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(check_policy, m)?)?;
    m.add_function(wrap_pyfunction!(walk, m)?)?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    m.add_function(wrap_pyfunction!(hash, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    Ok(())
}
