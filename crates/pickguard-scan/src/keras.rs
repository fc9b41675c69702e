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

/// `base64.b64decode(s)` without `validate`: CPython's non-strict
/// `binascii.a2b_base64`, step for step. Characters outside the standard
/// alphabet are skipped; a `=` ends the input only once the group has two
/// data characters and the pads complete it (`QUJD=REVG` is `ABCDEF`:
/// the `=` at a group's start is skipped); a data character resets the
/// pad count; a group left incomplete at the end is an error. Hand-written
/// because no base64 crate reproduces this: a decoder that stops earlier
/// would scan a prefix of what Python unpickles.
fn b64decode_lenient(s: &str) -> Result<Vec<u8>, String> {
    if !s.is_ascii() {
        // str.encode("ascii") in Keras and in b64decode raises first.
        return Err("non-ASCII characters (Python refuses the string)".into());
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    let (mut quad_pos, mut pads, mut left) = (0u8, 0u8, 0u8);
    for c in s.bytes() {
        if c == b'=' {
            if quad_pos >= 2 {
                pads += 1;
                if quad_pos + pads >= 4 {
                    return Ok(out);
                }
            }
            continue;
        }
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        pads = 0;
        match quad_pos {
            0 => {
                quad_pos = 1;
                left = v;
            }
            1 => {
                quad_pos = 2;
                out.push((left << 2) | (v >> 4));
                left = v & 0x0f;
            }
            2 => {
                quad_pos = 3;
                out.push((left << 4) | (v >> 2));
                left = v & 0x03;
            }
            _ => {
                quad_pos = 0;
                out.push((left << 6) | v);
                left = 0;
            }
        }
    }
    match quad_pos {
        0 => Ok(out),
        1 => Err("invalid base64: one data character more than a multiple of 4".into()),
        _ => Err("invalid base64: incorrect padding".into()),
    }
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
            // Keras 2 / tf.keras form (read by Keras 3's Lambda.from_config
            // too): `function` (or `output_shape`) is [base64 marshal,
            // defaults, closure] with `function_type` "lambda".
            for (key, kind) in [
                ("function", "function_type"),
                ("output_shape", "output_shape_type"),
            ] {
                // [code, defaults, closure], or TF-Keras's
                // {"class_name": "__tuple__", "items": [...]} of the same.
                let parts = match o.get(key) {
                    Some(Value::Array(p)) => Some(p),
                    Some(Value::Object(t))
                        if t.get("class_name").and_then(Value::as_str) == Some("__tuple__") =>
                    {
                        t.get("items").and_then(Value::as_array)
                    }
                    _ => None,
                };
                if o.get(kind).and_then(Value::as_str) == Some("lambda")
                    && let Some(parts) = parts
                    && let Some(Value::String(code)) = parts.first()
                {
                    hits.push((
                        Rule::KerasLambda,
                        format!(
                            "a Lambda layer's {key} is marshalled Python bytecode in the Keras 2 form ({} base64 chars): Keras 2, tf.keras and keras.saving.load_model(safe_mode=False) run it",
                            code.len()
                        ),
                        None,
                    ));
                }
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
                let class = policy.classify(module, name);
                let hit = class.rule().map(|rule| {
                    let msg = match &class {
                        Class::Dangerous { why, .. } => {
                            format!("the model config makes Keras import {q}: {why}")
                        }
                        Class::StdlibGadget { .. } => format!(
                            "the model config makes Keras import {q}, a standard-library object that is not a layer"
                        ),
                        _ => format!(
                            "the model config makes Keras import {q}: third-party code; trust it before loading"
                        ),
                    };
                    (rule, msg)
                });
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
        // What CPython's a2b_base64 does with `=` inside the data (checked
        // against Python 3.11): skipped at a group's start, and a single `=`
        // after two characters waits for more.
        assert_eq!(d("QUJD=REVG").unwrap(), b"ABCDEF");
        assert_eq!(d("QUJDR=EVG").unwrap(), b"ABCDEF");
        assert_eq!(d("QUJDRE=VG").unwrap(), b"ABCDEF");
        assert_eq!(
            d("QUJDREU=RkdI").unwrap(),
            b"ABCDE",
            "a completed group ends the input"
        );
        assert_eq!(d("=QUJD").unwrap(), b"ABC");
        assert!(d("QUJDé").is_err());
    }
}
