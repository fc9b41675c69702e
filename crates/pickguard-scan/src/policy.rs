//! Allowlist-first policy.
//!
//! A global is judged, in this order: user deny, structural tricks (extension
//! codes, computed names, attribute walks through modules), the allowlists of
//! the enabled profiles and of the user, the danger table (which only ranks
//! severity and names the capability), the standard library (any stdlib
//! global outside the data allowlist is a gadget: the stdlib ships no model
//! classes), and last third-party code, which is not malicious by itself but
//! must be trusted to load ("needs-trust").

use pickguard_pickle::names::is_stdlib;
use serde::{Deserialize, Serialize};

/// A named allowlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// What `torch.load(weights_only=True)` accepts.
    Torch,
    /// NumPy arrays, dtypes and scalars, and numpy random-state constructors.
    Numpy,
    /// Builtin containers, datetime, decimal, collections, and similar data.
    PlainData,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Torch, Profile::Numpy, Profile::PlainData];
    pub fn name(self) -> &'static str {
        match self {
            Profile::Torch => "torch",
            Profile::Numpy => "numpy",
            Profile::PlainData => "plain-data",
        }
    }
    fn globals(self) -> &'static [&'static str] {
        match self {
            Profile::Torch => TORCH,
            Profile::Numpy => NUMPY,
            Profile::PlainData => PLAIN_DATA,
        }
    }
}

const PLAIN_DATA: &[&str] = &[
    "builtins.set",
    "builtins.frozenset",
    "builtins.list",
    "builtins.dict",
    "builtins.tuple",
    "builtins.bytearray",
    "builtins.bytes",
    "builtins.complex",
    "builtins.int",
    "builtins.float",
    "builtins.str",
    "builtins.bool",
    "builtins.slice",
    "builtins.range",
    "builtins.object",
    "builtins.NoneType",
    "builtins.Ellipsis",
    "builtins.NotImplemented",
    "_codecs.encode",
    "copyreg._reconstructor",
    "collections.OrderedDict",
    "collections.defaultdict",
    "collections.Counter",
    "collections.deque",
    "collections.ChainMap",
    "collections.UserDict",
    "collections.UserList",
    "collections.UserString",
    // Mersenne Twister state: the constructor and setstate run no code.
    "random.Random",
    // A partial is judged by the function it wraps (its own global, judged
    // like any other); calling one during load is a dynamic call (PG103).
    "functools.partial",
    "datetime.datetime",
    "datetime.date",
    "datetime.time",
    "datetime.timedelta",
    "datetime.timezone",
    "decimal.Decimal",
    "fractions.Fraction",
    "uuid.UUID",
    "uuid.SafeUUID",
    "argparse.Namespace",
    "types.SimpleNamespace",
    "pathlib.Path",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "pathlib.PurePath",
    "pathlib.PurePosixPath",
    "pathlib.PureWindowsPath",
    "ipaddress.IPv4Address",
    "ipaddress.IPv6Address",
    "array.array",
    "array._array_reconstructor",
    "re._compile",
    "enum.Enum",
    "enum.IntEnum",
    "enum.StrEnum",
    "enum.Flag",
    "enum.IntFlag",
    // Standard-library enums: calling one looks up a member (one argument)
    // or refuses to extend it (more); nothing else runs.
    "http.HTTPStatus",
    "http.HTTPMethod",
    "socket.AddressFamily",
    "socket.SocketKind",
    "signal.Signals",
    "re.RegexFlag",
    "inspect._ParameterKind",
    "zoneinfo.ZoneInfo",
];

