//! GGUF and ONNX files (structure, embedded templates and code), HDF5
//! signatures where a loader would not look for them.

use super::*;

impl Scanner {
    /// Bytes a tensor's shape needs, when its type has a fixed size.
    pub(super) fn element_size(t: &pickguard_formats::onnx::Tensor) -> Option<u64> {
        let (num, den) = pickguard_formats::onnx::element_size(t.data_type)?;
        let n = t.dims.iter().try_fold(1u64, |a, &d| {
            u64::try_from(d).ok().and_then(|d| a.checked_mul(d))
        })?;
        n.checked_mul(num).map(|b| b.div_ceil(den))
    }

    /// GGUF: the chat templates judged as programs, the tensor infos checked
    /// as llama.cpp's loader needs them.
    pub(super) fn scan_gguf(&self, ctx: &mut Ctx, data: &[u8], member: &Option<String>) {
        let g = match pickguard_formats::gguf::read(data) {
            // Read sparsely (remote), the header and metadata must all be
            // fetched bytes: up to the tensor data, or the whole file when
            // the reading stopped before it.
            Ok(g)
                if {
                    let end = if g.data_offset > 0 {
                        g.data_offset
                    } else {
                        data.len() as u64
                    };
                    self.unfetched(ctx, data, 0, end, member, "GGUF metadata")
                } =>
            {
                return;
            }
            Ok(g) => g,
            Err(e) => {
                ctx.push(Finding::new(
                    Rule::Unreadable,
                    format!("gguf: {e}"),
                    loc(member, None, Some(0), ReadView::Linear),
                ));
                return;
            }
        };
        *ctx.tensors.get_or_insert(0) += g.tensors.len() as u64;
        for m in &g.malformed {
            ctx.push(Finding::new(
                Rule::GgufMalformed,
                format!("gguf: {m}"),
                loc(member, None, None, ReadView::Linear),
            ));
        }
        if let Some(t) = &g.truncated {
            ctx.push(Finding::new(
                Rule::Unreadable,
                format!("gguf is truncated: {t}; what follows was not read"),
                loc(member, None, None, ReadView::Linear),
            ));
        }
        for (key, src) in &g.templates {
            let j = crate::template::judge(src);
            for (line, why) in &j.malicious {
                ctx.push(Finding::new(
                    Rule::TemplateInjection,
                    format!("{key} line {line}: {why}"),
                    loc(member, None, None, ReadView::Linear),
                ));
            }
            if let Some(why) = j.inconclusive {
                ctx.push(Finding::new(
                    Rule::TemplateUnjudged,
                    format!("{key}: {why}"),
                    loc(member, None, None, ReadView::Linear),
                ));
            }
        }
    }

