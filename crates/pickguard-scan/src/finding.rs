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
    ReadError = "PG000-read-error", High, "The file could not be read; nothing about it was checked.", effect Verdict::Error;
    DangerousGlobal = "PG101-dangerous-global", Critical, "The pickle imports or calls a callable with a dangerous capability.", effect Verdict::Malicious;
    StdlibGadget = "PG102-stdlib-gadget", High, "The pickle imports or calls a standard-library object outside the data allowlist.", effect Verdict::Malicious;
    DynamicCall = "PG103-dynamic-call", High, "The pickle calls a value computed at load time, not a named global.", effect Verdict::Malicious;
    AttributeWalk = "PG104-attribute-walk", Critical, "A dotted global name walks through a module attribute to reach another object.", effect Verdict::Malicious;
    ExtensionCode = "PG105-extension-code", High, "An EXT opcode names a global through copyreg's extension registry, hidden from the byte stream.", effect Verdict::Malicious;
    MutatesGlobal = "PG106-mutates-global", High, "The pickle changes state of an imported object (BUILD, APPEND, SETITEM or ADDITEMS on a global).", effect Verdict::Malicious;
    ComputedGlobalName = "PG107-computed-global-name", High, "A STACK_GLOBAL name is computed at load time or too long to be a real name.", effect Verdict::Malicious;
    FrameTamper = "PG108-frame-tamper", High, "Frame lengths disagree with the opcodes they contain: different unpicklers read different programs.", effect Verdict::Malicious;
    ZipTamper = "PG109-zip-tamper", High, "The zip's central directory and local headers disagree: torch and strict readers see different files.", effect Verdict::Malicious;
    Polyglot = "PG110-polyglot", High, "The file is valid as two formats at once, so different loaders see different content.", effect Verdict::Malicious;
    TorchStorageMismatch = "PG111-torch-storage-mismatch", High, "A tensor or storage reference does not fit the records of the checkpoint.", effect Verdict::Malicious;
    SignatureMismatch = "PG112-signature-mismatch", Critical, "The model does not match its signature: files changed, added or removed, or the signature is invalid.", effect Verdict::Malicious;
    KerasLambda = "PG113-keras-lambda", High, "A Keras model carries Python bytecode (a Lambda layer) that runs when it is loaded without safe_mode.", effect Verdict::Malicious;
    TemplateInjection = "PG114-template-injection", Critical, "A chat template (Jinja, rendered by llama.cpp front-ends) reaches Python internals: dunder or private attributes, computed attribute names, jinja2 objects used as gadgets.", effect Verdict::Malicious;
    GgufMalformed = "PG115-gguf-malformed", High, "GGUF structure a conforming writer never produces (sizes that overflow, overlapping or misaligned tensors, unknown types): the shapes loader exploits use.", effect Verdict::Malicious;
    OnnxExternalEscape = "PG116-onnx-external-data-escape", Critical, "An ONNX tensor's external data location is absolute, climbs out with `..`, or resolves outside the model's directory: loading reads (and may serve back) files elsewhere on the host.", effect Verdict::Malicious;
    CodeByValueDangerous = "PG117-code-by-value-dangerous", Critical, "Code carried by value (cloudpickle, dill, types.CodeType) names a dangerous capability (system, popen, exec, eval, subprocess, sockets...): loading it makes a function that does so.", effect Verdict::Malicious;
    TfHostOp = "PG118-tf-host-op", Critical, "A TensorFlow graph holds an op that calls Python in the serving process, or reads or writes a file the graph itself names (a constant path, a file:// print stream, debug dumps, an asset outside assets/).", effect Verdict::Malicious;
    TorchScriptHostOp = "PG119-torchscript-host-op", Critical, "TorchScript code writes or reads host files (`torch.save` / `aten::save`, `torch.from_file` / `aten::from_file`, which with shared=True writes any bytes anywhere); in a scripted `__setstate__` it runs inside torch.jit.load.", effect Verdict::Malicious;
    LibraryGlobal = "PG201-library-global", Medium, "The pickle imports third-party code; loading it means trusting that code.", effect Verdict::NeedsTrust;
    OnnxCustomOp = "PG203-onnx-custom-op", Medium, "The ONNX graph uses operators of a domain no runtime implements itself: running it means loading a custom-op library, native code you must trust.", effect Verdict::NeedsTrust;
    CodeByValue = "PG204-code-by-value", Medium, "Code carried by value (cloudpickle, dill, types.CodeType): a function is rebuilt from bytecode; it names no dangerous capability, but running it means trusting it.", effect Verdict::NeedsTrust;
    TorchScriptCustomOp = "PG206-torchscript-custom-op", Medium, "TorchScript code calls an operator of a namespace torch does not ship (`ops.NS.op`): the process must load a native library for it, code you must trust.", effect Verdict::NeedsTrust;
    TfIoOp = "PG205-tf-io-op", Medium, "A TensorFlow graph reads or writes files through its inputs (dataset readers and writers, summary writers): what it touches is decided by whoever feeds it; trust it before serving.", effect Verdict::NeedsTrust;
    TorchScript = "PG202-torchscript", Medium, "TorchScript archive: torch.jit.load runs the code it carries.", effect Verdict::NeedsTrust;
    BudgetExceeded = "PG301-budget-exceeded", Medium, "An analysis limit was reached; the rest was not analysed.", effect Verdict::Inconclusive;
    UnsupportedFormat = "PG302-unsupported-format", Medium, "Content in a format pickguard does not analyse yet.", effect Verdict::Inconclusive;
    Unreadable = "PG303-unreadable", Medium, "Part of the file could not be decoded, so it was not analysed.", effect Verdict::Inconclusive;
    TemplateUnjudged = "PG305-template-unjudged", Medium, "A chat template could not be judged (the Jinja parser refuses it, it loads other templates, or it is too large).", effect Verdict::Inconclusive;
    TorchBadPersistentId = "PG304-torch-bad-persistent-id", Medium, "A persistent id is not the ('storage', ...) tuple torch writes.", effect Verdict::Inconclusive;
    PickleError = "PG401-pickle-error", Info, "Loading raises an error here; nothing after this point runs.", effect Verdict::Clean;
    TrailingData = "PG402-trailing-data", Info, "Bytes after the last pickle stream that no loader reads as a pickle.", effect Verdict::Clean;
    NotWeightsOnly = "PG403-not-weights-only", Info, "torch.load(weights_only=True) would refuse this pickle; it needs weights_only=False.", effect Verdict::Clean;
    ZipCrcMismatch = "PG404-zip-crc-mismatch", Low, "A member's CRC is wrong: torch loads it, Python's zipfile refuses it.", effect Verdict::Clean;
    PersistentId = "PG405-persistent-id", Info, "The pickle uses persistent ids; what they load depends on the loader.", effect Verdict::Clean;
    OddStructure = "PG406-odd-structure", Info, "Opcodes a standard pickler does not write (late PROTO, opcode above the declared protocol).", effect Verdict::Clean;
    NestedTorchData = "PG408-nested-torch-data", Info, "torch.storage._load_from_bytes with a literal checkpoint (what pickle.dumps of a tensor writes): the nested checkpoint is scanned and the file is judged by what it contains.", effect Verdict::Clean;
    KerasTorchModule = "PG409-keras-torch-module", Info, "A Keras TorchModuleWrapper layer carries a torch.save checkpoint that Keras unpickles with torch.load(weights_only=False) (safe_mode=False, and in any mode before Keras 3.11): the checkpoint is scanned and the file is judged by what it contains.", effect Verdict::Clean;
    MultipleStreams = "PG407-multiple-streams", Info, "More than one pickle stream: a loader that calls load() repeatedly runs each.", effect Verdict::Clean;
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
