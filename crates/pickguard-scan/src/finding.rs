//! Findings, rules and verdicts.

use pickguard_pickle::ReadView;
use serde::Serialize;

/// The verdict for a file; ordered by how much it demands attention
/// (`Error` is separate: the file could not be read at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Nothing in the file can run code when loaded by any of the loaders considered.
    Clean,
    /// Only third-party library code would run: not an attack by itself, but
    /// loading means trusting that code.
    NeedsTrust,
    /// Part of the file could not be analysed (budget hit, unsupported or
    /// unreadable content). Never clean.
    Inconclusive,
    /// The file would run dangerous code, or was built to evade scanners.
    Malicious,
    /// The file could not be read.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::NeedsTrust => "needs-trust",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Malicious => "malicious",
            Verdict::Error => "error",
        }
    }
}

pub use pickguard_findings::Severity;

pickguard_findings::rules! {
    command "scan", effect Verdict;
    ReadError = "PG000-read-error", High, "The file could not be read; nothing about it was checked.",
        doc "the file could not be read at all (missing, unreadable, a directory entry that vanished). Its verdict is `error` (exit 2): nothing about it was checked.", effect Verdict::Error;
    DangerousGlobal = "PG101-dangerous-global", Critical, "The pickle imports or calls a callable with a dangerous capability.",
        doc "the pickle imports or calls a callable with a known dangerous capability: command execution (`os.system`, `subprocess`), code execution (`eval`, `exec`, `runpy`, `timeit`...), run-time name resolution (`__import__`, `getattr`, `importlib`, `pkgutil.resolve_name`, `operator.attrgetter`...), nested deserialization (`pickle.loads`, `torch.load`...), file system, network, native code, process control, or scanner tampering. The table only ranks: anything outside the allowlists is flagged whether or not it is listed.", effect Verdict::Malicious;
    StdlibGadget = "PG102-stdlib-gadget", High, "The pickle imports or calls a standard-library object outside the data allowlist.",
        doc "a standard-library object outside the plain-data allowlist. The standard library ships no model classes, so every such object in a model file is a gadget, even one no denylist has named yet.", effect Verdict::Malicious;
    DynamicCall = "PG103-dynamic-call", High, "The pickle calls a value computed at load time, not a named global.",
        doc "the pickle calls a value produced by another call (e.g. `getattr(__import__('os'), 'system')(...)`), so the callable is chosen at load time.", effect Verdict::Malicious;
    AttributeWalk = "PG104-attribute-walk", Critical, "A dotted global name walks through a module attribute to reach another object.",
        doc "at protocol 4 and above, `find_class` resolves dotted names attribute by attribute, so `STACK_GLOBAL('posixpath', 'os.system')` is `os.system`. Reported with the walk's target.", effect Verdict::Malicious;
    ExtensionCode = "PG105-extension-code", High, "An EXT opcode names a global through copyreg's extension registry, hidden from the byte stream.",
        doc "EXT1/EXT2/EXT4 name a global through `copyreg`'s extension registry. Standard pickles never use it, and the callable cannot be named from the file.", effect Verdict::Malicious;
    MutatesGlobal = "PG106-mutates-global", High, "The pickle changes state of an imported object (BUILD, APPEND, SETITEM or ADDITEMS on a global).",
        doc "BUILD, APPEND(S), SETITEM(S) or ADDITEMS applied to an imported object (a module, `sys.path`, `os.environ`...) changes process state without a visible call.", effect Verdict::Malicious;
    ComputedGlobalName = "PG107-computed-global-name", High, "A STACK_GLOBAL name is computed at load time or too long to be a real name.",
        doc "a STACK_GLOBAL operand is computed at load time, or too long to be a real name.", effect Verdict::Malicious;
    FrameTamper = "PG108-frame-tamper", High, "Frame lengths disagree with the opcodes they contain: different unpicklers read different programs.",
        doc "an opcode crosses the end of its FRAME, or a FRAME starts inside another. `pickle.loads` and the C unpickler reading a file object without `peek` (as `torch.load` reads `data.pkl`) then execute different programs, and a buffered file (`pickle.load(open(f, \"rb\"))`) mixes the two per frame; every reading is analysed and reported.", effect Verdict::Malicious;
    ZipTamper = "PG109-zip-tamper", High, "The zip's central directory and local headers disagree: torch and strict readers see different files.",
        doc "the zip's central directory and local headers disagree (names, methods, flags, sizes, duplicates, data in front of the archive). torch reads the central directory; strict readers read the local headers.", effect Verdict::Malicious;
    Polyglot = "PG110-polyglot", High, "The file is valid as two formats at once, so different loaders see different content.",
        doc "the file is valid as two formats (a pickle at its start and a zip at its end); each interpretation is scanned.", effect Verdict::Malicious;
    TorchStorageMismatch = "PG111-torch-storage-mismatch", High, "A tensor or storage reference does not fit the records of the checkpoint.",
        doc "a persistent id names no `data/<key>` record, declares more bytes than the record holds, or a tensor reaches past its storage (the memory-corruption shape of CVE-2026-24747).", effect Verdict::Malicious;
    SignatureMismatch = "PG112-signature-mismatch", Critical, "The model does not match its signature: files changed, added or removed, or the signature is invalid.",
        doc "with `scan --verify-signature SIG --public-key PUB`, the model does not match its OpenSSF model-signing signature: the signature does not verify with the key, or files were changed, added or removed since signing. Each difference is listed.", effect Verdict::Malicious;
    KerasLambda = "PG113-keras-lambda", High, "A Keras model carries Python bytecode (a Lambda layer) that runs when it is loaded without safe_mode.",
        doc "a Keras 3 archive's `config.json` holds a `Lambda` layer whose function is marshalled Python bytecode. `keras.saving.load_model(safe_mode=False)` (and Keras before safe_mode) runs it while rebuilding the model. Other objects in `config.json` name a `module` Keras imports; those outside `keras` are judged like pickle globals (PG101/PG102/PG201), and a plain function is `module` plus the name in its `config`.", effect Verdict::Malicious;
    TemplateInjection = "PG114-template-injection", Critical, "A chat template (Jinja, rendered by llama.cpp front-ends) reaches Python internals: dunder or private attributes, computed attribute names, jinja2 objects used as gadgets.",
        doc "A chat template (Jinja, rendered by llama.cpp front-ends) reaches Python internals: dunder or private attributes, computed attribute names, jinja2 objects used as gadgets. GGUF chat templates (`tokenizer.chat_template`, `tokenizer.chat_template.NAME`; keys read as llama.cpp reads them, up to a NUL) are parsed with minijinja's parser and judged at the *sinks* where a name becomes an attribute: private or dunder names, subscripts whose key is neither a literal nor provably an integer (jinja2 falls back from items to attributes), `attr`/`map(attribute=)`/`selectattr`/... with computed names, `str.format` fields that read attributes, escapes that spell `_`, and jinja2's globals (`cycler`, `joiner`, `lipsum`, `namespace`, `self`, ...) followed by an access. A front-end that renders with an unsandboxed `jinja2.Environment` (llama-cpp-python ≤ 0.2.71, CVE-2024-34359) runs the payload; the corpus proves it with real jinja2. The rules are in `crates/pickguard-scan/src/template.rs`.", effect Verdict::Malicious;
    GgufMalformed = "PG115-gguf-malformed", High, "GGUF structure a conforming writer never produces (sizes that overflow, overlapping or misaligned tensors, unknown types): the shapes loader exploits use.",
        doc "GGUF structure a conforming writer never produces (sizes that overflow, overlapping or misaligned tensors, unknown types): the shapes loader exploits use. Checked: value types, counts and lengths against the bytes left, at most 4 dimensions, element counts and sizes without overflow, first dimension a multiple of the type's block, offsets aligned to `general.alignment`, no two tensors' data overlapping. Data that ends past the file is PG303 (truncated), not this.", effect Verdict::Malicious;
    OnnxExternalEscape = "PG116-onnx-external-data-escape", Critical, "An ONNX tensor's external data location is absolute, climbs out with `..`, or resolves outside the model's directory: loading reads (and may serve back) files elsewhere on the host.",
        doc "An ONNX tensor's external data location is absolute, climbs out with `..`, or resolves outside the model's directory: loading reads (and may serve back) files elsewhere on the host. onnx's own loader refuses these since 1.16 (CVE-2024-27318, CVE-2024-27319); older loaders and other runtimes read the file. A location that exists and stays inside the directory is also checked against the file's size and the tensor's shape (PG303 when it does not fit); from standard input, where the directory is unknown, external data is PG303.", effect Verdict::Malicious;
    CodeByValueDangerous = "PG117-code-by-value-dangerous", Critical, "Code carried by value (cloudpickle, dill, types.CodeType) names a dangerous capability (system, popen, exec, eval, subprocess, sockets...): loading it makes a function that does so.",
        doc "Code carried by value (cloudpickle, dill, types.CodeType) names a dangerous capability (system, popen, exec, eval, subprocess, sockets...): loading it makes a function that does so. The names are those reachable from the arguments of cloudpickle's and dill's function, code, cell and module helpers (`co_names`, constants, the globals the function refers to); other helpers of those libraries (dill's `_eval_repr`, `_create_filehandle`...) are judged as globals (PG101).", effect Verdict::Malicious;
    TfHostOp = "PG118-tf-host-op", Critical, "A TensorFlow graph holds an op that calls Python in the serving process, or reads or writes a file the graph itself names (a constant path, a file:// print stream, debug dumps, an asset outside assets/).",
        doc "A TensorFlow graph holds an op that calls Python in the serving process, or reads or writes a file the graph itself names (a constant path, a file:// print stream, debug dumps, an asset outside assets/). `PyFunc`, `PyFuncStateless`, `EagerPyFunc`; `ReadFile`, `WriteFile`, `MatchingFiles`, `ImmutableConst`; `PrintV2` with a `file://` output stream; `Debug*` ops with dump destinations; `RecordInput` (its `file_pattern`); `Save*`/`Restore*`/`MergeV2Checkpoints`/`LoadAndRemapMatrix` and text-file table initialisers whose path no placeholder, function argument or loader-fed tensor (`saver_def`'s filename, an asset's tensor) feeds (every SavedModel restores its variables and reads its vocabularies that way, which is fine); asset file names that are absolute or climb out with `..`. Ops inside the graph's function library are read too.", effect Verdict::Malicious;
    TorchScriptHostOp = "PG119-torchscript-host-op", Critical, "TorchScript code writes or reads host files (`torch.save` / `aten::save`, `torch.from_file` / `aten::from_file`, which with shared=True writes any bytes anywhere); in a scripted `__setstate__` it runs inside torch.jit.load.",
        doc "TorchScript code writes or reads host files (`torch.save` / `aten::save`, `torch.from_file` / `aten::from_file`, which with shared=True writes any bytes anywhere); in a scripted `__setstate__` it runs inside torch.jit.load. Names are resolved as the TorchScript loader resolves them: `torch` and `ops`, local aliases (`_a = ops.aten`, `_f = torch.save`), `getattr(X, \"save\")` with a literal (escapes decoded), at any nesting; a method named `save` on a user object is not one. The lite interpreter's `bytecode.pkl` op table is searched for `aten::save` and `aten::from_file` too. Each finding says whether it is in `__setstate__` (runs at load) or in other code (runs when the model runs).", effect Verdict::Malicious;
    LibraryGlobal = "PG201-library-global", Medium, "The pickle imports third-party code; loading it means trusting that code.",
        doc "third-party code (a pickled `nn.Module`, an sklearn estimator...). Not an attack by itself; loading means trusting that library and version. Allow it with `--allow module.Class` or a policy file.", effect Verdict::NeedsTrust;
    OnnxCustomOp = "PG203-onnx-custom-op", Medium, "The ONNX graph uses operators of a domain no runtime implements itself: running it means loading a custom-op library, native code you must trust.",
        doc "The ONNX graph uses operators of a domain no runtime implements itself: running it means loading a custom-op library, native code you must trust. Domains every runtime implements (`ai.onnx`, `ai.onnx.ml`, training, `com.microsoft` contrib ops) and model-local functions (what torch.onnx's dynamo exporter writes) are not custom.", effect Verdict::NeedsTrust;
    CodeByValue = "PG204-code-by-value", Medium, "Code carried by value (cloudpickle, dill, types.CodeType): a function is rebuilt from bytecode; it names no dangerous capability, but running it means trusting it.",
        doc "Code carried by value (cloudpickle, dill, types.CodeType): a function is rebuilt from bytecode; it names no dangerous capability, but running it means trusting it. A name assembled at run time inside the function (`getattr(os, 'sys' + 'tem')`) is not seen, which is why this is needs-trust and never clean; a rebuilt function *called* while loading is also PG103.", effect Verdict::NeedsTrust;
    TorchScriptCustomOp = "PG206-torchscript-custom-op", Medium, "TorchScript code calls an operator of a namespace torch does not ship (`ops.NS.op`): the process must load a native library for it, code you must trust.",
        doc "TorchScript code calls an operator of a namespace torch does not ship (`ops.NS.op`): the process must load a native library for it, code you must trust. Without the library the archive does not load at all (`Unknown builtin op`).", effect Verdict::NeedsTrust;
    TfIoOp = "PG205-tf-io-op", Medium, "A TensorFlow graph reads or writes files through its inputs (dataset readers and writers, summary writers): what it touches is decided by whoever feeds it; trust it before serving.",
        doc "A TensorFlow graph reads or writes files through its inputs (dataset readers and writers, summary writers): what it touches is decided by whoever feeds it; trust it before serving. The op names are listed; serving such a graph with inputs you do not control lets the caller choose the files.", effect Verdict::NeedsTrust;
    TorchScript = "PG202-torchscript", Medium, "TorchScript archive: torch.jit.load runs the code it carries.",
        doc "a TorchScript archive: `torch.jit.load` compiles and runs the code it carries, and `torch.load(weights_only=True)` refuses it.", effect Verdict::NeedsTrust;
    BudgetExceeded = "PG301-budget-exceeded", Medium, "An analysis limit was reached; the rest was not analysed.",
        doc "a limit was reached (opcodes, memo, stack, values, streams, members, nesting, decompressed size, time); the rest was not analysed. Every budget but time is a `--max-…` flag and a `[limits]` key of the policy file (docs/policy.md); time is `--timeout`.", effect Verdict::Inconclusive;
    UnsupportedFormat = "PG302-unsupported-format", Medium, "Content in a format pickguard does not analyse yet.",
        doc "7z content, HDF5 structures the reader does not follow (dense attribute or link storage, shared messages, PyTables object arrays), or other content this version does not analyse (gzip, zlib, LZMA, xz, bzip2 and LZ4 frames are decompressed, within the size budget, and their content scanned).", effect Verdict::Inconclusive;
    Unreadable = "PG303-unreadable", Medium, "Part of the file could not be decoded, so it was not analysed.",
        doc "part of the file could not be decoded (a broken archive, an encrypted member, a raw record of unknown length, a safetensors header that `safetensors` refuses).", effect Verdict::Inconclusive;
    TemplateUnjudged = "PG305-template-unjudged", Medium, "A chat template could not be judged (the Jinja parser refuses it, it loads other templates, or it is too large).", effect Verdict::Inconclusive;
    TorchBadPersistentId = "PG304-torch-bad-persistent-id", Medium, "A persistent id is not the ('storage', ...) tuple torch writes.",
        doc "a persistent id is not the tuple torch writes; what a loader would do with it is unknown.", effect Verdict::Inconclusive;
    PickleError = "PG401-pickle-error", Info, "Loading raises an error here; nothing after this point runs.",
        doc "unpickling raises at this offset; nothing after it runs. Everything before it is still analysed and reported. In a joblib file, `pickle.load` fails where `joblib.load` reads array bytes; the joblib reading carries on from there.", effect Verdict::Clean;
    TrailingData = "PG402-trailing-data", Info, "Bytes after the last pickle stream that no loader reads as a pickle.",
        doc "bytes after the last pickle stream that are not a pickle.", effect Verdict::Clean;
    NotWeightsOnly = "PG403-not-weights-only", Info, "torch.load(weights_only=True) would refuse this pickle; it needs weights_only=False.",
        doc "`torch.load(weights_only=True)` would refuse this pickle's opcodes (e.g. a checkpoint saved with `pickle_protocol=4`).", effect Verdict::Clean;
    ZipCrcMismatch = "PG404-zip-crc-mismatch", Low, "A member's CRC is wrong: torch loads it, Python's zipfile refuses it.",
        doc "a member's CRC-32 is wrong: torch loads it anyway, Python's `zipfile` refuses it.", effect Verdict::Clean;
    PersistentId = "PG405-persistent-id", Info, "The pickle uses persistent ids; what they load depends on the loader.",
        doc "a plain pickle with persistent ids: `pickle.load` refuses them, other loaders decide what they load.", effect Verdict::Clean;
    OddStructure = "PG406-odd-structure", Info, "Opcodes a standard pickler does not write (late PROTO, opcode above the declared protocol).",
        doc "opcodes a standard pickler does not write: PROTO after the start, an opcode newer than the declared protocol, a text literal this emulator does not evaluate.", effect Verdict::Clean;
    NestedTorchData = "PG408-nested-torch-data", Info, "torch.storage._load_from_bytes with a literal checkpoint (what pickle.dumps of a tensor writes): the nested checkpoint is scanned and the file is judged by what it contains.",
        doc "torch.storage._load_from_bytes with a literal checkpoint (what pickle.dumps of a tensor writes): the nested checkpoint is scanned and the file is judged by what it contains. Only literal bytes (protocol 3 and later write them as BINBYTES) are scanned this way; bytes computed at load time (protocol 2 writes `_codecs.encode(str, 'latin1')`) cannot be, and the call stays PG101.", effect Verdict::Clean;
    KerasTorchModule = "PG409-keras-torch-module", Info, "A Keras TorchModuleWrapper layer carries a torch.save checkpoint that Keras unpickles with torch.load(weights_only=False) (safe_mode=False, and in any mode before Keras 3.11): the checkpoint is scanned and the file is judged by what it contains.",
        doc "a Keras `TorchModuleWrapper` layer's `config.module` is the base64 of a `torch.save` checkpoint, and `TorchModuleWrapper.from_config` passes it to `torch.load(weights_only=False)`: with `safe_mode=False`, and in any mode before Keras 3.11 (keras-team/keras#21575). The base64 is decoded as Python's `base64.b64decode` does and the checkpoint is scanned as the member `config.json!<LAYER.module>`, so the file is judged by what it contains: a module class is PG201, a payload PG101. Base64 that does not decode, or decodes to neither a zip nor a pickle, is PG303 (inconclusive). The Keras configuration is read wherever Keras would read one: a root `config.json` of any zip (also without `metadata.json`, beside torch members, or named with a NUL that Python's zipfile cuts off) and the `config.json` of a Keras model directory.", effect Verdict::Clean;
    MultipleStreams = "PG407-multiple-streams", Info, "More than one pickle stream: a loader that calls load() repeatedly runs each.",
        doc "more than one pickle stream; a loader that calls `load()` again runs each.", effect Verdict::Clean;
}

impl Rule {
    /// What the rule's findings do to the verdict.
    pub fn verdict(self) -> Verdict {
        self.effect()
    }
    pub fn default_severity(self) -> Severity {
        self.severity()
    }
}

/// Where a finding is.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Location {
    /// Archive member path, for containers (`archive/data.pkl`, nested with `!`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Index of the pickle stream in the file or member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<usize>,
    /// Byte offset (in the member's own bytes when `member` is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The reading of the bytes in which this was seen, when it matters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<ReadView>,
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub rule: Rule,
    pub severity: Severity,
    pub message: String,
    pub location: Location,
    /// The global concerned, as `module.name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<String>,
    /// Readable call chains, e.g. `posix.system('id')`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<String>,
}

impl Finding {
    pub fn new(rule: Rule, message: impl Into<String>, location: Location) -> Finding {
        Finding {
            rule,
            severity: rule.default_severity(),
            message: message.into(),
            location,
            global: None,
            calls: Vec::new(),
        }
    }
}