const NUMPY: &[&str] = &[
    // joblib's placeholder for an inline array: object.__new__ plus a state
    // dict; joblib.load then reads the array bytes (the engine's joblib
    // reading skips them exactly, and analyses object arrays' inner pickles).
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.core.numeric._frombuffer",
    "numpy._core.numeric._frombuffer",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.ma.core._mareconstruct",
    "numpy.ma.core.MaskedArray",
    "numpy.random._pickle.__randomstate_ctor",
    "numpy.random._pickle.__bit_generator_ctor",
    "numpy.random._pickle.__generator_ctor",
    "numpy.random._pickle.__legacy_seeding",
    "numpy.random.mtrand.RandomState",
    "numpy.random._mt19937.MT19937",
    "numpy.random._pcg64.PCG64",
    "numpy.random._generator.Generator",
    "numpy.bool_",
    "numpy.int8",
    "numpy.int16",
    "numpy.int32",
    "numpy.int64",
    "numpy.uint8",
    "numpy.uint16",
    "numpy.uint32",
    "numpy.uint64",
    "numpy.float16",
    "numpy.float32",
    "numpy.float64",
    "numpy.complex64",
    "numpy.complex128",
];

const TORCH: &[&str] = &[
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_meta_tensor_no_storage",
    "torch._utils._rebuild_wrapper_subclass",
    "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor",
    "torch._utils._rebuild_nested_tensor",
    "torch._tensor._rebuild_from_type_v2",
    "torch.nn.parameter.Parameter",
    "torch.nn.parameter.Buffer",
    "torch.serialization._get_layout",
    "torch.storage.UntypedStorage",
    "torch.storage.TypedStorage",
    "torch.Size",
    "torch.Tensor",
    "torch.device",
    "torch.strided",
    "torch.sparse_coo",
    "torch.sparse_csr",
    "torch.sparse_csc",
    "torch.sparse_bsr",
    "torch.sparse_bsc",
    "torch._mkldnn",
    "torch.per_tensor_affine",
    "torch.per_channel_affine",
    "torch.per_tensor_symmetric",
    "torch.per_channel_symmetric",
    "torch.per_channel_affine_float_qparams",
    "collections.OrderedDict",
    "collections.Counter",
    "builtins.set",
    "builtins.complex",
    "builtins.bytearray",
    "_codecs.encode",
    // TorchScript pickles (constants.pkl, data.pkl of torch.jit.save).
    "torch.jit._pickle.build_intlist",
    "torch.jit._pickle.build_floatlist",
    "torch.jit._pickle.build_boollist",
    "torch.jit._pickle.build_tensorlist",
    "torch.jit._pickle.build_doublelist",
    "torch.jit._pickle.build_tensor_from_id",
    "torch.jit._pickle.restore_type_tag",
];

/// torch dtypes, allowed as `torch.<name>` globals.
const TORCH_DTYPES: &[&str] = &[
    "float64",
    "float32",
    "float16",
    "bfloat16",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "complex32",
    "complex64",
    "complex128",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint64",
    "uint32",
    "uint16",
    "uint8",
    "bool",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "bits8",
    "bits16",
    "double",
    "float",
    "half",
    "cfloat",
    "cdouble",
    "long",
    "int",
    "short",
    "uint1",
    "uint2",
    "uint3",
    "uint4",
    "uint5",
    "uint6",
    "uint7",
    "int1",
    "int2",
    "int3",
    "int4",
    "int5",
    "int6",
    "int7",
];

/// What a capability in the danger table does; ranks severity and explains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    CommandExecution,
    CodeExecution,
    ModuleImport,
    NestedDeserialization,
    FileSystem,
    Network,
    NativeCode,
    ProcessControl,
    ScannerTampering,
}

impl Capability {
    pub fn describe(self) -> &'static str {
        match self {
            Capability::CommandExecution => "runs shell commands or programs",
            Capability::CodeExecution => "evaluates or runs Python code",
            Capability::ModuleImport => {
                "imports modules or resolves names at run time (reaches any callable)"
            }
            Capability::NestedDeserialization => {
                "deserializes further data (a pickle inside the pickle)"
            }
            Capability::FileSystem => "reads, writes or deletes files",
            Capability::Network => "opens network connections",
            Capability::NativeCode => "loads or calls native code",
            Capability::ProcessControl => "controls the interpreter or its processes",
            Capability::ScannerTampering => "imports a model scanner (tampering with scanning)",
        }
    }
}

