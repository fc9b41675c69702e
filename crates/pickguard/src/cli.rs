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
    /// raw pickles (any number of streams), NumPy .npy/.npz, joblib, Keras
    /// .keras archives and .h5 models (and every HDF5 file's attributes,
    /// which PyTables may unpickle), TensorFlow SavedModels and GraphDefs
    /// (ops that run Python or touch files), GGUF (chat templates judged as Jinja programs, tensor
    /// infos checked), ONNX (external data kept in the model's directory,
    /// custom-op domains), safetensors headers, zip and tar archives (nested), and
    /// gzip/zlib/xz/lzma/bz2/lz4/zstd streams, deciding what a file is by its
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

    /// Convert PyTorch checkpoints (and .npz) to safetensors without running their code.
    ///
    /// The checkpoint is scanned first: anything that is not pure tensor data
    /// (a pickled class, a call outside the allowlist) is refused, naming the
    /// globals and where they are, and nothing is written. Tensors are then
    /// rebuilt from the pickle's structure alone and their bytes streamed into
    /// the output; the file appears only once complete.
    ///
    /// IN may be a file (torch zip or legacy checkpoint, .npz), a Hugging Face
    /// sharded checkpoint directory (pytorch_model.bin.index.json: shards are
    /// converted in parallel and model.safetensors.index.json is written), or a
    /// directory of checkpoints.
    ///
    /// Exit status: 0 converted; 1 refused (not pure tensor data); 2 error.
    ///
    /// Examples:
    ///   pickguard convert model.pt                    # writes model.safetensors
    ///   pickguard convert ckpt.pt -o out.safetensors --key state_dict --strip-prefix module.
    ///   pickguard convert ./bert-base -o ./bert-base-st
    #[command(verbatim_doc_comment)]
    Convert(ConvertArgs),

    /// Print a model's manifest: each file's SHA-256 and the root digest, as
    /// OpenSSF model signing defines them.
    Hash(HashArgs),

    /// Sign a model (file or directory) with an EC P-256 key.
    ///
    /// Writes a Sigstore bundle (v0.3) holding a DSSE-signed in-toto
    /// statement with one SHA-256 per file: the OpenSSF model-signing v1.0
    /// format, verifiable with `model_signing verify key`.
    ///
    /// Example:
    ///   openssl ecparam -name prime256v1 -genkey -noout -out key.pem
    ///   openssl ec -in key.pem -pubout -out pub.pem
    ///   pickguard sign ./model --private-key key.pem --signature model.sig
    #[command(verbatim_doc_comment)]
    Sign(SignArgs),

    /// Verify a model against a signature; report exactly which files were
    /// added, removed or changed.
    ///
    /// Exit status: 0 valid; 1 invalid signature or files differ; 2 error.
    ///
    /// Example:
    ///   pickguard verify ./model --signature model.sig --public-key pub.pem
    #[command(verbatim_doc_comment)]
    Verify(VerifyArgs),

    /// A PyPI-compatible repository firewall with namespace-confusion protection.
    #[command(subcommand)]
    Firewall(FirewallCommand),

    /// Audit an ML project: where its packages come from, who can reach its
    /// distributed jobs, and how it releases.
    ///
    /// Three checks (all by default; --check selects):
    ///
    /// confusion    dependency confusion. Reads pip.conf files and PIP_*
    ///              variables (--host-config), requirements files (with -r/-c
    ///              includes), uv.toml and [tool.uv], poetry and pdm sources,
    ///              Pipfile, lockfiles (uv.lock, poetry.lock, Pipfile.lock,
    ///              pylock.toml) and pip/uv install commands in Dockerfiles,
    ///              scripts, Makefiles and CI files; predicts which index each
    ///              client would install every private package from. Private
    ///              names come from --private, --claims, a firewall
    ///              (--firewall), and packages pinned to or locked from
    ///              non-public indexes. (AUD0xx)
    /// distributed  torch.distributed exposure: torchrun / torch.distributed.run
    ///              / launch command lines (scripts, Slurm, Makefiles,
    ///              Dockerfiles, CI), init_process_group, TCPStore and init_rpc
    ///              in Python, Kubernetes manifests (Services, hostPort,
    ///              hostNetwork, PyTorchJob), docker run -p and compose ports.
    ///              A TCPStore master listens on every interface whatever
    ///              MASTER_ADDR says: the network is what protects it. (AUD1xx)
    /// release      GitHub Actions workflows and GitLab CI against PyTorch's
    ///              CI/CD principles: ephemeral runners, cold release builds,
    ///              protected environments, no repository secrets for uploads,
    ///              no PR artifacts or PR code in privileged jobs, immutable
    ///              images and tags, no release-page binaries, actions pinned
    ///              by commit. (AUD2xx)
    ///
    /// Every finding has a rule id (pickguard rules AUD203) and a fix. A check
    /// that finds nothing to read says so; it never reports "no exposure" for
    /// what it did not see.
    ///
    /// Exit status: 0 nothing found by the checks that ran; 1 findings (even
    /// when some files could not be read: the warnings and SARIF's
    /// toolExecutionNotifications name them); 2 error, a file that decides
    /// the answer could not be read, or none of the selected checks found
    /// anything to read.
    ///
    /// Example:
    ///   pickguard audit . --private 'acme-*'
    ///   pickguard audit . --check release --format sarif > release.sarif
    ///   pickguard audit . --firewall http://fw:3141 --firewall-token $TOKEN --format sarif
    #[command(verbatim_doc_comment)]
    Audit(AuditArgs),

    /// Watch this host for code running when a model loads (eBPF; root).
    ///
    /// A Python process (python*, or any program mapping libpython) that has
    /// loaded the pickle module and opens a model file (.pth .pt .bin .ckpt
    /// .pkl .joblib .npy .h5 .pth.tar ...) is armed, and so is everything
    /// below it, through any program in between (env, nice, timeout, scripts),
    /// until --window seconds after its latest model open. The first
    /// suspicious exec in an armed tree is an alert: a shell (by name, inode
    /// or ELF fingerprint: renamed copies and hard links too), a network tool,
    /// an interpreter given inline code (perl -e), an anonymous (memfd) or
    /// freshly written executable. Each alert is one JSON line: the program
    /// and its argv as exec saw them, the process, the origin (its exe,
    /// command line, cwd, cgroup/container), the models opened in the window
    /// with size, mtime, SHA-256 and scan verdict, and the verdict. With
    /// --enforce the program never runs. Prints which mechanism is active;
    /// refuses to start when none loads.
    ///
    /// Also (alert only, never stopped): a torch.distributed listener
    /// (TCPStore, gloo, RPC: they run what any peer sends) on an address
    /// other hosts can reach is a `distributed-exposure` alert naming the
    /// process, address, port and whether the address is public. It is
    /// recognised by who called listen(2): torch's own code (libtorch*,
    /// libc10*), not Python's socket module. Note that a TCPStore server
    /// listens on every address (::) whatever host it is given.
    ///
    /// Example:
    ///   sudo pickguard watch --enforce --output /var/log/pickguard-watch.jsonl
    #[command(verbatim_doc_comment)]
    Watch(WatchArgs),

    /// Run a command (typically a model load) in an unprivileged sandbox.
    ///
    /// Inside, only the system directories, the interpreter's installation,
    /// the files named among the arguments and --allow-read/--allow-write
    /// paths exist; writes go to a private tmp (HOME, TMPDIR) discarded at
    /// the end, or to --allow-write paths; nothing but the program itself
    /// may be executed; there is no network; the environment is scrubbed;
    /// the terminal cannot be reached; every process the command leaves
    /// behind is killed. Uses user, mount, PID and network namespaces,
    /// Landlock and seccomp (no root needed); as root the command runs as
    /// uid 65534. Prints what the kernel cannot enforce.
    ///
    /// Exit status: the command's own, or 126 when an action was blocked
    /// (library probes such as ldconfig aside; --no-fail-on-block keeps the
    /// command's status), 124 on --timeout.
    ///
    /// Example:
    ///   pickguard run --report blocked.jsonl -- python load.py ./models/model.pt
    #[command(verbatim_doc_comment)]
    Run(RunArgs),

    /// List the tensors of a checkpoint: name, dtype, shape, bytes, storage.
    ///
    /// Shows the scan verdict too; a file that is not pure tensor data is not
    /// rebuilt (its findings are shown instead, exit status 1).
    Inspect(InspectArgs),

    /// List every rule id pickguard reports (scan and audit), or explain one.
    ///
    /// Example:
    ///   pickguard rules
    ///   pickguard rules PG101
    ///   pickguard rules --format json
    #[command(verbatim_doc_comment)]
    Rules(RulesArgs),

    /// Print a shell completion script.
    ///
    /// Examples:
    ///   pickguard completions bash > ~/.local/share/bash-completion/completions/pickguard
    ///   pickguard completions zsh > "${fpath[1]}/_pickguard"
    ///   pickguard completions fish > ~/.config/fish/completions/pickguard.fish
    #[command(verbatim_doc_comment)]
    Completions(CompletionsArgs),

    /// Print the manual page (roff), or write one page per command to a directory.
    ///
    /// Examples:
    ///   pickguard man | man -l -
    ///   pickguard man --dir /usr/local/share/man/man1
    #[command(verbatim_doc_comment)]
    Man(ManArgs),
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write pickguard.1 and one pickguard-COMMAND.1 per command here
    /// instead of printing pickguard.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum FirewallCommand {
    /// Serve the firewall. Clients use http://HOST:PORT/simple/ as their only index.
    ///
    /// Names served by a private upstream, matched by a claims pattern, or
    /// claimed through the admin API are resolved from private upstreams
    /// only: never asked of a public index, never falling back to one.
    /// Public names pass quarantine (cooldown, cutoff, version outliers).
    /// Without --config: PyPI as the only upstream, data in ./pickguard-data.
    /// Every configuration key is described in docs/firewall.md.
    ///
    /// Example:
    ///   pickguard firewall serve --config firewall.toml
    ///   pip install -i http://127.0.0.1:3141/simple/ acme-internal
    #[command(verbatim_doc_comment)]
    Serve(FirewallServeArgs),
    /// Print the SHA-256 of a token secret read from standard input, for a
    /// `[[token]]` entry of firewall.toml (the secret itself is never stored).
    ///
    /// Example:
    ///   openssl rand -hex 32 | tee ml-team.secret | pickguard firewall hash-token
    ///   # firewall.toml:
    ///   # [[token]]
    ///   # name = "ml-team"
    ///   # sha256 = "<printed hash>"
    ///   # role = "publish"          # admin | publish | read
    ///   # publish = ["acme-ml-*"]
    #[command(verbatim_doc_comment)]
    HashToken,
    /// Known-malicious packages from OSV advisories: import and inspect.
    #[command(subcommand)]
    Feed(FeedCommand),
    /// Copy the firewall's registry into another database: the embedded
    /// SQLite file into PostgreSQL, to run replicas (docs/deploy.md).
    ///
    /// Claims, versions and files seen, admin overrides, advisories and the
    /// shared decision log are copied in one transaction each side, so the
    /// target holds one consistent snapshot. The target must hold no claims,
    /// overrides, advisories or file records yet (nothing is merged or
    /// overwritten). Stop the firewall first: what it records after the
    /// snapshot is not copied. With --files-to, cached and uploaded files
    /// are copied first (a file already there must have the same bytes;
    /// nothing is overwritten), so a failed run can be run again.
    ///
    /// Exit status: 0 copied; 2 the registry was not copied (the reason is
    /// printed; files copied before the failure stay and are skipped next time).
    ///
    /// Example:
    ///   pickguard firewall migrate -c firewall.toml \
    ///       --to postgres://pickguard@db.internal:5432/pickguard --files-to /srv/pickguard-shared
    ///   # then in firewall.toml:
    ///   # [storage]
    ///   # database = "postgres://pickguard@db.internal:5432/pickguard"
    ///   # files_dir = "/srv/pickguard-shared"
    #[command(verbatim_doc_comment)]
    Migrate(FirewallMigrateArgs),
}

