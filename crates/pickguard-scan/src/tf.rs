//! Which TensorFlow ops reach the host. A SavedModel's graph runs when it
//! is served (`tf.saved_model.load` restores variables; every signature
//! call runs ops): an op that calls Python registered in the serving
//! process, or that reads or writes a path the graph itself fixes, is an
//! attack on whoever serves it; ops that read or write files named by their
//! inputs (datasets, summary writers) need trust; checkpoint ops are how
//! every SavedModel restores its variables and are fine while their path
//! comes from a placeholder or a function argument (the loader's
//! `saver_filename`), not a constant.

use crate::finding::Rule;
use pickguard_formats::tfgraph::{Node, TfGraph};
use std::collections::{HashMap, HashSet};

/// Ops that call a Python function registered in the serving process.
const PYTHON_OPS: &[&str] = &["PyFunc", "PyFuncStateless", "EagerPyFunc"];

/// Ops that read, list or map a file by a path they are given (an input or,
/// for `ImmutableConst` and `RecordInput`, an attribute).
const FILE_OPS: &[&str] = &[
    "ReadFile",
    "WriteFile",
    "MatchingFiles",
    "ImmutableConst",
    "RecordInput",
];

/// File I/O every SavedModel does (checkpoints, vocabulary files): fine
/// when the path (the input at this index) is fed, not fixed.
const PATH_INPUT_OPS: &[(&str, usize)] = &[
    ("Save", 0),
    ("SaveV2", 0),
    ("SaveSlices", 0),
    ("Restore", 0),
    ("RestoreV2", 0),
    ("RestoreSlice", 0),
    ("MergeV2Checkpoints", 0),
    ("LoadAndRemapMatrix", 0),
    ("InitializeTableFromTextFile", 1),
    ("InitializeTableFromTextFileV2", 1),
];

/// Debug ops that write dumps where their attributes say.
const DEBUG_OPS: &[&str] = &[
    "DebugIdentity",
    "DebugIdentityV2",
    "DebugIdentityV3",
    "DebugNanCount",
    "DebugNumericSummary",
    "DebugNumericSummaryV2",
];

/// Ops that read or write files named by their inputs.
const IO_OPS: &[&str] = &[
    "TFRecordDataset",
    "TFRecordDatasetV2",
    "TextLineDataset",
    "TextLineDatasetV2",
    "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2",
    "CSVDataset",
    "CSVDatasetV2",
    "ExperimentalCSVDataset",
    "LMDBDataset",
    "ExperimentalLMDBDataset",
    "SqlDataset",
    "ExperimentalSqlDataset",
    "SaveDataset",
    "SaveDatasetV2",
    "LoadDataset",
    "SnapshotDataset",
    "SnapshotDatasetV2",
    "SnapshotDatasetReader",
    "CacheDataset",
    "CacheDatasetV2",
    "DatasetToTFRecord",
    "ExperimentalDatasetToTFRecord",
    "CreateSummaryFileWriter",
    "CreateSummaryDbWriter",
    "WholeFileReader",
    "WholeFileReaderV2",
    "TFRecordReader",
    "TFRecordReaderV2",
    "TextLineReader",
    "TextLineReaderV2",
    "FixedLengthRecordReader",
    "FixedLengthRecordReaderV2",
];

fn where_(n: &Node) -> String {
    match &n.function {
        Some(f) => format!("node {:?} of function {f:?}", n.name),
        None => format!("node {:?}", n.name),
    }
}

/// The node an input names (`x:0`, `x`, `fn_node:out:0`); control inputs
/// (`^x`) carry no data.
fn input_node(i: &str) -> Option<&str> {
    if i.starts_with('^') {
        return None;
    }
    i.split(':').next()
}

/// Whether the value at `input` is fed by the caller somewhere upstream (a
/// placeholder, an argument of the enclosing function, or the saver's
/// filename tensor) rather than made from constants alone. A
/// `PlaceholderWithDefault` is followed to its default (unfed, the default
/// flows); a name that is no node here feeds nothing.
fn fed(input: &str, scope: &HashMap<&str, &Node>, args: &HashSet<&str>) -> bool {
    let mut todo = vec![input];
    let mut seen = HashSet::new();
    while let Some(i) = todo.pop() {
        let Some(name) = input_node(i) else { continue };
        if !seen.insert(name) || seen.len() > 256 {
            continue;
        }
        if args.contains(name) {
            return true;
        }
        match scope.get(name) {
            Some(n) if n.op == "Placeholder" => return true,
            Some(n) => todo.extend(n.inputs.iter().map(String::as_str)),
            None => {}
        }
    }
    false
}

