//! Code carried by value (marshalled bytecode rebuilt into functions) and
//! the names that make it dangerous.

use super::*;

/// Code rebuilt from bytecode in one stream, and what it names.
pub(super) struct CodeFamily {
    /// The imports that build it (skipped by the per-global judgement).
    pub(super) imports: Vec<usize>,
    pub(super) functions: Vec<String>,
    pub(super) names: Vec<String>,
    pub(super) danger: Vec<String>,
}

/// Names whose use in code carried by value makes it dangerous: running
/// programs, evaluating code, importing by name, sockets, deleting files,
/// reaching interpreter internals.
const CODE_DANGER: &[&str] = &[
    "system",
    "popen",
    "popen2",
    "popen3",
    "spawnl",
    "spawnle",
    "spawnlp",
    "spawnv",
    "spawnve",
    "spawnvp",
    "execl",
    "execle",
    "execlp",
    "execv",
    "execve",
    "execvp",
    "execvpe",
    "exec",
    "eval",
    "compile",
    "__import__",
    "import_module",
    "Popen",
    "check_output",
    "check_call",
    "getoutput",
    "getstatusoutput",
    "fork",
    "forkpty",
    "openpty",
    "subprocess",
    "pty",
    "socket",
    "create_connection",
    "urlopen",
    "urlretrieve",
    "rmtree",
    "unlink",
    "rmdir",
    "kill",
    "setuid",
    "ctypes",
    "CDLL",
    "dlopen",
    "marshal",
    "__globals__",
    "__builtins__",
    "__subclasses__",
    "__code__",
    "builtins",
];

pub(super) fn code_by_value(s: &Stream) -> Option<CodeFamily> {
    let dill = s.imports.iter().any(|i| i.module.starts_with("dill"));
    // The helpers that rebuild code, cells, types and modules by name. Any
    // other cloudpickle/dill helper (dill's `_eval_repr`, `_create_filehandle`,
    // `_setattr`...) is judged like any global: dangerous.
    const HELPERS: &[&str] = &[
        "cloudpickle.cloudpickle._make_function",
        "cloudpickle.cloudpickle._builtin_type",
        "cloudpickle.cloudpickle._function_setstate",
        "cloudpickle.cloudpickle.subimport",
        "cloudpickle.cloudpickle.dynamic_subimport",
        "cloudpickle.cloudpickle._make_cell",
        "cloudpickle.cloudpickle._make_empty_cell",
        "cloudpickle.cloudpickle._make_skeleton_class",
        "cloudpickle.cloudpickle._class_setstate",
        "cloudpickle.cloudpickle._make_dict_keys",
        "cloudpickle.cloudpickle._make_dict_values",
        "cloudpickle.cloudpickle._make_dict_items",
        "dill._dill._create_function",
        "dill._dill._create_code",
        "dill._dill._create_cell",
        "dill._dill._create_type",
        "dill._dill._create_namedtuple",
        "dill._dill._load_type",
        "dill._dill._import_module",
        "dill._dill._get_attr",
        "types.CodeType",
        "types.FunctionType",
    ];
    let member = |i: &pk::Import| {
        HELPERS.contains(&i.qualified().as_str())
            // dill's reference to the __main__ module (dill.load resolves it).
            || (dill && matches!(i.qualified().as_str(), "__builtin__.__main__" | "builtins.__main__"))
    };
    let imports: Vec<usize> = s
        .imports
        .iter()
        .enumerate()
        .filter(|(_, i)| member(i))
        .map(|(g, _)| g)
        .collect();
    if imports.is_empty() {
        return None;
    }
    // Strings reachable from the arguments (and BUILD states) of the calls
    // these globals make, bounded.
    let mut todo: Vec<u32> = Vec::new();
    for c in &s.calls {
        let of_family = |id: u32| match s.node(id) {
            Some(Node::Global(g)) => imports.contains(g),
            Some(Node::Call(ci)) => {
                matches!(s.node(s.calls[*ci].callee), Some(Node::Global(g)) if imports.contains(g))
            }
            _ => false,
        };
        if of_family(c.callee) {
            todo.extend(c.args);
            todo.extend(c.kwargs);
        }
    }
    let mut seen = HashSet::new();
    let mut strings: Vec<String> = Vec::new();
    let mut budget = 100_000usize;
    while let Some(id) = todo.pop() {
        if budget == 0 || !seen.insert(id) {
            continue;
        }
        budget -= 1;
        match s.node(id) {
            Some(Node::Str(t)) => strings.push(t.text.to_string()),
            Some(Node::Tuple(v)) => todo.extend(v.iter()),
            Some(Node::List(v)) | Some(Node::Set(v)) | Some(Node::FrozenSet(v)) => todo.extend(v),
            // Values only: the keys of a function's state are attribute names
            // (`__globals__`, `__defaults__`), and of its globals the names
            // the code uses, which `co_names` already lists.
            Some(Node::Dict(kv)) => todo.extend(kv.iter().map(|(_, v)| *v)),
            Some(Node::Call(ci)) => {
                let c = &s.calls[*ci];
                todo.push(c.callee);
                todo.extend(c.args);
                todo.extend(c.kwargs);
            }
            Some(Node::Global(g)) => {
                if let Some(i) = s.imports.get(*g)
                    && !member(i)
                {
                    strings.push(i.module.clone());
                    strings.push(i.name.clone());
                }
            }
            _ => {}
        }
    }
    let mut danger: Vec<String> = strings
        .iter()
        .flat_map(|t| t.split(|c: char| !(c.is_alphanumeric() || c == '_')))
        .filter(|w| CODE_DANGER.contains(w))
        .map(str::to_owned)
        .collect();
    danger.sort();
    danger.dedup();
    let ident = |t: &&String| {
        !t.is_empty()
            && t.len() <= 64
            && t.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
    };
    let mut names: Vec<String> = strings.iter().filter(ident).cloned().collect();
    names.sort();
    names.dedup();
    names.truncate(24);
    let mut functions: Vec<String> = s
        .calls
        .iter()
        .filter(|c| {
            matches!(s.node(c.callee), Some(Node::Global(g)) if imports.contains(g)
                && matches!(s.imports[*g].name.as_str(), "_create_function" | "_make_function" | "FunctionType"))
        })
        .filter_map(|c| {
            let args = s.as_seq(c.args?)?;
            args.iter().find_map(|a| s.as_str(*a).filter(|t| ident(&&t.to_string())).map(str::to_owned))
        })
        .collect();
    functions.dedup();
    Some(CodeFamily {
        imports,
        functions,
        names,
        danger,
    })
}