#[derive(Args, Debug)]
pub struct FirewallMigrateArgs {
    #[command(flatten)]
    pub state: FeedStateArgs,
    /// The target: postgres://USER@HOST:PORT/DB, or sqlite:PATH.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Also copy files/ and hosted/ into this directory (the new storage.files_dir).
    #[arg(long, value_name = "DIR", conflicts_with = "objects_to")]
    pub files_to: Option<PathBuf>,
    /// Also copy the cached files and hosted uploads into this S3-compatible
    /// store (the new storage.objects, s3://BUCKET[/PREFIX]), each verified
    /// on the way; credentials from AWS_* or --objects-option.
    #[arg(long, value_name = "URL")]
    pub objects_to: Option<String>,
    /// An option of the target store (object_store's S3 names:
    /// endpoint=URL, region=NAME, allow_http=true...); repeatable.
    #[arg(
        long = "objects-option",
        value_name = "KEY=VALUE",
        requires = "objects_to"
    )]
    pub objects_options: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum FeedCommand {
    /// Import OSV advisories into the firewall's state: the `MAL-` records
    /// of the OpenSSF malicious-packages data set (osv/malicious/pypi/), or
    /// any OSV file for the PyPI ecosystem (e.g. OSV's PyPI/all.zip).
    ///
    /// A SOURCE is a .json record (or array of records), a directory (read
    /// recursively: .json and .zip), a .zip archive, or an http(s) URL of
    /// one. A record replaces what is stored under its id only when its
    /// `modified` is later; withdrawn records are kept and not enforced.
    /// A running firewall on the same data directory enforces what was
    /// imported on its next request: every listed file of a covered version
    /// is left out, and a project with nothing left answers 403 with the
    /// advisory id (in the body, in X-PickGuard-Reason and the audit log).
    /// What cannot be read is never read as "not affected": a range with an
    /// unreadable version, or a record that names no versions, covers every
    /// version. For a schedule, set [feed] sources in firewall.toml.
    ///
    /// Exit status: 0 imported; 2 some source or document could not be read
    /// (everything readable was still imported; the errors are printed).
    ///
    /// Example:
    ///   git clone --depth 1 https://github.com/ossf/malicious-packages
    ///   pickguard firewall feed import -c firewall.toml malicious-packages/osv/malicious/pypi
    #[command(verbatim_doc_comment)]
    Import(FeedImportArgs),
    /// Show what the firewall's state holds: counts, or one project's advisories.
    ///
    /// Example:
    ///   pickguard firewall feed status -c firewall.toml
    ///   pickguard firewall feed status -c firewall.toml --project torchtriton
    #[command(verbatim_doc_comment)]
    Status(FeedStatusArgs),
}

