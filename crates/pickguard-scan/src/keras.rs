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

/// Judge a `config.json`. Parse errors (including nesting deeper than
/// serde_json's recursion limit) are returned as `Err`.
pub(crate) fn check_config(policy: &Policy, json: &[u8]) -> Result<Vec<Hit>, String> {
    let v: Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let mut hits = Vec::new();
    walk(policy, &v, &mut hits);
    Ok(hits)
}

fn is_keras_module(m: &str) -> bool {
    m == "keras" || m.starts_with("keras.") || m == "tf_keras" || m.starts_with("tf_keras.")
}

/// Depth is bounded by the parser's recursion limit (128).
fn walk(policy: &Policy, v: &Value, hits: &mut Vec<Hit>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| walk(policy, x, hits)),
        Value::Object(o) => {
            let class = o.get("class_name").and_then(Value::as_str);
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
            o.values().for_each(|x| walk(policy, x, hits));
        }
        _ => {}
    }
}