/// Prefix table: `module` or `module.name` prefixes (matched on dotted
/// boundaries) and what they can do. Ranking only: anything not allowlisted is
/// already flagged whether or not it is listed here.
const DANGER: &[(&str, Capability)] = &[
    ("os", Capability::CommandExecution),
    ("posix", Capability::CommandExecution),
    ("nt", Capability::CommandExecution),
    ("subprocess", Capability::CommandExecution),
    ("pty", Capability::CommandExecution),
    ("_posixsubprocess", Capability::CommandExecution),
    ("_bootsubprocess", Capability::CommandExecution),
    ("commands", Capability::CommandExecution),
    ("popen2", Capability::CommandExecution),
    ("platform", Capability::CommandExecution),
    ("webbrowser", Capability::CommandExecution),
    ("asyncio.subprocess", Capability::CommandExecution),
    ("asyncio.unix_events", Capability::CommandExecution),
    ("multiprocessing", Capability::CommandExecution),
    ("uuid._get_command_stdout", Capability::CommandExecution),
    ("_osx_support", Capability::CommandExecution),
    ("_aix_support", Capability::CommandExecution),
    ("_pyrepl", Capability::CommandExecution),
    ("imaplib.IMAP4_stream", Capability::CommandExecution),
    ("pydoc.pipepager", Capability::CommandExecution),
    ("venv", Capability::CommandExecution),
    ("ensurepip", Capability::CommandExecution),
    ("pip", Capability::CommandExecution),
    ("torch.utils.collect_env", Capability::CommandExecution),
    ("mlflow.projects", Capability::CommandExecution),
    ("builtins.eval", Capability::CodeExecution),
    ("builtins.exec", Capability::CodeExecution),
    ("builtins.compile", Capability::CodeExecution),
    ("builtins.breakpoint", Capability::CodeExecution),
    ("builtins.input", Capability::CodeExecution),
    ("__builtin__.eval", Capability::CodeExecution),
    ("__builtin__.execfile", Capability::CodeExecution),
    ("runpy", Capability::CodeExecution),
    ("code", Capability::CodeExecution),
    ("codeop", Capability::CodeExecution),
    ("timeit", Capability::CodeExecution),
    ("cProfile", Capability::CodeExecution),
    ("profile", Capability::CodeExecution),
    ("trace", Capability::CodeExecution),
    ("pdb", Capability::CodeExecution),
    ("bdb", Capability::CodeExecution),
    ("doctest", Capability::CodeExecution),
    ("idlelib", Capability::CodeExecution),
    ("lib2to3", Capability::CodeExecution),
    ("dataclasses._create_fn", Capability::CodeExecution),
    ("types.CodeType", Capability::CodeExecution),
    ("types.FunctionType", Capability::CodeExecution),
    ("marshal", Capability::CodeExecution),
    ("cloudpickle", Capability::CodeExecution),
    ("dill", Capability::CodeExecution),
    ("numpy.testing", Capability::CodeExecution),
    ("numpy.f2py", Capability::CodeExecution),
    ("numpy.distutils", Capability::CodeExecution),
    ("torch._inductor", Capability::CodeExecution),
    ("torch._dynamo", Capability::CodeExecution),
    ("torch.fx", Capability::CodeExecution),
    ("torch.jit", Capability::CodeExecution),
    ("torch.utils.bottleneck", Capability::CodeExecution),
    ("torch.utils._config_module", Capability::CodeExecution),
    ("torch.utils.cpp_extension", Capability::CodeExecution),
    ("torch.package", Capability::CodeExecution),
    ("torch.distributed", Capability::CodeExecution),
    ("IPython", Capability::CodeExecution),
    ("jinja2", Capability::CodeExecution),
    ("builtins.__import__", Capability::ModuleImport),
    ("builtins.getattr", Capability::ModuleImport),
    ("builtins.setattr", Capability::ModuleImport),
    ("builtins.delattr", Capability::ModuleImport),
    ("builtins.globals", Capability::ModuleImport),
    ("builtins.vars", Capability::ModuleImport),
    ("builtins.locals", Capability::ModuleImport),
    ("importlib", Capability::ModuleImport),
    ("pkgutil", Capability::ModuleImport),
    ("pydoc", Capability::ModuleImport),
    ("inspect", Capability::ModuleImport),
    ("operator", Capability::ModuleImport),
    ("_operator", Capability::ModuleImport),
    ("functools", Capability::ModuleImport),
    ("sys", Capability::ModuleImport),
    ("copyreg", Capability::ModuleImport),
    ("zipimport", Capability::ModuleImport),
    ("site", Capability::ModuleImport),
    ("pickle", Capability::NestedDeserialization),
    ("_pickle", Capability::NestedDeserialization),
    ("cPickle", Capability::NestedDeserialization),
    ("shelve", Capability::NestedDeserialization),
    ("joblib.load", Capability::NestedDeserialization),
    ("torch.load", Capability::NestedDeserialization),
    ("torch.serialization", Capability::NestedDeserialization),
    (
        "torch.storage._load_from_bytes",
        Capability::NestedDeserialization,
    ),
    ("torch.hub", Capability::NestedDeserialization),
    (
        "torch.utils.data.datapipes",
        Capability::NestedDeserialization,
    ),
    ("numpy.load", Capability::NestedDeserialization),
    ("numpy.lib.npyio", Capability::NestedDeserialization),
    ("pandas.read_pickle", Capability::NestedDeserialization),
    ("pandas.io", Capability::NestedDeserialization),
    ("yaml", Capability::NestedDeserialization),
    ("builtins.open", Capability::FileSystem),
    ("io", Capability::FileSystem),
    ("_io", Capability::FileSystem),
    ("shutil", Capability::FileSystem),
    ("tempfile", Capability::FileSystem),
    ("logging", Capability::FileSystem),
    ("distutils", Capability::FileSystem),
    ("linecache", Capability::FileSystem),
    ("fileinput", Capability::FileSystem),
    ("glob", Capability::FileSystem),
    ("zipfile", Capability::FileSystem),
    ("tarfile", Capability::FileSystem),
    ("sqlite3", Capability::FileSystem),
    ("mmap", Capability::FileSystem),
    ("compileall", Capability::FileSystem),
    ("py_compile", Capability::FileSystem),
    ("socket", Capability::Network),
    ("_socket", Capability::Network),
    ("ssl", Capability::Network),
    ("http", Capability::Network),
    ("httplib", Capability::Network),
    ("urllib", Capability::Network),
    ("urllib2", Capability::Network),
    ("smtplib", Capability::Network),
    ("ftplib", Capability::Network),
    ("poplib", Capability::Network),
    ("imaplib", Capability::Network),
    ("telnetlib", Capability::Network),
    ("nntplib", Capability::Network),
    ("xmlrpc", Capability::Network),
    ("socketserver", Capability::Network),
    ("requests", Capability::Network),
    ("aiohttp", Capability::Network),
    ("httpx", Capability::Network),
    ("urllib3", Capability::Network),
    ("ctypes", Capability::NativeCode),
    ("_ctypes", Capability::NativeCode),
    ("cffi", Capability::NativeCode),
    ("numpy.ctypeslib", Capability::NativeCode),
    ("signal", Capability::ProcessControl),
    ("atexit", Capability::ProcessControl),
    ("threading", Capability::ProcessControl),
    ("_thread", Capability::ProcessControl),
    ("gc", Capability::ProcessControl),
    ("_interpreters", Capability::ProcessControl),
    ("_xxsubinterpreters", Capability::ProcessControl),
    ("builtins.exit", Capability::ProcessControl),
    ("builtins.quit", Capability::ProcessControl),
    ("fickling", Capability::ScannerTampering),
    ("picklescan", Capability::ScannerTampering),
    ("modelscan", Capability::ScannerTampering),
    ("modelaudit", Capability::ScannerTampering),
    ("saferpickle", Capability::ScannerTampering),
    ("pickguard", Capability::ScannerTampering),
];

