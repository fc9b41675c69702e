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
    args: HashMap<&'g str, &'g [String]>,
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
        let args = g
            .function_args
            .iter()
            .map(|(f, a)| (f.as_str(), a.as_slice()))
            .collect();
        Index {
            graph,
            functions,
            args,
            scopes,
        }
    }

    /// Functions a node calls: those its attributes name, and the library
    /// function its op names (a function called as an op).
    fn calls(&self, n: &'g Node) -> impl Iterator<Item = &'g str> {
        let by_op = self
            .functions
            .contains_key(n.op.as_str())
            .then_some(n.op.as_str());
        n.funcs.iter().map(String::as_str).chain(by_op)
    }

    /// Nodes of a scope downstream of `start` through data inputs.
    fn downstream(&self, f: Option<&'g str>, start: &'g str) -> HashSet<&'g str> {
        let nodes: Vec<&Node> = match f {
            None => self.graph.values().copied().collect(),
            Some(f) => self.functions.get(f).cloned().unwrap_or_default(),
        };
        let mut consumers: HashMap<&str, Vec<&str>> = HashMap::new();
        for n in &nodes {
            for i in n.inputs.iter().filter(|i| !i.starts_with('^')) {
                consumers
                    .entry(input_node(i))
                    .or_default()
                    .push(n.name.as_str());
            }
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut todo = vec![start];
        while let Some(x) = todo.pop() {
            if seen.insert(x) {
                todo.extend(consumers.get(x).into_iter().flatten().copied());
            }
        }
        seen
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
                todo.extend(self.calls(n));
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

    // The saver's nodes: graph nodes given the saver's filename as data.
    let is_saver_node = |n: &Node| {
        n.function.is_none()
            && n.inputs
                .iter()
                .any(|i| !i.starts_with('^') && saver_files.contains(input_node(i)))
    };
    // Graph nodes downstream of the saver's filename (TF1 save/restore).
    let mut from_saver: HashSet<&str> = HashSet::new();
    for f in &saver_files {
        from_saver.extend(ix.downstream(None, f));
    }
    // Functions only the saver calls (TF2 _traced_save/_traced_restore):
    // called from saver nodes alone, not exposed by the object graph, and
    // for each the argument the saver's filename arrives in.
    let mut callers: HashMap<&str, usize> = HashMap::new();
    let mut saver_args: HashMap<&str, HashSet<&str>> = HashMap::new();
    for n in &g.nodes {
        for f in ix.calls(n) {
            *callers.entry(f).or_default() += 1;
            if is_saver_node(n) {
                let data: Vec<&str> = n
                    .inputs
                    .iter()
                    .filter(|i| !i.starts_with('^'))
                    .map(|i| input_node(i))
                    .collect();
                let args = ix.args.get(f).copied().unwrap_or(&[]);
                let e = saver_args.entry(f).or_default();
                for (k, x) in data.iter().enumerate() {
                    if saver_files.contains(x)
                        && let Some(a) = args.get(k)
                    {
                        e.insert(a.as_str());
                    }
                }
            }
        }
    }
    let exposed: HashSet<&str> = g.object_functions.iter().map(String::as_str).collect();
    let saver_calls: HashMap<&str, usize> = g
        .nodes
        .iter()
        .filter(|n| is_saver_node(n))
        .flat_map(|n| ix.calls(n))
        .fold(HashMap::new(), |mut m, f| {
            *m.entry(f).or_default() += 1;
            m
        });
    let saver_only: HashSet<&str> = saver_calls
        .iter()
        .filter(|(f, k)| callers.get(*f) == Some(*k) && !exposed.contains(*f))
        .map(|(f, _)| *f)
        .collect();
    // Within each saver-only function, the nodes downstream of the
    // argument the filename arrives in.
    let saver_scope: HashMap<&str, HashSet<&str>> = saver_only
        .iter()
        .map(|f| {
            let mut d = HashSet::new();
            for a in saver_args.get(f).into_iter().flatten() {
                d.extend(ix.downstream(Some(f), a));
            }
            (*f, d)
        })
        .collect();

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
                    funcs.extend(ix.calls(n));
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

    // What saver_def's restore op runs at load (its upstream, control
    // inputs included).
    let mut restore_runs: HashSet<&str> = HashSet::new();
    if let Some(r) = &g.restore_op {
        let mut todo = vec![input_node(r)];
        while let Some(x) = todo.pop() {
            if restore_runs.len() > MAX_WALK || !restore_runs.insert(x) {
                continue;
            }
            if let Some(n) = ix.graph.get(x) {
                todo.extend(n.inputs.iter().map(|i| input_node(i)));
            }
        }
    }
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
        // An attribute that names a file or stream, bound by the caller's
        // NameAttrList (TF1): its value is not in the graph.
        if let Some((k, _)) = n.attrs.iter().find(|(k, v)| {
            matches!(
                k.as_str(),
                "output_stream"
                    | "debug_urls"
                    | "dump_root"
                    | "descriptor_source"
                    | "memory_region_name"
                    | "file_pattern"
            ) && v
                .iter()
                .any(|x| x.starts_with(pickguard_formats::tfgraph::PLACEHOLDER))
        }) {
            out.push(host(format!(
                "is {op} whose {k} the caller binds: it names a file or stream the graph does not show"
            )));
            continue;
        }
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
        } else if matches!(op, "DecodeProtoV2" | "DecodeProto" | "EncodeProto")
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
            // The path (input 0) must come from the saver's filename, where
            // only the loader runs the op.
            let path = n
                .inputs
                .iter()
                .find(|i| !i.starts_with('^'))
                .map(|i| input_node(i))
                .unwrap_or("");
            let loader_only = match n.function.as_deref() {
                Some(f) => saver_scope.get(f).is_some_and(|d| d.contains(path)),
                // Graph nodes run when a signature or init op reaches them
                // (a caller's run: never fine), or from saver_def's restore
                // op at load (fine on the saver's filename); others never run.
                None => {
                    !reach.runs(n)
                        && (!restore_runs.contains(n.name.as_str()) || from_saver.contains(path))
                }
            };
            if !loader_only {
                out.push(host(format!(
                    "is {op} on a path that is not the loader's checkpoint, or where a caller can run it: it writes or reads files the graph chooses"
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
