//! Which TensorFlow ops reach the host. A SavedModel runs graph code when it
//! is loaded (TF1 init ops, TF2 initializers, variable restore) and when it
//! is served (signatures, and in TF2 every restored `tf.function` a caller
//! may call). So:
//!
//! - ops that call Python registered in the process, read or write files by
//!   themselves (`ReadFile`, `WriteFile`, `MatchingFiles*`...), reach the
//!   network (tf.data service, RPC), print into files, dump debug data, or
//!   run a graph hidden in a string (`DatasetFromGraph`) are PG118 wherever
//!   they are;
//! - checkpoint ops (`SaveV2`, `RestoreV2`...) are how every SavedModel
//!   saves and restores its variables, and are fine only where the loader
//!   runs them: TF1 graph nodes no signature or init op reaches, and TF2
//!   functions called only from the graph nodes fed the saver's filename
//!   (`_traced_save`/`_traced_restore`); anywhere a caller can run them they
//!   write or read files the graph chose (PG118);
//! - ops that read a file named by their input (vocabulary tables, vocab
//!   remapping) are fine on an asset's tensor, PG118 on a constant path,
//!   and need trust otherwise (a path from a variable or an argument is
//!   chosen where pickguard cannot see);
//! - dataset readers and writers and summary writers need trust (PG205).
//!
//! Function names, node names and "fed" tensors are all attacker-chosen
//! text: nothing is trusted by name, only by where the loader feeds it.

use crate::finding::Rule;
use pickguard_formats::tfgraph::{Node, TfGraph};
use std::collections::{HashMap, HashSet};

/// Ops that call a Python function registered in the serving process.
const PYTHON_OPS: &[&str] = &["PyFunc", "PyFuncStateless", "EagerPyFunc"];

/// Ops that read, list, map or write host files by themselves, reach the
/// network, or run a graph pickguard cannot see.
const HOST_OPS: &[&str] = &[
    "ReadFile",
    "WriteFile",
    "MatchingFiles",
    "MatchingFilesDataset",
    "ExperimentalMatchingFilesDataset",
    "ImmutableConst",
    "RecordInput",
    "FileSystemSetConfiguration",
    "DatasetFromGraph",
    "DataServiceDataset",
    "DataServiceDatasetV2",
    "DataServiceDatasetV3",
    "DataServiceDatasetV4",
    "RegisterDataset",
    "RegisterDatasetV2",
    "DistributedSave",
    "RpcClient",
    "RpcCall",
    "RpcServer",
    "RpcServerStart",
    "RpcServerRegister",
    "RpcCheckStatus",
    "RpcGetValue",
    "DeleteRpcFutureResource",
];

/// Checkpoint I/O.
const CHECKPOINT_OPS: &[&str] = &[
    "Save",
    "SaveV2",
    "SaveSlices",
    "Restore",
    "RestoreV2",
    "RestoreSlice",
    "MergeV2Checkpoints",
];

/// Ops that read the file their input at this index names.
const PATH_READERS: &[(&str, usize)] = &[
    ("InitializeTableFromTextFile", 1),
    ("InitializeTableFromTextFileV2", 1),
    ("GenerateVocabRemapping", 0),
    ("LoadAndRemapMatrix", 0),
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
    "LMDBReader",
    "SqlDataset",
    "ExperimentalSqlDataset",
    "SaveDataset",
    "SaveDatasetV2",
    "LoadDataset",
    "SnapshotDataset",
    "SnapshotDatasetV2",
    "SnapshotDatasetReader",
    "SnapshotChunkDataset",
    "ListSnapshotChunksDataset",
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

/// Work allowed for the path analysis of one graph (nodes visited).
const MAX_WALK: usize = 1 << 22;

fn where_(n: &Node) -> String {
    match &n.function {
        Some(f) => format!("node {:?} of function {f:?}", n.name),
        None => format!("node {:?}", n.name),
    }
}

/// The node an input names (`x:0`, `^x`, `fn_node:out:0`).
fn input_node(i: &str) -> &str {
    i.trim_start_matches('^').split(':').next().unwrap_or("")
}

/// The graph indexed: nodes by scope, callers of each function.
struct Index<'g> {
    graph: HashMap<&'g str, &'g Node>,
    functions: HashMap<&'g str, Vec<&'g Node>>,
    /// Each function's nodes by name.
    scopes: HashMap<&'g str, HashMap<&'g str, &'g Node>>,
}

