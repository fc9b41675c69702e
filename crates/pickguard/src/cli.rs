//! Command-line definitions. Doc comments here are the `--help` text.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// pickguard guards the machine-learning supply chain.
///
/// It reads model files the way their loaders do, without ever running them,
/// and tells you which code loading them would run.
#[derive(Parser, Debug)]
#[command(name = "pickguard", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Scan model files for code that would run when they are loaded.
    ///
    /// Reads PyTorch checkpoints (zip, legacy, legacy tar, TorchScript),
    /// raw pickles (any number of streams), NumPy .npy with object arrays,
    /// zip and tar archives (nested), and gzip, deciding what a file is by its
    /// content, never its name. Nothing in a file is executed or imported.
    ///
    /// Each file gets one verdict:
    ///   clean         nothing would run but allowlisted data constructors
    ///   needs-trust   only third-party library code would run (trust it first)
    ///   malicious     dangerous code would run, or the file is built to evade scanners
    ///   inconclusive  part of the file could not be analysed (never clean)
    ///   error         the file could not be read
    ///
    /// Exit status: 0 all clean; 1 a file reached --fail-on; 2 otherwise an
    /// error or inconclusive file.
    ///
    /// Examples:
    ///   pickguard scan model.pt
    ///   pickguard scan ./checkpoints --format json > report.json
    ///   pickguard scan . --format sarif > pickguard.sarif
    ///   curl -sL https://host/model.bin | pickguard scan -
    #[command(verbatim_doc_comment)]
    Scan(ScanArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line per file, then findings with call chains.
    Text,
    /// One JSON document; each file has a `verdict` field.
    Json,
    /// SARIF 2.1.0, for code-scanning dashboards.
    Sarif,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Exit 1 only when a file is malicious.
    Malicious,
    /// Exit 1 when a file is malicious or needs trust (default).
    NeedsTrust,
    /// Never exit 1 (errors and inconclusive files still exit 2).
    Never,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// Files or directories to scan (directories recursively); `-` reads standard input.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Which verdicts make the exit status 1.
    #[arg(long, value_enum, default_value_t = FailOn::NeedsTrust)]
    pub fail_on: FailOn,

    /// Policy file (TOML) with `allow`, `deny` and `profiles` keys; see docs/policy.md.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Allow these globals (`module.name` or `module.*`), in addition to the config.
    #[arg(long = "allow", value_name = "GLOBAL")]
    pub allow: Vec<String>,

    /// Write the report to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Show informational findings and every global each file imports.
    #[arg(long, short = 'v')]
    pub verbose: bool,

    /// In text output, also list files that are not models.
    #[arg(long)]
    pub all: bool,

    /// Seconds of analysis allowed per file before it is reported inconclusive.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub timeout: u64,

    /// Threads for scanning directories (default: one per core).
    #[arg(long, short = 'j', value_name = "N")]
    pub threads: Option<usize>,

    /// Colour: auto (on a terminal), always, never.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,

    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// Follow symbolic links when walking directories.
    #[arg(long, short = 'L')]
    pub follow: bool,
}