    /// ONNX: external data kept inside the model's directory, operator
    /// domains that need a custom-op library, payload sizes.
    pub(super) fn scan_onnx(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: &Option<String>,
        dir: Option<&std::path::Path>,
    ) {
        use pickguard_formats::onnx;
        let here = loc(member, None, None, ReadView::Linear);
        let m = match onnx::read(data) {
            Ok(m) => m,
            Err(e) => {
                ctx.push(Finding::new(Rule::Unreadable, format!("onnx: {e}"), here));
                return;
            }
        };
        *ctx.tensors.get_or_insert(0) += m.tensors.len() as u64;
        // Custom operators: a domain neither standard nor a model-local function's.
        let local: std::collections::BTreeSet<(&str, &str)> = m
            .functions
            .iter()
            .map(|(d, n)| (d.as_str(), n.as_str()))
            .collect();
        let mut custom: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
        for n in &m.nodes {
            if !onnx::STANDARD_DOMAINS.contains(&n.domain.as_str())
                && !local.contains(&(n.domain.as_str(), n.op_type.as_str()))
            {
                custom.entry(&n.domain).or_default().insert(&n.op_type);
            }
        }
        for (d, ops) in custom {
            ctx.push(Finding::new(
                Rule::OnnxCustomOp,
                format!(
                    "operators {} of domain {d:?}: a runtime needs a custom-op library (native code) for them",
                    ops.into_iter().collect::<Vec<_>>().join(", ")
                ),
                here.clone(),
            ));
        }
        let canon_dir = dir.and_then(|d| {
            let d = if d.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                d
            };
            d.canonicalize().ok()
        });
        for t in &m.tensors {
            let get = |k: &str| {
                t.external
                    .iter()
                    .find(|(ek, _)| ek == k)
                    .map(|(_, v)| v.as_str())
            };
            let expected = Self::element_size(t);
            if !t.is_external && t.external.is_empty() {
                if let (Some(raw), Some(want)) = (t.raw_len, expected)
                    && raw != want
                {
                    ctx.push(Finding::new(
                        Rule::Unreadable,
                        format!(
                            "onnx tensor {}: raw_data holds {raw} bytes, its shape needs {want}",
                            t.name
                        ),
                        here.clone(),
                    ));
                }
                continue;
            }
            let Some(location) = get("location") else {
                ctx.push(Finding::new(
                    Rule::Unreadable,
                    format!("onnx tensor {}: external data without a location", t.name),
                    here.clone(),
                ));
                continue;
            };
            let p = std::path::Path::new(location);
            let climbs = p
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
            let absolute = p.is_absolute()
                || location.starts_with('\\')
                || location.as_bytes().get(1) == Some(&b':');
            if absolute || climbs {
                ctx.push(Finding::new(
                    Rule::OnnxExternalEscape,
                    format!(
                        "onnx tensor {} takes its data from {location:?}, {}",
                        t.name,
                        if absolute {
                            "an absolute path"
                        } else {
                            "a path that climbs out of the model's directory"
                        }
                    ),
                    here.clone(),
                ));
                continue;
            }
            let Some(base) = &canon_dir else {
                ctx.push(Finding::new(
                    Rule::Unreadable,
                    format!(
                        "onnx tensor {} keeps its data in {location:?}, which was not checked (the model's directory is not known)",
                        t.name
                    ),
                    here.clone(),
                ));
                continue;
            };
            let target = base.join(p);
            match target.canonicalize() {
                Ok(real) if !real.starts_with(base) => ctx.push(Finding::new(
                    Rule::OnnxExternalEscape,
                    format!(
                        "onnx tensor {} takes its data from {location:?}, which resolves to {} outside the model's directory (a symbolic link)",
                        t.name,
                        real.display()
                    ),
                    here.clone(),
                )),
                // A directory, FIFO or device inside the model's directory is
                // not data a loader can read as a tensor.
                Ok(real) if !real.is_file() => ctx.push(Finding::new(
                    Rule::Unreadable,
                    format!(
                        "onnx tensor {}: external data {location:?} is not a regular file",
                        t.name
                    ),
                    here.clone(),
                )),
                Ok(real) => {
                    let size = std::fs::metadata(&real).map(|m| m.len()).unwrap_or(0);
                    let off: u64 = get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let len: Option<u64> = get("length").and_then(|v| v.parse().ok());
                    let end = off.checked_add(len.or(expected).unwrap_or(0));
                    if end.is_none_or(|e| e > size) || len.zip(expected).is_some_and(|(l, e)| l != e) {
                        ctx.push(Finding::new(
                            Rule::Unreadable,
                            format!(
                                "onnx tensor {}: external data at offset {off} length {} does not fit {location:?} ({size} bytes) or the tensor's shape",
                                t.name,
                                len.map(|l| l.to_string()).unwrap_or_else(|| "(rest)".into())
                            ),
                            here.clone(),
                        ));
                    }
                }
                Err(e) => ctx.push(Finding::new(
                    Rule::Unreadable,
                    format!("onnx tensor {}: external data {location:?}: {e}", t.name),
                    here.clone(),
                )),
            }
        }
    }

    /// An HDF5 superblock where h5py looks for one past offset 0 (512, 1024,
    /// 2048, ...): Keras and h5py read the file as HDF5, which is not
    /// analysed yet, so the file cannot be clean.
    /// h5py finds a superblock at 512, 1024, 2048... whatever the file
    /// starts with: such a file is also judged as HDF5 (`named`: the file
    /// is nothing else, so it is called HDF5).
    pub(super) fn check_hdf5_elsewhere(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: &Option<String>,
        depth: usize,
        named: bool,
    ) {
        if pickguard_formats::hdf5::superblock_offset(data).is_some_and(|o| o > 0) {
            self.scan_hdf5(ctx, data, member, depth, named);
        }
    }

    /// A TensorFlow SavedModel or GraphDef: the ops that reach the host.
    pub(super) fn scan_tfgraph(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: &Option<String>,
        depth: usize,
    ) {
        let at = loc(member, None, None, ReadView::Linear);
        // TF-Keras keras_metadata.pb: layer configs, judged as Keras configs.
        if let Some(configs) = pickguard_formats::tfgraph::keras_metadata(data) {
            for (i, json) in configs.into_iter().enumerate() {
                let m = join_member(member, &format!("<keras metadata {i}>"));
                self.check_keras(ctx, json, &m, depth);
            }
            return;
        }
        let graphs = match pickguard_formats::tfgraph::read_all(data) {
            Ok(g) => g,
            // fingerprint.pb beside saved_model.pb: hashes, nothing to run.
            Err(_) if pickguard_formats::tfgraph::is_fingerprint(data) => return,
            Err(e) => {
                ctx.push(Finding::new(
                    Rule::Unreadable,
                    format!("TensorFlow graph not analysed: {e}"),
                    at,
                ));
                return;
            }
        };
        // Each meta graph on its own: a loader picks one by its tags.
        for (i, g) in graphs.iter().enumerate() {
            let at = if graphs.len() > 1 {
                loc(
                    &join_member(member, &format!("<meta graph {i}>")),
                    None,
                    None,
                    ReadView::Linear,
                )
            } else {
                at.clone()
            };
            for (rule, message) in crate::tf::judge(g) {
                ctx.push(Finding::new(rule, message, at.clone()));
            }
        }
    }
}
