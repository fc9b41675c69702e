/*!
TensorFlow graphs: a SavedModel (`saved_model.pb`: `SavedModel` →
`MetaGraphDef` → `GraphDef`) or a frozen `GraphDef` (`.pb`), walked for
the ops they hold and what those ops are given.

Field numbers are those of tensorflow/core/protobuf/saved_model.proto,
meta_graph.proto and tensorflow/core/framework/{graph,node_def,function,
attr_value,op_def}.proto (TensorFlow 2.x; stable since 1.x). The fixtures
are written from those schemas (TensorFlow itself is not in the test venv).
The wire format is walked zero-copy, as `onnx.rs` does, with nesting and
item counts bounded; anything the wire format does not allow is an error.
*/

use crate::protowire::{Val, W};
use serde::Serialize;
use std::collections::HashMap;

const MAX_ITEMS: usize = 1 << 22;

/// Prefix of an attribute value that is a placeholder the caller binds
/// (`AttrValue.placeholder`), not a literal.
pub const PLACEHOLDER: &str = "\u{0}placeholder:";

/// One op of a graph or of a function in its library.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Node {
    /// The function holding it (`None`: the graph itself).
    pub function: Option<String>,
    pub name: String,
    pub op: String,
    /// Input names as written (`node:1`, `^ctrl`, `fn_node:out:0`).
    pub inputs: Vec<String>,
    /// String attributes (`output_stream`, `memory_region_name`,
    /// `dump_root`) and string-list ones (`debug_urls`), by name.
    pub attrs: Vec<(String, Vec<String>)>,
    /// Functions its attributes name (`f`, `body`, `then_branch`, dataset
    /// map functions...): they run when it runs.
    pub funcs: Vec<String>,
}

/// What a graph file holds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TfGraph {
    /// `saved-model` or `graph-def`.
    pub kind: &'static str,
    pub nodes: Vec<Node>,
    /// Function name -> its input argument names (values its caller feeds).
    pub function_args: Vec<(String, Vec<String>)>,
    /// SavedModel asset file names (`assets/<name>` when loaded).
    pub assets: Vec<String>,
    /// `saver_def.filename_tensor_name`: the loader feeds the checkpoint
    /// path into it (a `Const` in TF1).
    pub saver_files: Vec<String>,
    /// Each asset's tensor (`asset_file_def`, TF1's `saved_model_assets`
    /// collection): the loader feeds the asset's path into it.
    pub asset_tensors: Vec<String>,
    /// Tensors and ops a loader or a server runs: signature outputs and the
    /// init ops TF1 runs at load. `None` for a frozen GraphDef (whatever a
    /// caller fetches runs).
    pub entries: Option<Vec<String>>,
    /// `saver_def.restore_op_name`: the loader runs it (and its upstream).
    pub restore_op: Option<String>,
    /// Functions the SavedObjectGraph exposes (callable after a TF2 load).
    pub object_functions: Vec<String>,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An op name as TensorFlow registers them (`[A-Z][A-Za-z0-9_>]*`).
fn is_op_name(b: &[u8]) -> bool {
    b.first().is_some_and(u8::is_ascii_uppercase)
        && b.len() <= 256
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'>')
}

struct Reader {
    out: TfGraph,
    items: usize,
}