fn prefix_match(qualified: &str, prefix: &str) -> bool {
    qualified == prefix
        || (qualified.len() > prefix.len()
            && qualified.starts_with(prefix)
            && qualified.as_bytes()[prefix.len()] == b'.')
}

/// The danger-table entry for a qualified name, most specific first.
pub fn capability(qualified: &str) -> Option<Capability> {
    DANGER
        .iter()
        .filter(|(p, _)| prefix_match(qualified, p))
        .max_by_key(|(p, _)| p.len())
        .map(|(_, c)| *c)
}

/// User additions from a config file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserPolicy {
    /// Profiles to enable; default: all.
    #[serde(default)]
    pub profiles: Option<Vec<Profile>>,
    /// Globals to accept as clean: `module.name`, or `module.*` for a whole module tree.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Globals to report as malicious even if an allowlist accepts them.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Analysis budgets (`[limits]`); the command line's `--max-*` win.
    #[serde(default)]
    pub limits: crate::budgets::Budgets,
}

/// How a global is judged.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "class", rename_all = "kebab-case")]
pub enum Class {
    /// On an allowlist.
    Allowed { by: String },
    /// Known capability or structural trick: malicious.
    Dangerous {
        capability: Option<Capability>,
        why: String,
    },
    /// Standard-library object outside the data allowlist: malicious.
    StdlibGadget { capability: Option<Capability> },
    /// Third-party code: loading means trusting it.
    Library,
}