#[derive(Args, Debug)]
pub struct FeedStateArgs {
    /// The firewall's configuration (its data_dir and [feed] settings).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override `data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FeedImportArgs {
    #[command(flatten)]
    pub state: FeedStateArgs,
    /// Import only MAL- records (default: [feed] malicious_only, else every record).
    #[arg(long)]
    pub malicious_only: bool,
    /// Files, directories or URLs (default: [feed] sources of the configuration).
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
}

#[derive(Args, Debug)]
pub struct FeedStatusArgs {
    #[command(flatten)]
    pub state: FeedStateArgs,
    /// Show the advisories stored for this project.
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,
}

#[derive(Args, Debug)]
pub struct FirewallServeArgs {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override `listen` (address:port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Override `data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Operational log format on standard error (levels: RUST_LOG, default info).
    #[arg(long, value_enum, default_value = "json", value_name = "FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines.
    Text,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum SharedArg {
    /// Write a tied tensor once; record its other names in the metadata (as Hugging Face does).
    Alias,
    /// Write a copy under each name.
    Copy,
    /// Fail when two names share a tensor.
    Refuse,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Checkpoint file or directory.
    #[arg(value_name = "IN")]
    pub input: PathBuf,

    /// Output file (for a file) or directory (for a directory). Default: next to the input.
    #[arg(long, short = 'o', value_name = "OUT")]
    pub output: Option<PathBuf>,

    /// Convert only this sub-dictionary (dotted path, e.g. `state_dict` or `model.encoder`);
    /// `.` converts everything. Default: `state_dict`/`model`/... when the top level holds no tensors itself.
    #[arg(long, value_name = "PATH")]
    pub key: Option<String>,

    /// Remove this prefix from tensor names (repeatable), e.g. `module.` from DataParallel checkpoints.
    #[arg(long = "strip-prefix", value_name = "PREFIX")]
    pub strip_prefix: Vec<String>,

    /// Tensors that share storage under several names (tied weights).
    #[arg(long, value_enum, default_value_t = SharedArg::Alias)]
    pub shared: SharedArg,

    /// Also write the checkpoint's non-tensor values (epoch, config...) to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub extra_json: Option<PathBuf>,

    /// Replace output files that exist.
    #[arg(long)]
    pub force: bool,

    /// Report format.
    #[arg(long, short = 'f', value_enum, default_value_t = PlainFormat::Text)]
    pub format: PlainFormat,

    #[command(flatten)]
    pub budgets: BudgetArgs,
}

/// Which files make up the model; the same flags as `model_signing`.
#[derive(Args, Debug, Clone)]
pub struct ModelFiles {
    /// Leave these paths (relative to the model, or absolute) out; repeatable.
    #[arg(long = "ignore-paths", alias = "ignore_paths", value_name = "PATH")]
    pub ignore_paths: Vec<PathBuf>,

    /// Hash .git, .gitignore, .gitattributes and .github too (ignored by default).
    #[arg(long = "no-ignore-git-paths", alias = "no_ignore_git_paths")]
    pub no_ignore_git_paths: bool,

    /// Follow symbolic links instead of refusing them.
    #[arg(long = "allow-symlinks", alias = "allow_symlinks")]
    pub allow_symlinks: bool,

    /// (hash, sign) Hash in shards of this many bytes, so one large file uses every core
    /// (method "shards"; model_signing's CLI verifies only unsharded signatures).
    /// verify takes the shard size from the signature.
    #[arg(long = "shard-size", value_name = "BYTES")]
    pub shard_size: Option<u64>,
}

#[derive(Args, Debug)]
pub struct HashArgs {
    /// Model file or directory.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    #[command(flatten)]
    pub files: ModelFiles,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = PlainFormat::Text)]
    pub format: PlainFormat,
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// Model file or directory.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// EC P-256 private key, PEM (SEC1 or PKCS#8).
    #[arg(long = "private-key", alias = "private_key", value_name = "KEY.pem")]
    pub private_key: PathBuf,
    /// Certificate of the signing key (PEM): the bundle then carries the
    /// certificate chain instead of a key hint.
    #[arg(long = "signing-cert", aliases = ["signing_certificate", "signing-certificate"], value_name = "CERT.pem")]
    pub signing_cert: Option<PathBuf>,
    /// Certificates of the chain above the signing certificate (PEM), repeatable.
    #[arg(long = "cert-chain", aliases = ["certificate_chain", "certificate-chain"], value_name = "CHAIN.pem", requires = "signing_cert")]
    pub cert_chain: Vec<PathBuf>,
    /// Where to write the signature bundle.
    #[arg(long, value_name = "FILE", default_value = "model.sig")]
    pub signature: PathBuf,
    #[command(flatten)]
    pub files: ModelFiles,
}

/// Whom to trust: a public key, or certificate chain anchors.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct TrustArgs {
    /// EC P-256 public key, PEM (for key-signed bundles).
    #[arg(long = "public-key", alias = "public_key", value_name = "PUB.pem")]
    pub public_key: Option<PathBuf>,
    /// Trusted certificates (roots, intermediates), PEM, repeatable (for certificate-signed bundles).
    #[arg(long = "cert-chain", aliases = ["certificate_chain", "certificate-chain"], value_name = "CHAIN.pem")]
    pub cert_chain: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Model file or directory.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The signature bundle.
    #[arg(long, value_name = "FILE")]
    pub signature: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Files in the model that the signature does not name are not an error.
    #[arg(long = "ignore-unsigned-files", alias = "ignore_unsigned_files")]
    pub ignore_unsigned_files: bool,
    #[command(flatten)]
    pub files: ModelFiles,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = PlainFormat::Text)]
    pub format: PlainFormat,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Project directory.
    #[arg(value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Private package names or globs (`acme-*`); repeatable.
    #[arg(long, value_name = "NAME")]
    pub private: Vec<String>,
    /// File of private names: one per line, or the firewall's claims JSON.
    #[arg(long, value_name = "FILE")]
    pub claims: Option<PathBuf>,
    /// Read claimed names from a pickguard firewall's admin API.
    #[arg(long, value_name = "URL")]
    pub firewall: Option<String>,
    /// Admin token for --firewall (or PICKGUARD_ADMIN_TOKEN).
    #[arg(long, value_name = "TOKEN", requires = "firewall")]
    pub firewall_token: Option<String>,
    /// Treat this index URL as public too (PyPI, its public mirrors and
    /// vendors' indexes such as download.pytorch.org always are); repeatable.
    #[arg(long, value_name = "URL")]
    pub public_index: Vec<String>,
    /// Declare this index URL private (names pinned to it or locked from it are
    /// private names); repeatable. Also `[tool.pickguard] private-indexes`.
    #[arg(long, value_name = "URL")]
    pub private_index: Vec<String>,
    /// Also read pip's host configuration: /etc/pip.conf, user and site pip.conf, PIP_CONFIG_FILE, PIP_* variables.
    #[arg(long)]
    pub host_config: bool,
    /// Write the private names found, as JSON for the firewall's POST /admin/claims.
    #[arg(long, value_name = "FILE")]
    pub export_claims: Option<PathBuf>,
    /// Ask the network: each private index (--private-index, [tool.pickguard]
    /// private-indexes, --firewall) which names it serves (they become private
    /// names), and the public index whether each private name exists there:
    /// AUD013 when it is taken (with its versions and first upload), AUD014
    /// when it is unclaimed (reserve it). An index that cannot be asked makes
    /// the audit incomplete (exit 2), never "no exposure".
    #[arg(long)]
    pub online: bool,
    /// The public index --online asks (PEP 503/691 simple API).
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://pypi.org/simple/",
        requires = "online"
    )]
    pub online_index: String,
    /// Run only these checks (repeatable, or comma-separated): confusion,
    /// distributed, release. Default: all.
    #[arg(long, value_enum, value_name = "CHECK", value_delimiter = ',')]
    pub check: Vec<AuditCheck>,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuditCheck {
    /// Dependency confusion (AUD0xx).
    Confusion,
    /// torch.distributed exposure (AUD1xx).
    Distributed,
    /// Release pipelines (AUD2xx).
    Release,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Stop the suspicious program before it runs (refused or killed at
    /// exec), not only report it. The programs stay pinned while enforcing:
    /// killing this process does not end enforcement (see --stop).
    #[arg(long)]
    pub enforce: bool,
    /// Rule file (TOML) layered on the default: what counts as a model,
    /// a shell, a network tool, an interpreter with inline code. See --print-rules.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Print the default rule file (documented) and exit.
    #[arg(long)]
    pub print_rules: bool,
    /// Seconds after the latest model open during which the process tree stays armed (overrides the rule file).
    #[arg(long, value_name = "SECONDS")]
    pub window: Option<u64>,
    /// Output format: json (one object per line), text, or ecs (Elastic Common Schema, one object per line).
    #[arg(long, short = 'f', value_enum, default_value_t = WatchFormat::Json)]
    pub format: WatchFormat,
    /// Append events to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also send alerts to syslog (via `logger`).
    #[arg(long)]
    pub syslog: bool,
    /// Shell names (replaces the rule file's list).
    #[arg(long = "shell", value_name = "NAME")]
    pub shells: Vec<String>,
    /// Model file suffixes (replaces the rule file's list).
    #[arg(long = "model-ext", value_name = ".EXT")]
    pub model_exts: Vec<String>,
    /// Let a model-loading process run suspicious programs, by where the load
    /// came from: KEY=VALUE[,KEY=VALUE...], all keys matching. Keys: origin
    /// (glob on the loader's executable), cmdline (substring of its command
    /// line), model (glob on the model's path), cgroup (substring: a
    /// container id, a unit). Allowed execs are reported with --verbose.
    /// Repeatable. Example: --allow origin=/opt/jupyter/bin/python3*,model=/srv/models/**
    #[arg(long = "allow", value_name = "KEY=VALUE,...")]
    pub allow: Vec<String>,
    /// Move each model named in an alert that the scan does not call clean
    /// into DIR, with a JSON manifest beside it (original path, SHA-256, the event).
    #[arg(long, value_name = "DIR")]
    pub quarantine: Option<PathBuf>,
    /// Do not scan the models named in alerts (by default each gets pickguard's scan verdict).
    #[arg(long)]
    pub no_scan: bool,
    /// Do not pin the programs: enforcement ends with this process.
    #[arg(long)]
    pub no_pin: bool,
    /// Stop every sensor on this host (running ones by SIGTERM; programs left
    /// pinned by killed ones are removed, and what they recorded is printed), then exit.
    #[arg(long)]
    pub stop: bool,
    /// Also report pickle-module loads, model opens and allowed execs.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Stop after this many alerts (for scripts and tests).
    #[arg(long, value_name = "N")]
    pub max_alerts: Option<u64>,
    /// Report a torch.distributed listener (`distributed-exposure`) only when
    /// it is reachable on a public address: not loopback, RFC 1918,
    /// CGNAT 100.64/10, link-local or unique-local fc00::/7 (a wildcard
    /// counts when the host has a public address). These alerts never stop
    /// a trainer, with or without --enforce. `distributed_exposure = false`
    /// in a rule file (--rules) turns the check off.
    #[arg(long)]
    pub public_only: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFormat {
    Json,
    Text,
    Ecs,
}

#[derive(Args, Debug)]
pub struct RulesArgs {
    /// A rule id (`PG101-dangerous-global`) or its number (`PG101`, `aud004`).
    pub id: Option<String>,
    /// Output format: text, json, or markdown (what docs/rules.md is made of).
    #[arg(long, short = 'f', value_enum, default_value_t = RulesFormat::Text)]
    pub format: RulesFormat,
}

/// Output of `pickguard rules`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum RulesFormat {
    /// For people: a table, or one rule's description, fix and docs link.
    Text,
    /// One JSON document: a list of rules.
    Json,
    /// docs/rules.md's sections.
    Markdown,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Also allow reading beneath this path; repeatable.
    #[arg(long = "allow-read", value_name = "PATH")]
    pub allow_read: Vec<PathBuf>,
    /// Allow writing beneath this path; repeatable.
    #[arg(long = "allow-write", value_name = "PATH")]
    pub allow_write: Vec<PathBuf>,
    /// Allow network access (no network namespace, sockets allowed).
    #[arg(long)]
    pub allow_network: bool,
    /// Pass an environment variable: NAME (its value here) or NAME=VALUE; repeatable.
    #[arg(long, value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// Kill the command after this many seconds (exit status 124).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// Memory limit, e.g. 8G, 512M: every page the sandbox uses (heap,
    /// tmpfs, page cache) in a cgroup where pickguard can make one (v2, or
    /// v1's memory hierarchy); otherwise the address space (RLIMIT_AS,
    /// which CUDA's reservations can exceed). The banner says which.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Most processes at once: a cgroup's pids limit where one can be made,
    /// otherwise RLIMIT_NPROC (which counts the uid's processes everywhere).
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// Size of the private tmp and /dev/shm (memory), e.g. 4G; default 1G.
    #[arg(long, value_name = "SIZE")]
    pub tmp_size: Option<String>,
    /// Write each blocked action as a JSON line to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Return the command's exit status even when actions were blocked.
    #[arg(long)]
    pub no_fail_on_block: bool,
    /// Do not use namespaces (Landlock and seccomp only; less isolation).
    #[arg(long)]
    pub no_namespaces: bool,
    /// Do not print what is protected at start.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Checkpoint file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Report format.
    #[arg(long, short = 'f', value_enum, default_value_t = PlainFormat::Text)]
    pub format: PlainFormat,
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

/// Output of commands that write no SARIF (hash, verify, convert, inspect,
/// rules): clap refuses `--format sarif` for them instead of printing JSON.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlainFormat {
    /// For people.
    Text,
    /// One JSON document.
    Json,
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

/// Analysis budgets. A file that reaches one is inconclusive (PG301, exit
/// 2), never clean: raise the budget to finish it. Counts take `8000000`,
/// `8M` or `500k`; sizes `4G` or `512M`. The policy file's `[limits]` table
/// sets the same keys with underscores (`max_nodes = "64M"`); flags win.
#[derive(Args, Debug, Default, Clone)]
#[command(next_help_heading = "Analysis budgets (a file past one is inconclusive)")]
pub struct BudgetArgs {
    /// Pickle opcodes executed per stream [default: 50M].
    #[arg(long, value_name = "N")]
    pub max_ops: Option<String>,
    /// Distinct memo entries per stream [default: 12M].
    #[arg(long, value_name = "N")]
    pub max_memo: Option<String>,
    /// Symbolic values built per stream; memory grows with it (about 64
    /// bytes each) [default: 20M].
    #[arg(long, value_name = "N")]
    pub max_nodes: Option<String>,
    /// Values on the pickle stack at once [default: 4M].
    #[arg(long, value_name = "N")]
    pub max_stack: Option<String>,
    /// Pickle streams per file or archive member [default: 1k].
    #[arg(long, value_name = "N")]
    pub max_streams: Option<String>,
    /// Archive members per file, nested archives included [default: 2M].
    #[arg(long, value_name = "N")]
    pub max_members: Option<String>,
    /// Containers nested in containers (zip in tar in gzip...) [default: 4].
    #[arg(long, value_name = "N")]
    pub max_depth: Option<String>,
    /// Bytes one file's compressed streams and archive members may
    /// decompress to, in all [default: 1G].
    #[arg(long, value_name = "SIZE")]
    pub max_decompressed: Option<String>,
}

impl BudgetArgs {
    /// The budgets given on the command line.
    pub fn budgets(&self) -> anyhow::Result<pickguard_scan::Budgets> {
        let mut b = pickguard_scan::Budgets::default();
        for (key, v) in [
            ("max_ops", &self.max_ops),
            ("max_memo", &self.max_memo),
            ("max_nodes", &self.max_nodes),
            ("max_stack", &self.max_stack),
            ("max_streams", &self.max_streams),
            ("max_members", &self.max_members),
            ("max_depth", &self.max_depth),
            ("max_decompressed", &self.max_decompressed),
        ] {
            if let Some(v) = v {
                b.set(key, v)
                    .map_err(|e| anyhow::anyhow!("--{}: {e}", key.replace('_', "-")))?;
            }
        }
        Ok(b)
    }
}

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// Files or directories to scan (directories recursively); `-` reads
    /// standard input; `https://…`, `hf://ORG/REPO[@REV][/FILE]` (Hugging
    /// Face: a file, or every file of the revision; HF_TOKEN for private
    /// repositories, HF_ENDPOINT for a mirror) and
    /// `s3://bucket/key` (or `s3://bucket/prefix/`, every object under it)
    /// read remote files, fetching only what the scan needs (S3 settings
    /// from the AWS_* environment: AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID...).
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
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub timeout: u64,

    /// Most bytes one remote file may make pickguard fetch. Torch
    /// checkpoints, GGUF and safetensors files are read without their
    /// tensor data; other formats are fetched whole. A file that needs more
    /// is an error, not scanned.
    #[arg(long, value_name = "SIZE", default_value = "2G")]
    pub max_fetch: String,

    #[command(flatten)]
    pub budgets: BudgetArgs,

    /// Threads for scanning directories (default: one per core).
    #[arg(long, short = 'j', value_name = "N")]
    pub threads: Option<usize>,

    /// Colour: auto (on a terminal), always, never.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,

    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// Follow symbolic links when walking directories (the default; kept for
    /// compatibility).
    #[arg(long, short = 'L', hide = true)]
    pub follow: bool,

    /// Do not follow symbolic links when walking directories.
    #[arg(long, conflicts_with = "follow")]
    pub no_follow: bool,

    /// Move each file found malicious into DIR (as DIR/<sha256>/<name>,
    /// never over another file) and append a line to DIR/manifest.jsonl
    /// (where it was, its sha256, size and the rules that condemned it).
    /// A symbolic link's target is what is moved (the link is left dangling,
    /// so nothing loads it). A file is removed from its place only once its
    /// copy is durable and hashes the same; what cannot be moved is said on
    /// standard error and left in place.
    #[arg(long, value_name = "DIR")]
    pub quarantine: Option<PathBuf>,

    /// Check this signature (OpenSSF model signing bundle) over the scanned
    /// path before scanning; a mismatch is reported as a finding.
    #[arg(long, value_name = "SIG")]
    pub verify_signature: Option<PathBuf>,

    /// Public key for --verify-signature.
    #[arg(
        long = "public-key",
        alias = "public_key",
        value_name = "PUB.pem",
        requires = "verify_signature"
    )]
    pub public_key: Option<PathBuf>,

    /// Trusted certificates for --verify-signature (certificate-signed bundles), repeatable.
    #[arg(
        long = "cert-chain",
        alias = "certificate_chain",
        value_name = "CHAIN.pem",
        requires = "verify_signature"
    )]
    pub cert_chain: Vec<PathBuf>,
}