impl Reader {
    fn count(&mut self) -> Result<(), String> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(format!("more than {MAX_ITEMS} items"));
        }
        Ok(())
    }

    fn graph(&mut self, d: &[u8]) -> Result<(), String> {
        let mut w = W::of(d);
        while let Some((f, v)) = w.next()? {
            self.count()?;
            match (f, v) {
                (1, Val::Bytes(b)) => {
                    let n = self.node(b, None)?;
                    self.out.nodes.push(n);
                }
                (2, Val::Bytes(b)) => self.library(b)?,
                (3..=5, _) => {}
                (f, _) => return Err(format!("GraphDef field {f} is not in the schema")),
            }
        }
        Ok(())
    }

    fn library(&mut self, d: &[u8]) -> Result<(), String> {
        let mut w = W::of(d);
        while let Some((f, v)) = w.next()? {
            self.count()?;
            if let (1, Val::Bytes(b)) = (f, v) {
                self.function(b)?;
            }
        }
        Ok(())
    }

    fn function(&mut self, d: &[u8]) -> Result<(), String> {
        let mut name = String::new();
        let mut args = Vec::new();
        let mut bodies = Vec::new();
        let mut w = W::of(d);
        while let Some((f, v)) = w.next()? {
            self.count()?;
            match (f, v) {
                // signature: OpDef { name = 1, input_arg = 2 { name = 1 } }
                (1, Val::Bytes(b)) => {
                    let mut s = W::of(b);
                    while let Some((sf, sv)) = s.next()? {
                        self.count()?;
                        match (sf, sv) {
                            (1, Val::Bytes(n)) => name = text(n),
                            (2, Val::Bytes(a)) => {
                                let mut aw = W::of(a);
                                while let Some((af, av)) = aw.next()? {
                                    if let (1, Val::Bytes(n)) = (af, av) {
                                        args.push(text(n));
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                (3, Val::Bytes(b)) => bodies.push(b),
                _ => {}
            }
        }
        for b in bodies {
            let n = self.node(b, Some(&name))?;
            self.out.nodes.push(n);
        }
        self.out.function_args.push((name, args));
        Ok(())
    }

    fn node(&mut self, d: &[u8], function: Option<&str>) -> Result<Node, String> {
        let mut n = Node {
            function: function.map(str::to_owned),
            ..Node::default()
        };
        let mut w = W::of(d);
        while let Some((f, v)) = w.next()? {
            self.count()?;
            match (f, v) {
                (1, Val::Bytes(b)) => n.name = text(b),
                (2, Val::Bytes(b)) => {
                    if !is_op_name(b) {
                        return Err(format!("op name {:?} is not an op name", text(b)));
                    }
                    n.op = text(b);
                }
                (3, Val::Bytes(b)) => n.inputs.push(text(b)),
                (5, Val::Bytes(b)) => {
                    if let Some(a) = self.attr(b, &mut n.funcs)? {
                        n.attrs.push(a);
                    }
                }
                (4 | 6 | 7 | 8, _) => {}
                (f, _) => return Err(format!("NodeDef field {f} is not in the schema")),
            }
        }
        if n.op.is_empty() {
            return Err(format!("node {:?} has no op", n.name));
        }
        Ok(n)
    }

    /// A map entry `attr { key = 1; value = 2 (AttrValue) }`: its strings
    /// (`s = 2`, `list = 1 { s = 2 }`) and the functions it names
    /// (`func = 10`, `list = 1 { func = 9 }`: `NameAttrList { name = 1 }`).
    fn attr(
        &mut self,
        d: &[u8],
        funcs: &mut Vec<String>,
    ) -> Result<Option<(String, Vec<String>)>, String> {
        // Every name a NameAttrList gives (protobuf keeps the last; all of
        // them is the safe superset).
        fn func_name(b: &[u8]) -> Result<Vec<String>, String> {
            let mut out = Vec::new();
            let mut w = W::of(b);
            while let Some((f, v)) = w.next()? {
                if let (1, Val::Bytes(n)) = (f, v) {
                    out.push(text(n));
                }
            }
            Ok(out)
        }
        let mut key = None;
        let mut vals = Vec::new();
        let mut w = W::of(d);
        while let Some((f, v)) = w.next()? {
            self.count()?;
            match (f, v) {
                (1, Val::Bytes(b)) => key = Some(text(b)),
                (2, Val::Bytes(b)) => {
                    let mut a = W::of(b);
                    while let Some((af, av)) = a.next()? {
                        self.count()?;
                        match (af, av) {
                            (2, Val::Bytes(s)) => vals.push(text(s)),
                            // A value the caller's NameAttrList binds (TF1).
                            (9, Val::Bytes(ph)) => vals.push(format!("{PLACEHOLDER}{}", text(ph))),
                            (10, Val::Bytes(nf)) => funcs.extend(func_name(nf)?),
                            (1, Val::Bytes(list)) => {
                                let mut l = W::of(list);
                                while let Some((lf, lv)) = l.next()? {
                                    self.count()?;
                                    match (lf, lv) {
                                        (2, Val::Bytes(s)) => vals.push(text(s)),
                                        (9, Val::Bytes(nf)) => funcs.extend(func_name(nf)?),
                                        _ => {}
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(key.map(|k| (k, vals)))
    }

    /// One MetaGraphDef, read as protobuf does: a repeated singular message
    /// field is the merge of its occurrences (their bytes concatenated), a
    /// repeated string the last, a repeated map key the last entry.
    fn meta_graph(&mut self, d: &[u8]) -> Result<(), String> {
        let mut found: Vec<String> = Vec::new();
        let mut collections: HashMap<String, Vec<u8>> = HashMap::new();
        let mut signatures: HashMap<String, Vec<u8>> = HashMap::new();
        let mut saver = Vec::new();
        let mut asset_defs = Vec::new();
        let mut w = W::of(d);
        while let Some((f, v)) = w.next()? {
            self.count()?;
            match (f, v) {
                (2, Val::Bytes(b)) => self.graph(b)?,
                (3, Val::Bytes(b)) => saver.extend_from_slice(b),
                // map entries { key = 1; value = 2 }: the last entry of a key.
                (4, Val::Bytes(b)) => {
                    let key = field_str(b, 1)?.unwrap_or_default();
                    collections.insert(key, field_msg(b, 2)?);
                }
                (5, Val::Bytes(b)) => {
                    let key = field_str(b, 1)?.unwrap_or_default();
                    signatures.insert(key, field_msg(b, 2)?);
                }
                (6, Val::Bytes(b)) => asset_defs.push(b.to_vec()),
                // object_graph_def { concrete_functions = 2: map<string, ...> }
                (7, Val::Bytes(b)) => {
                    for e in repeated_bytes(b, 2)? {
                        if let Some(k) = field_str(e, 1)? {
                            self.out.object_functions.push(k);
                        }
                    }
                }
                (1, _) => {}
                (f, _) => return Err(format!("MetaGraphDef field {f} is not in the schema")),
            }
        }
        // saver_def { filename_tensor_name = 1; restore_op_name = 3 }
        if let Some(n) = field_str(&saver, 1)? {
            self.out.saver_files.push(n);
        }
        if let Some(n) = field_str(&saver, 3)? {
            self.out.restore_op = Some(n);
        }
        for (key, col) in &collections {
            // node_list = 1 { value = 1 }
            let nodes = repeated_str(&field_msg(col, 1)?, 1)?;
            match key.as_str() {
                // Ops TF1's loaders run while loading (and what TF2's
                // load_v1_in_v2 runs: variable initializers).
                "saved_model_main_op"
                | "legacy_init_op"
                | "saved_model_legacy_init_op"
                | "init_op"
                | "table_initializer"
                | "local_init_op"
                | "train_op" => found.extend(nodes),
                // bytes_list = 2 { value = 1: VariableDef { initializer_name = 2 } }:
                // TF2's load_v1_in_v2 runs local variables' initializers.
                "local_variables" | "variables" => {
                    for v in repeated_bytes(&field_msg(col, 2)?, 1)? {
                        if let Some(init) = field_str(v, 2)? {
                            found.push(init);
                        }
                    }
                }
                _ => {}
            }
        }
        // The loader feeds asset paths from asset_file_def, or from the
        // `saved_model_assets` collection only when there is none (never
        // from `asset_filepaths`, which only the builder reads).
        if asset_defs.is_empty() {
            if let Some(col) = collections.get("saved_model_assets") {
                for any in repeated_bytes(&field_msg(col, 5)?, 1)? {
                    if let Some(afd) = field_bytes(any, 2)? {
                        self.asset(afd)?;
                    }
                }
            }
        } else {
            for b in &asset_defs {
                self.asset(b)?;
            }
        }
        for sig in signatures.values() {
            // outputs = 2: map<string, TensorInfo>
            for out in repeated_bytes(sig, 2)? {
                tensor_names(&field_msg(out, 2)?, &mut found, 0)?;
            }
        }
        self.out.entries.get_or_insert_with(Vec::new).extend(found);
        Ok(())
    }

    /// AssetFileDef { tensor_info = 1 { name = 1 }; filename = 2 }.
    fn asset(&mut self, b: &[u8]) -> Result<(), String> {
        if let Some(n) = field_str(b, 2)? {
            self.out.assets.push(n);
        }
        let ti = field_msg(b, 1)?;
        if let Some(n) = field_str(&ti, 1)? {
            self.out.asset_tensors.push(n);
        }
        Ok(())
    }
}

/// Every tensor a TensorInfo names: `name = 1`, `coo_sparse = 4 {
/// values, indices, dense_shape = 1..3 }`, `composite_tensor = 5 {
/// components = 2 (TensorInfo) }`.
fn tensor_names(b: &[u8], out: &mut Vec<String>, depth: usize) -> Result<(), String> {
    if depth > 16 {
        return Err("TensorInfo nested too deep".into());
    }
    if let Some(n) = field_str(b, 1)? {
        out.push(n);
    }
    let coo = field_msg(b, 4)?;
    for f in 1..=3 {
        if let Some(n) = field_str(&coo, f)? {
            out.push(n);
        }
    }
    for c in repeated_bytes(&field_msg(b, 5)?, 2)? {
        tensor_names(c, out, depth + 1)?;
    }
    Ok(())
}

/// A singular message field as protobuf reads it: every occurrence merged
/// (their bytes concatenated); empty when absent.
fn field_msg(b: &[u8], field: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for x in repeated_bytes(b, field)? {
        out.extend_from_slice(x);
    }
    Ok(out)
}

/// The last length-delimited field `field` of a message.
fn field_bytes(b: &[u8], field: u64) -> Result<Option<&[u8]>, String> {
    let mut w = W::of(b);
    let mut out = None;
    while let Some((f, v)) = w.next()? {
        if let (true, Val::Bytes(x)) = (f == field, v) {
            out = Some(x);
        }
    }
    Ok(out)
}

fn field_str(b: &[u8], field: u64) -> Result<Option<String>, String> {
    Ok(field_bytes(b, field)?.map(text))
}

fn repeated_bytes(b: &[u8], field: u64) -> Result<Vec<&[u8]>, String> {
    let mut w = W::of(b);
    let mut out = Vec::new();
    while let Some((f, v)) = w.next()? {
        if let (true, Val::Bytes(x)) = (f == field, v) {
            out.push(x);
        }
    }
    Ok(out)
}

fn repeated_str(b: &[u8], field: u64) -> Result<Vec<String>, String> {
    Ok(repeated_bytes(b, field)?.into_iter().map(text).collect())
}

/// Read a SavedModel or a GraphDef; `Err` when the bytes are neither.
pub fn read(d: &[u8]) -> Result<TfGraph, String> {
    let mut all = read_all(d)?;
    let mut g = all.remove(0);
    for m in all {
        g.nodes.extend(m.nodes);
        g.function_args.extend(m.function_args);
        g.assets.extend(m.assets);
    }
    Ok(g)
}

/// Each meta graph on its own (a loader picks one by its tags; node names
/// repeat across them), or the one GraphDef.
pub fn read_all(d: &[u8]) -> Result<Vec<TfGraph>, String> {
    let mut r = Reader {
        out: TfGraph::default(),
        items: 0,
    };
    // SavedModel { saved_model_schema_version = 1; meta_graphs = 2 }
    if d.first() == Some(&0x08) || d.first() == Some(&0x12) {
        let mut w = W::of(d);
        let mut metas = Vec::new();
        while let Some((f, v)) = w.next()? {
            match (f, v) {
                (1, Val::Int(_)) => {}
                (2, Val::Bytes(b)) => {
                    let items = r.items;
                    r = Reader {
                        out: TfGraph::default(),
                        items,
                    };
                    r.meta_graph(b)?;
                    r.out.kind = "saved-model";
                    metas.push(std::mem::take(&mut r.out));
                }
                (f, _) => return Err(format!("SavedModel field {f} is not in the schema")),
            }
        }
        if metas.is_empty() {
            return Err("a SavedModel without a MetaGraphDef".into());
        }
        return Ok(metas);
    }
    if d.first() != Some(&0x0a) {
        return Err("neither a SavedModel nor a GraphDef".into());
    }
    r.graph(d)?;
    if r.out.nodes.is_empty() {
        return Err("a GraphDef without nodes".into());
    }
    r.out.kind = "graph-def";
    Ok(vec![r.out])
}

/// Whether `d` is a SavedModel's `fingerprint.pb` (`FingerprintDef`:
/// hashes 1–5 as varints, `version` 6 and `uuid` 7 length-delimited):
/// numbers and a version, nothing that runs.
pub fn is_fingerprint(d: &[u8]) -> bool {
    if d.first() != Some(&0x08) {
        return false;
    }
    let mut w = W::of(d);
    let mut seen = 0;
    loop {
        match w.next() {
            Ok(Some((1..=5, Val::Int(_)))) | Ok(Some((6 | 7, Val::Bytes(_)))) => seen += 1,
            Ok(None) => return seen > 0,
            _ => return false,
        }
    }
}

/// The layer configs of a TF-Keras SavedModel's `keras_metadata.pb`
/// (`SavedMetadata { repeated SavedObject nodes = 1 }`, `SavedObject {
/// node_id = 2; node_path = 3; identifier = 4; metadata = 5 (JSON);
/// version = 6 }`): what `tf_keras.models.load_model` rebuilds layers
/// from, Lambda bytecode included. `None` when `d` is not one.
pub fn keras_metadata(d: &[u8]) -> Option<Vec<&[u8]>> {
    if d.first() != Some(&0x0a) {
        return None;
    }
    let mut out = Vec::new();
    let mut w = W::of(d);
    loop {
        match w.next().ok()? {
            Some((1, Val::Bytes(obj))) => {
                let mut o = W::of(obj);
                let mut identifier = false;
                while let Some((f, v)) = o.next().ok()? {
                    match (f, v) {
                        (2, Val::Int(_)) => {}
                        (4, Val::Bytes(id)) => identifier = id.starts_with(b"_tf_keras_"),
                        (3 | 6, Val::Bytes(_)) => {}
                        (5, Val::Bytes(m)) => out.push(m),
                        _ => return None,
                    }
                }
                if !identifier {
                    return None;
                }
            }
            None => return (!out.is_empty()).then_some(out),
            _ => return None,
        }
    }
}

/// Whether `d` reads as a TensorFlow graph file.
///
/// Decided without decoding the graph (sniffing runs on every file and
/// member; the scan reads the graph once, afterwards): the top-level fields
/// are those of a SavedModel or a GraphDef, and the first node is a NodeDef
/// with an op name.
pub fn looks_like_graph(d: &[u8]) -> bool {
    /// Fields of a message are wire-valid and within `allowed`; the first
    /// occurrence of `want` (length-delimited).
    fn first<'a>(d: &'a [u8], allowed: &[u64], want: u64) -> Option<&'a [u8]> {
        let mut w = W::of(d);
        let mut found = None;
        while let Some((f, v)) = w.next().ok()? {
            if !allowed.contains(&f) {
                return None;
            }
            if let (true, None, Val::Bytes(b)) = (f == want, found, v) {
                found = Some(b);
            }
        }
        found
    }
    fn is_node(n: &[u8]) -> bool {
        let mut w = W::of(n);
        let mut op = false;
        while let Ok(Some((f, v))) = w.next() {
            match (f, v) {
                (2, Val::Bytes(b)) => op = is_op_name(b),
                (1 | 3 | 5, Val::Bytes(_)) | (4 | 6 | 7 | 8, _) => {}
                _ => return false,
            }
        }
        op && w.p == n.len()
    }
    let graph = match d.first() {
        Some(0x08 | 0x12) => {
            first(d, &[1, 2], 2).and_then(|meta| first(meta, &[1, 2, 3, 4, 5, 6, 7], 2))
        }
        Some(0x0a) => Some(d),
        _ => None,
    };
    graph
        .and_then(|g| first(g, &[1, 2, 3, 4, 5], 1))
        .is_some_and(is_node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(field: u8, b: &[u8]) -> Vec<u8> {
        let mut v = vec![field << 3 | 2];
        let mut n = b.len();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                v.push(byte);
                break;
            }
            v.push(byte | 0x80);
        }
        v.extend_from_slice(b);
        v
    }

    fn node(name: &str, op: &str, inputs: &[&str], attrs: &[(&str, &str)]) -> Vec<u8> {
        let mut n = ld(1, name.as_bytes());
        n.extend(ld(2, op.as_bytes()));
        for i in inputs {
            n.extend(ld(3, i.as_bytes()));
        }
        for (k, s) in attrs {
            let mut e = ld(1, k.as_bytes());
            e.extend(ld(2, &ld(2, s.as_bytes())));
            n.extend(ld(5, &e));
        }
        n
    }

    #[test]
    fn graph_defs_and_saved_models_are_read_with_functions() {
        let g: Vec<u8> = [
            ld(1, &node("p", "Placeholder", &[], &[])),
            ld(
                1,
                &node(
                    "out",
                    "PrintV2",
                    &["p"],
                    &[("output_stream", "file:///tmp/x")],
                ),
            ),
        ]
        .concat();
        let r = read(&g).expect("graph def");
        assert_eq!(r.kind, "graph-def");
        assert_eq!(r.nodes[1].op, "PrintV2");
        assert_eq!(
            r.nodes[1].attrs,
            vec![("output_stream".into(), vec!["file:///tmp/x".into()])]
        );
        // A SavedModel whose library function holds a ReadFile.
        let mut sig = ld(1, b"f");
        sig.extend(ld(2, &ld(1, b"path")));
        let mut func = ld(1, &sig);
        func.extend(ld(3, &node("rf", "ReadFile", &["path"], &[])));
        let mut graph = ld(1, &node("c", "Const", &[], &[]));
        graph.extend(ld(2, &ld(1, &func)));
        let mut meta = ld(2, &graph);
        meta.extend(ld(6, &ld(2, b"../../etc/passwd")));
        let mut sm = vec![0x08, 0x01];
        sm.extend(ld(2, &meta));
        let r = read(&sm).expect("saved model");
        assert_eq!(r.kind, "saved-model");
        let rf = r.nodes.iter().find(|n| n.op == "ReadFile").unwrap();
        assert_eq!(rf.function.as_deref(), Some("f"));
        assert_eq!(r.function_args, vec![("f".into(), vec!["path".into()])]);
        assert_eq!(r.assets, vec!["../../etc/passwd".to_string()]);
        assert!(looks_like_graph(&sm) && looks_like_graph(&g));
    }

    #[test]
    fn other_bytes_are_not_graphs_and_never_panic() {
        assert!(!looks_like_graph(b"\x0a\x03abc"));
        assert!(!looks_like_graph(b"\x80\x02K\x01."));
        let g = ld(1, &node("n", "lowercase", &[], &[]));
        assert!(read(&g).is_err(), "op names are CamelCase");
        let full = ld(1, &node("p", "Placeholder", &["x:0", "^y"], &[("a", "b")]));
        for cut in 0..full.len() {
            let _ = read(&full[..cut]);
        }
    }
}