/// Findings for a graph: (rule, message).
pub fn judge(g: &TfGraph) -> Vec<(Rule, String)> {
    let mut out = Vec::new();
    // Nodes by scope: the graph (None) and each function.
    let mut scopes: HashMap<Option<&str>, HashMap<&str, &Node>> = HashMap::new();
    for n in &g.nodes {
        scopes
            .entry(n.function.as_deref())
            .or_default()
            .insert(n.name.as_str(), n);
    }
    let args: HashMap<&str, HashSet<&str>> = g
        .function_args
        .iter()
        .map(|(f, a)| (f.as_str(), a.iter().map(String::as_str).collect()))
        .collect();
    // The graph's own "arguments": what the loader feeds.
    let graph_fed: HashSet<&str> = g.fed.iter().filter_map(|t| input_node(t)).collect();
    let mut io = Vec::new();
    for n in &g.nodes {
        let op = n.op.as_str();
        let attr = |k: &str| {
            n.attrs
                .iter()
                .filter(|(a, _)| a == k)
                .flat_map(|(_, v)| v.iter())
                .filter(|v| !v.is_empty())
                .cloned()
                .collect::<Vec<_>>()
        };
        if PYTHON_OPS.contains(&op) {
            out.push((
                Rule::TfHostOp,
                format!(
                    "{} is {op}: serving the graph calls a Python function registered in the serving process",
                    where_(n)
                ),
            ));
        } else if FILE_OPS.contains(&op) {
            let region: Vec<String> = ["memory_region_name", "file_pattern"]
                .iter()
                .flat_map(|k| attr(k))
                .collect();
            out.push((
                Rule::TfHostOp,
                format!(
                    "{} is {op}: the graph reads or writes files on the host{}",
                    where_(n),
                    if region.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", region.join(", "))
                    }
                ),
            ));
        } else if op == "PrintV2"
            && let Some(s) = attr("output_stream")
                .into_iter()
                .find(|s| s.starts_with("file://"))
        {
            out.push((
                Rule::TfHostOp,
                format!("{} prints to the file {s:?}", where_(n)),
            ));
        } else if DEBUG_OPS.contains(&op) {
            let dests: Vec<String> = ["debug_urls", "dump_root"]
                .iter()
                .flat_map(|k| attr(k))
                .collect();
            if !dests.is_empty() {
                out.push((
                    Rule::TfHostOp,
                    format!(
                        "{} is {op} writing debug dumps to {}",
                        where_(n),
                        dests.join(", ")
                    ),
                ));
            }
        } else if let Some(&(_, index)) = PATH_INPUT_OPS.iter().find(|(o, _)| *o == op) {
            let scope = &scopes[&n.function.as_deref()];
            let fargs = match n.function.as_deref() {
                Some(f) => args.get(f).unwrap_or(&graph_fed),
                None => &graph_fed,
            };
            match n.inputs.iter().filter(|i| !i.starts_with('^')).nth(index) {
                Some(path) if fed(path, scope, fargs) => {}
                _ => out.push((
                    Rule::TfHostOp,
                    format!(
                        "{} is {op} on a path the graph fixes (no placeholder or argument feeds it): it reads or writes that file whenever it runs",
                        where_(n)
                    ),
                )),
            }
        } else if IO_OPS.contains(&op) {
            io.push(format!("{op} ({})", where_(n)));
        }
    }
    for a in &g.assets {
        let p = std::path::Path::new(a);
        if p.is_absolute()
            || p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            out.push((
                Rule::TfHostOp,
                format!(
                    "asset file {a:?} lies outside the SavedModel's assets/ directory: loading reads it from the host"
                ),
            ));
        }
    }
    if !io.is_empty() {
        let n = io.len();
        io.truncate(8);
        out.push((
            Rule::TfIoOp,
            format!(
                "{n} op(s) read or write files named by their inputs: {}{}",
                io.join(", "),
                if n > 8 { ", ..." } else { "" }
            ),
        ));
    }
    out
}
