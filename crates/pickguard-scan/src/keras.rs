//! Keras v3 archives (`.keras`: a zip of `config.json`, `metadata.json` and
//! weights). The weights are HDF5 data; the code risk is in `config.json`:
//! every object names a `module` Keras imports, plain functions name any
//! attribute of it, and a `Lambda` layer may carry marshalled Python
//! bytecode (`__lambda__`), which `load_model(safe_mode=False)` and older
//! Keras run.

use crate::finding::Rule;
use crate::policy::{Class, Policy};
use serde_json::Value;

/// One thing found in the configuration: rule, message, and the global it
/// names when there is one.
pub(crate) type Hit = (Rule, String, Option<String>);

/// Bytes a Keras loader deserialises itself: a `TorchModuleWrapper`
/// layer's `config.module`, the base64 of a `torch.save` checkpoint that
/// `from_config` passes to `torch.load(weights_only=False)` (with
/// safe_mode=False, and in any mode before Keras 3.11).
pub(crate) struct Blob {
    /// The layer's name, for the finding's location.
    pub layer: String,
    /// Decoded as Python's `base64.b64decode` does; `Err` when it cannot be.
    pub bytes: Result<Vec<u8>, String>,
}

/// What a `config.json` holds.
#[derive(Default)]
pub(crate) struct Judged {
    pub hits: Vec<Hit>,
    pub blobs: Vec<Blob>,
}

/// Judge a `config.json`. Parse errors (including nesting deeper than
/// serde_json's recursion limit) are returned as `Err`.
pub(crate) fn check_config(policy: &Policy, json: &[u8]) -> Result<Judged, String> {
    let v: Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let mut out = Judged::default();
    walk(policy, &v, &mut out);
    Ok(out)
}

/// `base64.b64decode(s)` without `validate`: characters outside the
/// standard alphabet are discarded first, then the padding must be right.
/// Hand-written because the base64 crate has no mode that discards.
fn b64decode_lenient(s: &str) -> Result<Vec<u8>, String> {
    let mut vals = Vec::with_capacity(s.len());
    let mut pad = 0usize;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                pad += 1;
                continue;
            }
            _ => continue,
        };
        if pad > 0 {
            // binascii stops at the first padded quad; data after it is
            // ignored only in non-strict mode when the quad is complete.
            break;
        }
        vals.push(v);
    }
    if vals.len() % 4 == 1 {
        return Err(format!(
            "invalid base64: {} data characters cannot be a whole number of bytes",
            vals.len()
        ));
    }
    if vals.len() % 4 != 0 && pad < 4 - vals.len() % 4 {
        return Err("invalid base64: incorrect padding".into());
    }
    let mut out = Vec::with_capacity(vals.len() * 3 / 4);
    for chunk in vals.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &v)| acc | (u32::from(v) << (18 - 6 * i)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    Ok(out)
}

/// The base64 text of a TorchModuleWrapper's `module`: a string, or the
/// `{"class_name": "__bytes__", "config": {"value": ...}}` wrapper Keras's
/// serialiser may write.
fn module_text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) if o.get("class_name").and_then(Value::as_str) == Some("__bytes__") => o
            .get("config")
            .and_then(|c| c.get("value"))
            .and_then(Value::as_str),
        _ => None,
    }
}

fn is_keras_module(m: &str) -> bool {
    m == "keras" || m.starts_with("keras.") || m == "tf_keras" || m.starts_with("tf_keras.")
}

/// Depth is bounded by the parser's recursion limit (128).
fn walk(policy: &Policy, v: &Value, out: &mut Judged) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| walk(policy, x, out)),
        Value::Object(o) => {
            let hits = &mut out.hits;
            let class = o.get("class_name").and_then(Value::as_str);
            let registered = o.get("registered_name").and_then(Value::as_str);
            if class == Some("TorchModuleWrapper")
                || registered.is_some_and(|r| r.ends_with("TorchModuleWrapper"))
            {
                let config = o.get("config");
                if let Some(text) = config.and_then(|c| c.get("module")).and_then(module_text) {
                    let layer = config
                        .and_then(|c| c.get("name"))
                        .and_then(Value::as_str)
                        .or_else(|| o.get("name").and_then(Value::as_str))
                        .unwrap_or("TorchModuleWrapper")
                        .to_owned();
                    out.blobs.push(Blob {
                        layer,
                        bytes: b64decode_lenient(text),
                    });
                }
            }
            if class == Some("__lambda__") {
                let code = o
                    .get("config")
                    .and_then(|c| c.get("code"))
                    .and_then(Value::as_str)
                    .map(|c| c.len())
                    .unwrap_or(0);
                hits.push((
                    Rule::KerasLambda,
                    format!(
                        "a Lambda layer carries marshalled Python bytecode ({code} base64 chars): keras.saving.load_model(safe_mode=False) and older Keras run it"
                    ),
                    None,
                ));
            }
            if let (Some(module), Some(class)) = (o.get("module").and_then(Value::as_str), class)
                && !is_keras_module(module)
            {
                // A plain function is `module` + its name in `config`.
                let name = match (class, o.get("config")) {
                    ("function", Some(Value::String(f))) => f.as_str(),
                    _ => class,
                };
                let q = format!("{module}.{name}");
                let hit = match policy.classify(module, name) {
                    Class::Allowed { .. } => None,
                    Class::Dangerous { why, .. } => Some((
                        Rule::DangerousGlobal,
                        format!("config.json makes Keras import {q}: {why}"),
                    )),
                    Class::StdlibGadget { .. } => Some((
                        Rule::StdlibGadget,
                        format!(
                            "config.json makes Keras import {q}, a standard-library object that is not a layer"
                        ),
                    )),
                    Class::Library => Some((
                        Rule::LibraryGlobal,
                        format!(
                            "config.json makes Keras import {q}: third-party code; trust it before loading"
                        ),
                    )),
                };
                if let Some((rule, msg)) = hit {
                    hits.push((rule, msg, Some(q)));
                }
            }
            o.values().for_each(|x| walk(policy, x, out));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::b64decode_lenient as d;

    #[test]
    fn base64_as_python_reads_it() {
        assert_eq!(d("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(d("aGVs\nbG8=").unwrap(), b"hello", "newlines are discarded");
        assert_eq!(
            d("aGVs*bG8=").unwrap(),
            b"hello",
            "so is anything off the alphabet"
        );
        assert_eq!(d("aGVsbA==").unwrap(), b"hell");
        assert_eq!(d("").unwrap(), b"");
        assert!(d("aGVsbG8").is_err(), "missing padding");
        assert!(d("aGVsb").is_err(), "one character too many");
    }
}