impl<'g> Index<'g> {
    fn new(g: &'g TfGraph) -> Self {
        let mut graph = HashMap::new();
        let mut functions: HashMap<&str, Vec<&Node>> = HashMap::new();
        for (f, _) in &g.function_args {
            functions.entry(f.as_str()).or_default();
        }
        for n in &g.nodes {
            match &n.function {
                None => {
                    graph.insert(n.name.as_str(), n);
                }
                Some(f) => functions.entry(f.as_str()).or_default().push(n),
            }
        }
        let scopes = functions
            .iter()
            .map(|(f, ns)| (*f, ns.iter().map(|n| (n.name.as_str(), *n)).collect()))
            .collect();
        Index {
            graph,
            functions,
            scopes,
        }
    }

    /// Functions `start` calls, directly or through the functions it calls.
    fn called(&self, start: &[&'g str]) -> HashSet<&'g str> {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut todo: Vec<&str> = start.to_vec();
        while let Some(f) = todo.pop() {
            if !seen.insert(f) {
                continue;
            }
            for n in self.functions.get(f).into_iter().flatten() {
                todo.extend(n.funcs.iter().map(String::as_str));
            }
        }
        seen
    }
}

/// Where a caller or the loader can make graph code run.
struct Reach<'g> {
    /// No entry points known (a frozen GraphDef): everything may run.
    all: bool,
    graph: HashSet<&'g str>,
    functions: HashSet<&'g str>,
}

impl Reach<'_> {
    fn runs(&self, n: &Node) -> bool {
        self.all
            || match &n.function {
                None => self.graph.contains(n.name.as_str()),
                Some(f) => self.functions.contains(f.as_str()),
            }
    }
}

