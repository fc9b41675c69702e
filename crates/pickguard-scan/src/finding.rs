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

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

macro_rules! rules {
    ($( $variant:ident = $id:literal, $verdict:ident, $sev:ident, $summary:literal; )*) => {
        /// Every rule, with a stable id that never changes meaning.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Hash)]
        pub enum Rule { $( #[serde(rename = $id)] $variant, )* }
        impl Rule {
            pub const ALL: &'static [Rule] = &[ $( Rule::$variant, )* ];
            pub fn id(self) -> &'static str { match self { $( Rule::$variant => $id, )* } }
            /// What the rule's findings do to the verdict.
            pub fn verdict(self) -> Verdict { match self { $( Rule::$variant => Verdict::$verdict, )* } }
            pub fn default_severity(self) -> Severity { match self { $( Rule::$variant => Severity::$sev, )* } }
            pub fn summary(self) -> &'static str { match self { $( Rule::$variant => $summary, )* } }
        }
    };
}

rules! {
    DangerousGlobal = "PG101-dangerous-global", Malicious, Critical, "The pickle imports or calls a callable with a dangerous capability.";
    StdlibGadget = "PG102-stdlib-gadget", Malicious, High, "The pickle imports or calls a standard-library object outside the data allowlist.";
    DynamicCall = "PG103-dynamic-call", Malicious, High, "The pickle calls a value computed at load time, not a named global.";
    AttributeWalk = "PG104-attribute-walk", Malicious, Critical, "A dotted global name walks through a module attribute to reach another object.";
    ExtensionCode = "PG105-extension-code", Malicious, High, "An EXT opcode names a global through copyreg's extension registry, hidden from the byte stream.";
    MutatesGlobal = "PG106-mutates-global", Malicious, High, "The pickle changes state of an imported object (BUILD, APPEND, SETITEM or ADDITEMS on a global).";
    ComputedGlobalName = "PG107-computed-global-name", Malicious, High, "A STACK_GLOBAL name is computed at load time or too long to be a real name.";
    FrameTamper = "PG108-frame-tamper", Malicious, High, "Frame lengths disagree with the opcodes they contain: different unpicklers read different programs.";
    ZipTamper = "PG109-zip-tamper", Malicious, High, "The zip's central directory and local headers disagree: torch and strict readers see different files.";
    Polyglot = "PG110-polyglot", Malicious, High, "The file is valid as two formats at once, so different loaders see different content.";
    TorchStorageMismatch = "PG111-torch-storage-mismatch", Malicious, High, "A tensor or storage reference does not fit the records of the checkpoint.";
    SignatureMismatch = "PG112-signature-mismatch", Malicious, Critical, "The model does not match its signature: files changed, added or removed, or the signature is invalid.";
    KerasLambda = "PG113-keras-lambda", Malicious, High, "A Keras model carries Python bytecode (a Lambda layer) that runs when it is loaded without safe_mode.";
    LibraryGlobal = "PG201-library-global", NeedsTrust, Medium, "The pickle imports third-party code; loading it means trusting that code.";
    TorchScript = "PG202-torchscript", NeedsTrust, Medium, "TorchScript archive: torch.jit.load runs the code it carries.";
    BudgetExceeded = "PG301-budget-exceeded", Inconclusive, Medium, "An analysis limit was reached; the rest was not analysed.";
    UnsupportedFormat = "PG302-unsupported-format", Inconclusive, Medium, "Content in a format pickguard does not analyse yet.";
    Unreadable = "PG303-unreadable", Inconclusive, Medium, "Part of the file could not be decoded, so it was not analysed.";
    TorchBadPersistentId = "PG304-torch-bad-persistent-id", Inconclusive, Medium, "A persistent id is not the ('storage', ...) tuple torch writes.";
    PickleError = "PG401-pickle-error", Clean, Info, "Loading raises an error here; nothing after this point runs.";
    TrailingData = "PG402-trailing-data", Clean, Info, "Bytes after the last pickle stream that no loader reads as a pickle.";
    NotWeightsOnly = "PG403-not-weights-only", Clean, Info, "torch.load(weights_only=True) would refuse this pickle; it needs weights_only=False.";
    ZipCrcMismatch = "PG404-zip-crc-mismatch", Clean, Low, "A member's CRC is wrong: torch loads it, Python's zipfile refuses it.";
    PersistentId = "PG405-persistent-id", Clean, Info, "The pickle uses persistent ids; what they load depends on the loader.";
    OddStructure = "PG406-odd-structure", Clean, Info, "Opcodes a standard pickler does not write (late PROTO, opcode above the declared protocol).";
    MultipleStreams = "PG407-multiple-streams", Clean, Info, "More than one pickle stream: a loader that calls load() repeatedly runs each.";
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