impl Class {
    /// The rule a use of a global of this class is reported under (scan's
    /// pickles and Keras configs alike); `None` for allowed globals.
    pub fn rule(&self) -> Option<crate::finding::Rule> {
        use crate::finding::Rule;
        match self {
            Class::Allowed { .. } => None,
            Class::Dangerous { .. } => Some(Rule::DangerousGlobal),
            Class::StdlibGadget { .. } => Some(Rule::StdlibGadget),
            Class::Library => Some(Rule::LibraryGlobal),
        }
    }

    /// The class as reports name it (`GlobalUse::class`).
    pub fn label(&self) -> &'static str {
        match self {
            Class::Allowed { .. } => "allowed",
            Class::Dangerous { .. } => "dangerous",
            Class::StdlibGadget { .. } => "stdlib-gadget",
            Class::Library => "library",
        }
    }
}

/// The active policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub profiles: Vec<Profile>,
    pub user: UserPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            profiles: Profile::ALL.to_vec(),
            user: UserPolicy::default(),
        }
    }
}

fn user_match(pattern: &str, qualified: &str) -> bool {
    match pattern.strip_suffix(".*") {
        Some(prefix) => prefix_match(qualified, prefix) && qualified != prefix,
        None => pattern == qualified,
    }
}

impl Policy {
    pub fn from_user(user: UserPolicy) -> Policy {
        let profiles = user
            .profiles
            .clone()
            .unwrap_or_else(|| Profile::ALL.to_vec());
        Policy { profiles, user }
    }

    /// Which allowlist accepts `module.name`, if any.
    pub fn allowed_by(&self, module: &str, name: &str) -> Option<String> {
        let q = format!("{module}.{name}");
        for p in &self.profiles {
            if p.globals().contains(&q.as_str()) {
                return Some(p.name().to_owned());
            }
            if *p == Profile::Torch && module == "torch" {
                if TORCH_DTYPES.contains(&name)
                    || pickguard_formats::torch::storage_class_element_size(name).is_some()
                {
                    return Some(p.name().to_owned());
                }
                // Legacy tensor classes (torch.FloatTensor, ...).
                if name.ends_with("Tensor") && !name.contains('.') && name.len() > 6 {
                    return Some(p.name().to_owned());
                }
            }
        }
        if self.user.allow.iter().any(|pat| user_match(pat, &q)) {
            return Some("config".to_owned());
        }
        None
    }