/// Judge a graph: (rule, message) findings.
pub fn judge(g: &TfGraph) -> Vec<(Rule, String)> {
    let ix = Index::new(g);
    let saver_files: HashSet<&str> = g.saver_files.iter().map(|t| input_node(t)).collect();
    let assets: HashSet<&str> = g.asset_tensors.iter().map(|t| input_node(t)).collect();

    // Functions only the saver runs: called from graph nodes fed the
    // saver's filename, and from nothing else.
    let saver_nodes: Vec<&Node> = ix
        .graph
        .values()
        .filter(|n| n.inputs.iter().any(|i| saver_files.contains(input_node(i))))
        .copied()
        .collect();
    let saver_called = ix.called(
        &saver_nodes
            .iter()
            .flat_map(|n| n.funcs.iter().map(String::as_str))
            .collect::<Vec<_>>(),
    );
    let other_called = ix.called(
        &g.nodes
            .iter()
            .filter(|n| match &n.function {
                None => !saver_nodes.iter().any(|s| std::ptr::eq(*s, *n)),
                Some(f) => !saver_called.contains(f.as_str()),
            })
            .flat_map(|n| n.funcs.iter().map(String::as_str))
            .collect::<Vec<_>>(),
    );
    let saver_only: HashSet<&str> = saver_called.difference(&other_called).copied().collect();

    // What runs: in TF2 any restored function may be called; in TF1 what
    // signatures and init ops reach; in a frozen graph, everything.
    let reach = match &g.entries {
        None => Reach {
            all: true,
            graph: HashSet::new(),
            functions: HashSet::new(),
        },
        Some(entries) => {
            let mut graph: HashSet<&str> = HashSet::new();
            let mut todo: Vec<&str> = entries.iter().map(|e| input_node(e)).collect();
            let mut funcs: Vec<&str> = Vec::new();
            while let Some(name) = todo.pop() {
                if graph.len() > MAX_WALK || !graph.insert(name) {
                    continue;
                }
                if let Some(n) = ix.graph.get(name) {
                    todo.extend(n.inputs.iter().map(|i| input_node(i)));
                    funcs.extend(n.funcs.iter().map(String::as_str));
                }
            }
            // Every function not only the saver's can be called by a user of
            // the restored object (TF2), plus whatever the entries call.
            funcs.extend(
                ix.functions
                    .keys()
                    .filter(|f| !saver_only.contains(*f))
                    .copied(),
            );
            Reach {
                all: false,
                graph,
                functions: ix.called(&funcs),
            }
        }
    };

    let mut out = Vec::new();
    let mut io = Vec::new();
    let mut constness: HashMap<(Option<&str>, &str), bool> = HashMap::new();
    let mut walked = 0usize;
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
        let host = |what: String| (Rule::TfHostOp, format!("{} {what}", where_(n)));
        if PYTHON_OPS.contains(&op) {
            out.push(host(format!(
                "is {op}: running it calls a Python function registered in the serving process"
            )));
        } else if HOST_OPS.contains(&op) {
            let named: Vec<String> = ["memory_region_name", "file_pattern", "address"]
                .iter()
                .flat_map(|k| attr(k))
                .collect();
            out.push(host(format!(
                "is {op}: running it reads or writes host files, reaches the network, or runs a graph pickguard cannot see{}",
                if named.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", named.join(", "))
                }
            )));
        } else if matches!(op, "DecodeProtoV2" | "DecodeProto")
            && let Some(src) = attr("descriptor_source")
                .into_iter()
                .find(|s| !s.starts_with("local://"))
        {
            out.push(host(format!(
                "is {op} reading descriptors from the file {src:?}"
            )));
        } else if op == "PrintV2"
            && let Some(s) = attr("output_stream")
                .into_iter()
                .find(|s| s.starts_with("file://"))
        {
            out.push(host(format!("prints to the file {s:?}")));
        } else if DEBUG_OPS.contains(&op) {
            let dests: Vec<String> = ["debug_urls", "dump_root"]
                .iter()
                .flat_map(|k| attr(k))
                .collect();
            if !dests.is_empty() {
                out.push(host(format!(
                    "is {op} writing debug dumps to {}",
                    dests.join(", ")
                )));
            }
        } else if CHECKPOINT_OPS.contains(&op) {
            let loader_only = match &n.function {
                Some(f) => saver_only.contains(f.as_str()),
                None => !reach.runs(n),
            };
            if !loader_only {
                out.push(host(format!(
                    "is {op} where a caller can run it (not only the loader's save and restore): it writes or reads checkpoint files at a path the graph chooses"
                )));
            }
        } else if let Some(&(_, index)) = PATH_READERS.iter().find(|(o, _)| *o == op) {
            let scope = n
                .function
                .as_deref()
                .and_then(|f| ix.scopes.get(f))
                .unwrap_or(&ix.graph);
            let path = n
                .inputs
                .iter()
                .filter(|i| !i.starts_with('^'))
                .nth(index)
                .map(|i| input_node(i));
            match path {
                Some(p) if n.function.is_none() && assets.contains(p) => {}
                Some(p) => {
                    let fkey = n.function.as_deref();
                    match const_only(p, fkey, scope, &mut constness, &mut walked) {
                        Some(true) => out.push(host(format!(
                            "is {op} on a constant path that is no asset of the model: it reads that host file"
                        ))),
                        _ => io.push(format!(
                            "{op} on a path bound at run time ({})",
                            where_(n)
                        )),
                    }
                }
                None => io.push(format!("{op} ({})", where_(n))),
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

/// Whether the value of node `name` is made of constants alone (through
/// identities and string joins); `None` when the walk ran out of budget.
/// Results are shared between queries, so a node is walked once.
fn const_only<'g>(
    name: &'g str,
    f: Option<&'g str>,
    scope: &HashMap<&'g str, &'g Node>,
    memo: &mut HashMap<(Option<&'g str>, &'g str), bool>,
    walked: &mut usize,
) -> Option<bool> {
    if let Some(&v) = memo.get(&(f, name)) {
        return Some(v);
    }
    // Iterative post-order: a node is constant when it is a Const, or an
    // identity/join whose every input is.
    let mut stack: Vec<(&str, bool)> = vec![(name, false)];
    let mut on_path: HashSet<&str> = HashSet::new();
    while let Some((x, expanded)) = stack.pop() {
        *walked += 1;
        if *walked > MAX_WALK {
            return None;
        }
        if memo.contains_key(&(f, x)) {
            continue;
        }
        let Some(node) = scope.get(x) else {
            memo.insert((f, x), false); // an argument or an unknown name
            continue;
        };
        let pass = matches!(node.op.as_str(), "Identity" | "IdentityN" | "StringJoin");
        if node.op == "Const" {
            memo.insert((f, x), true);
        } else if !pass {
            memo.insert((f, x), false);
        } else if expanded {
            on_path.remove(x);
            let v = node
                .inputs
                .iter()
                .filter(|i| !i.starts_with('^'))
                .all(|i| memo.get(&(f, input_node(i))).copied().unwrap_or(false));
            memo.insert((f, x), v);
        } else if on_path.insert(x) {
            stack.push((x, true));
            for i in node.inputs.iter().filter(|i| !i.starts_with('^')) {
                let i = input_node(i);
                if !memo.contains_key(&(f, i)) && !on_path.contains(i) {
                    stack.push((i, false));
                }
            }
        } else {
            memo.insert((f, x), false); // a cycle: not a constant
        }
    }
    memo.get(&(f, name)).copied()
}