    /// Judge one global.
    pub fn classify(&self, module: &str, name: &str) -> Class {
        let q = format!("{module}.{name}");
        if self.user.deny.iter().any(|pat| user_match(pat, &q)) {
            return Class::Dangerous {
                capability: capability(&q),
                why: "denied by the configuration".into(),
            };
        }
        if let Some(by) = self.allowed_by(module, name) {
            return Class::Allowed { by };
        }
        if let Some(c) = capability(&q) {
            return Class::Dangerous {
                capability: Some(c),
                why: c.describe().to_owned(),
            };
        }
        if is_stdlib(module) {
            return Class::StdlibGadget { capability: None };
        }
        Class::Library
    }
}

/// A dotted name that walks from one module into another object through
/// attributes (`posixpath` + `os.system`: only the name matters): returns the walk's target as
/// (module, name) when a segment is itself a module or a dunder.
pub fn attribute_walk(name: &str) -> Option<(String, String)> {
    let segs: Vec<&str> = name.split('.').collect();
    if segs.len() < 2 {
        return None;
    }
    for (i, s) in segs[..segs.len() - 1].iter().enumerate() {
        let modlike = pickguard_pickle::names::STDLIB_MODULES
            .binary_search(s)
            .is_ok()
            || s.starts_with("__")
            || ["torch", "numpy", "np", "pickle", "subprocess", "importlib"].contains(s);
        if modlike {
            let target_mod = segs[i..segs.len() - 1].join(".");
            return Some((target_mod, segs[segs.len() - 1].to_owned()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_first() {
        let p = Policy::default();
        assert!(matches!(
            p.classify("torch._utils", "_rebuild_tensor_v2"),
            Class::Allowed { .. }
        ));
        assert!(matches!(
            p.classify("torch", "FloatStorage"),
            Class::Allowed { .. }
        ));
        assert!(matches!(
            p.classify("collections", "OrderedDict"),
            Class::Allowed { .. }
        ));
        assert!(matches!(
            p.classify("posix", "system"),
            Class::Dangerous {
                capability: Some(Capability::CommandExecution),
                ..
            }
        ));
        assert!(matches!(
            p.classify("dataclasses", "_create_fn"),
            Class::Dangerous { .. }
        ));
        // Not in the danger table, still malicious: stdlib outside the allowlist.
        assert!(matches!(
            p.classify("antigravity", "geohash"),
            Class::StdlibGadget { .. }
        ));
        assert!(matches!(
            p.classify("sklearn.linear_model", "LogisticRegression"),
            Class::Library
        ));
        assert!(matches!(
            p.classify("torch._inductor.codecache", "compile_file"),
            Class::Dangerous { .. }
        ));
    }

    #[test]
    fn user_rules() {
        let p = Policy::from_user(UserPolicy {
            profiles: None,
            allow: vec!["mypkg.*".into()],
            deny: vec!["collections.OrderedDict".into()],
            limits: Default::default(),
        });
        assert!(matches!(
            p.classify("mypkg.models", "Net"),
            Class::Allowed { .. }
        ));
        assert!(matches!(p.classify("mypkgx", "Net"), Class::Library));
        assert!(matches!(
            p.classify("collections", "OrderedDict"),
            Class::Dangerous { .. }
        ));
    }

    #[test]
    fn walks() {
        assert_eq!(
            attribute_walk("os.system"),
            Some(("os".into(), "system".into()))
        );
        assert_eq!(attribute_walk("Module"), None);
        assert_eq!(attribute_walk("Outer.Inner"), None);
        assert_eq!(
            attribute_walk("__builtins__.eval"),
            Some(("__builtins__".into(), "eval".into()))
        );
    }

    #[test]
    fn prefixes() {
        assert!(prefix_match("os.path.join", "os"));
        assert!(!prefix_match("osx.thing", "os"));
        assert_eq!(capability("posixpath.join"), None);
    }
}
