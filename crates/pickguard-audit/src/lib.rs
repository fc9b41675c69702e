/*!
Dependency-confusion audit: read everything that decides where a Python
project's packages come from, model how each client (pip, uv, poetry, pdm,
pipenv) would search its indexes, and report, per private package, whether a
public index could supply it, with a stable rule id and a fix.

The client semantics modelled here were checked against pip 26.3, uv
0.13.9 and poetry 2.5.1 (the live tests compare predictions with what the
real clients install).
*/

mod distributed;
mod notebook;
mod parse;
mod release;
mod yaml;

pub use distributed::{Distributed, Reach, Site};
pub use release::Release;

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use parse::discover;

/// An installer whose behaviour is modelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Client {
    Pip,
    /// `uv pip install` with pip-style flags.
    UvPip,
    /// uv projects: `[tool.uv]`, `uv.toml`.
    Uv,
    Poetry,
    Pdm,
    Pipenv,
}

/// How an index is used by a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// pip `--index-url`, uv default index.
    Primary,
    /// pip `--extra-index-url`, uv pip-style extra index.
    Extra,
    /// pip `--find-links`.
    FindLinks,
    /// uv `[[tool.uv.index]]` (non-default, non-explicit), in order.
    Ordered,
    /// uv `explicit = true`, poetry `explicit`: only for packages pinned to it.
    Explicit,
    /// poetry `supplemental`: only when primaries have nothing.
    Supplemental,
}

/// What pickguard knows about an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trust {
    /// PyPI, a public mirror of it, or an index named public by the user.
    Public,
    /// A vendor's public index (PyTorch, NVIDIA...): anyone can install from
    /// it, and a name there is not a private name.
    Curated,
    /// Declared private: `--private-index`, `[tool.pickguard] private-indexes`,
    /// a package pinned to it, or a lockfile source.
    Private,
    /// Nothing says what it is. Never assumed safe.
    Unknown,
}

impl Trust {
    pub fn is_public(self) -> bool {
        matches!(self, Trust::Public | Trust::Curated)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Index {
    pub name: Option<String>,
    #[serde(serialize_with = "ser_redacted")]
    pub url: String,
    pub role: Role,
    /// Public or curated (anyone can publish or install there).
    pub public: bool,
    pub trust: Trust,
    /// pdm `include_packages` globs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// One place configuration was read from, as a client would combine it.
#[derive(Clone, Debug, Serialize)]
pub struct Context {
    pub client: Client,
    /// File (and line) the context comes from, for people.
    pub origin: String,
    /// The file, relative to the project.
    pub file: String,
    /// Its physical line (1-based), when the context is one command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub indexes: Vec<Index>,
    /// uv `index-strategy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// pdm `respect-source-order`.
    pub source_order: bool,
    /// Packages pinned to a named index or URL (uv sources, poetry `source`, Pipfile `index`).
    pub pins: BTreeMap<String, String>,
    /// Requirements with every line hashed / `--require-hashes`.
    pub hashes_required: bool,
    /// `--no-index`: nothing is fetched from any index.
    pub no_index: bool,
    /// Packages this context installs (normalised), when it names them.
    pub packages: BTreeSet<String>,
}

/// A lockfile entry: where a package was resolved from.
#[derive(Clone, Debug, Serialize)]
pub struct Locked {
    pub file: String,
    /// Line of the package's entry in the lockfile, when found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub package: String,
    pub version: Option<String>,
    /// Index URL, or None for the default (PyPI).
    pub source: Option<String>,
}

/// Everything read from a project.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Inputs {
    pub contexts: Vec<Context>,
    pub locked: Vec<Locked>,
    /// Files read.
    pub files: Vec<String>,
    /// Problems reading them.
    pub warnings: Vec<String>,
    /// Private names from `[tool.pickguard] private`.
    pub declared_private: Vec<String>,
    /// Private indexes: given, and from `[tool.pickguard] private-indexes`.
    #[serde(serialize_with = "ser_redacted_all")]
    pub private_indexes: Vec<String>,
}

/// Options for an audit.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Private names and globs (`acme-*`), from `--private`, a claims file or a firewall.
    pub private: Vec<String>,
    /// Index URLs to treat as public besides PyPI and the known mirrors.
    pub public_indexes: Vec<String>,
    /// Index URLs declared private (`--private-index`, `[tool.pickguard]`).
    pub private_indexes: Vec<String>,
    /// Read pip configuration from the host (global, user, site, `PIP_*`) too.
    pub host_config: bool,
    /// Which checks run; all when empty.
    pub checks: Vec<Check>,
}

/// The end of a warning about a configuration file that could not be read:
/// `Report::unread` lists it, and the audit is then incomplete (exit 2).
pub(crate) const UNREAD: &str = "; its settings were not checked";
/// The end of a warning about an index `--online` could not ask.
pub const ONLINE_UNREAD: &str = "; not checked online";

/// The families of checks `audit` runs; each rule belongs to one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Where packages come from: indexes, lockfiles, install commands (AUD0xx).
    #[default]
    Confusion,
    /// torch.distributed rendezvous and stores reachable by others (AUD1xx).
    Distributed,
    /// Release pipelines against PyTorch's CI/CD principles (AUD2xx).
    Release,
}

impl Check {
    pub const ALL: [Check; 3] = [Check::Confusion, Check::Distributed, Check::Release];
    pub fn name(self) -> &'static str {
        match self {
            Check::Confusion => "dependency confusion",
            Check::Distributed => "distributed exposure",
            Check::Release => "release pipeline",
        }
    }
}

pickguard_findings::rules! {
    command "audit", effect Check;
    MergedIndexes = "AUD001-merged-indexes", Critical,
        "pip pools candidates from every index and installs the highest version: anyone who can publish the private name on a public index wins.",
        fix "Use exactly one index: a firewall (pickguard firewall) that knows which names are private. Remove --extra-index-url/--find-links; if several indexes are unavoidable, hash-pin every requirement (--require-hashes).";
    ExtraIndexFirst = "AUD002-extra-index-first", Critical,
        "uv with pip-style flags searches --extra-index-url before --index-url: the public extra index is asked first and wins.",
        fix "Use --default-index (public) with --index (private), or a [[tool.uv.index]] marked explicit with [tool.uv.sources] pins, or a single firewall index.";
    UnsafeStrategy = "AUD003-unsafe-index-strategy", Critical,
        "uv index-strategy unsafe-best-match/unsafe-first-match merges indexes like pip: a higher public version wins.",
        fix "Remove index-strategy (the default first-index stops at the first index that has the name), and pin private packages with [tool.uv.sources].";
    PrivateFromPublic = "AUD004-private-name-reaches-public", Critical,
        "A private package would be looked up on a public index in this configuration.",
        fix "Pin the package to the private index (uv: [tool.uv.sources] + explicit index; poetry: source = \"private\" with priority explicit; pdm: include_packages; Pipfile: index = \"private\"), or install through a firewall.";
    UnhashedPins = "AUD005-pins-without-hashes", High,
        "Version pins without hashes across several indexes: an attacker can publish the same version on the public index and it may be preferred.",
        fix "Add --hash lines for every requirement (pip-compile --generate-hashes, uv pip compile --generate-hashes) or use one index.";
    LockedFromPublic = "AUD006-lockfile-public-source", Critical,
        "The lockfile records a private package as coming from a public index: the wrong package may already be pinned.",
        fix "Check the locked artifact, fix the source configuration, and re-lock; the locked hash must be the private file's.";
    SecretInUrl = "AUD007-secret-in-index-url", High,
        "Credentials are embedded in an index URL in a committed file.",
        fix "Move credentials to keyring/netrc or environment variables (UV_INDEX_<NAME>_PASSWORD, POETRY_HTTP_BASIC_*), and rotate the exposed secret.";
    PlainHttp = "AUD008-plain-http-index", Medium,
        "An index is fetched over plain HTTP from a non-loopback host: anyone on the path can substitute packages.",
        fix "Use https:// for every index.";
    InstallCommandIndexes = "AUD009-install-command-extra-index", Critical,
        "An install command in a script, Dockerfile or CI file adds an extra index or find-links.",
        fix "Install through a single firewall index, or pin with hashes; pass index options through configuration reviewed once.";
    SupplementalFallthrough = "AUD010-supplemental-fallthrough", Medium,
        "A public supplemental/fallback source is consulted when the private one has no matching version: an unsatisfiable private constraint installs the public package.",
        fix "Make the public source explicit, or pin private packages to the private source (priority explicit + source =).";
    UndeclaredPrivate = "AUD012-undeclared-private-names", High,
        "Several indexes are merged and no private names or private indexes are declared: any requirement that exists on only one index can be taken over by publishing it on another, and pickguard cannot tell which names are at risk.",
        fix "Declare the private names (--private, [tool.pickguard] private, a firewall's claims) or indexes (--private-index, [tool.pickguard] private-indexes), or pin private packages to their index; better, install through one firewall index.";
    TakenPublicly = "AUD013-private-name-taken-publicly", High,
        "A private name exists on the public index (`--online`): a client that merges indexes, or that is pointed at the public index by mistake, installs someone else's project under your name.",
        doc "A private name exists on the public index (`--online`): a client that merges indexes, or that is pointed at the public index by mistake, installs someone else's project under your name.\n\nReported by `pickguard audit --online`, which asks the public index (`--online-index`, default PyPI) for each private name; the message gives the public project's versions and first upload time. An index that cannot be asked makes the audit incomplete (exit 2).",
        fix "Rename the private package, or make sure nothing resolves it from the public index: install through one firewall index that claims the name, or pin it to the private index everywhere; find out who published the public project.";
    UnclaimedPublicly = "AUD014-private-name-unclaimed-publicly", Medium,
        "A private name does not exist on the public index (`--online`): anyone can register it, with any version, as `torchtriton` was.",
        fix "Reserve the name on the public index (an empty placeholder project owned by your organisation), and install through a firewall that claims it.";
    SourceOrderLeak = "AUD011-source-order-leak", Medium,
        "pdm respect-source-order asks sources in turn and falls through when no matching version exists; the private name is also sent to the public index.",
        fix "Bind private packages with include_packages on the private source (and exclude_packages on the public one).";
    DistributedAnyAddress = "AUD101-distributed-any-address", High,
        "A torch.distributed rendezvous or store endpoint is 0.0.0.0 or ::: the unauthenticated store is meant to be reachable on every interface, and anyone who reaches it can join the job and run code in it.",
        doc "A torch.distributed rendezvous or store endpoint is 0.0.0.0 or ::: the unauthenticated store is meant to be reachable on every interface, and anyone who reaches it can join the job and run code in it.\n\nWhat it rests on: a `TCPStore` master (what torchrun's c10d rendezvous and `env://` start on the master) listens on `[::]` — every interface — whatever host it is given (measured with torch 2.15, libuv and legacy backends). An endpoint of `0.0.0.0` says the job expects to be reached from anywhere.",
        fix "Use the master's private address for MASTER_ADDR/--rdzv-endpoint/init_method, and keep the port (29500, 29400) closed to everything but the job's nodes: a network policy, a security group or a host firewall. The store listens on every interface whatever address is given, so the network is what protects it.",
        effect Check::Distributed;
    DistributedPublicAddress = "AUD102-distributed-public-address", Critical,
        "A torch.distributed rendezvous or store endpoint is a public address: c10d, RPC and TCPStore execute what anyone who connects sends them.",
        fix "Run distributed jobs on a private network: use the master's private address, and block the rendezvous port from the internet (security group, firewall).",
        effect Check::Distributed;
    DistributedPortPublished = "AUD103-distributed-port-published", High,
        "The rendezvous/store port is published outside the cluster or host: a Kubernetes Service of type LoadBalancer or NodePort, a hostPort, `docker run -p`, or a compose `ports:` entry on every interface.",
        fix "Do not publish the port: use a headless ClusterIP Service (what the PyTorchJob operator creates), a NetworkPolicy that admits only the job's pods, and `-p 127.0.0.1:29500:29500` or no -p at all for containers.",
        effect Check::Distributed;
    DistributedHostNetwork = "AUD104-distributed-host-network", Medium,
        "A workload running torch.distributed uses the host's network (hostNetwork: true, network_mode: host): its store listens on every interface of the node, outside the cluster's network policies.",
        fix "Set hostNetwork: false (and the pod network for RDMA with a device plugin), or firewall the node's rendezvous ports.",
        effect Check::Distributed;
    StoreListensEverywhere = "AUD105-tcpstore-listens-everywhere", Medium,
        "A TCPStore master is created without master_listen_fd: it listens on every interface of the host ([::]) whatever host name it is given.",
        doc "A TCPStore master is created without master_listen_fd: it listens on every interface of the host ([::]) whatever host name it is given.\n\n`TCPStore(\"127.0.0.1\", port, n, True)` still listens on every interface; only `master_listen_fd` narrows it (the live audit test checks this with real torch).",
        fix "Bind the socket yourself and pass it: s = socket.create_server((\"127.0.0.1\", port)); TCPStore(host, port, world_size, True, master_listen_fd=s.fileno()) (or the private interface the workers use), and firewall the port.",
        effect Check::Distributed;
    ReleaseSelfHostedRunner = "AUD201-release-self-hosted-runner", High,
        "A job that builds or uploads a release runs on a self-hosted runner not marked ephemeral: a runner reused across jobs (and pull requests) carries one job's tampering into the release.",
        doc "A job that builds or uploads a release runs on a self-hosted runner not marked ephemeral: a runner reused across jobs (and pull requests) carries one job's tampering into the release.\n\nA label containing `ephemeral` marks a runner as ephemeral; GitHub-hosted labels (`ubuntu-*`, `windows-*`, `macos-*`) are ephemeral by construction. `runs-on: ${{ matrix.X }}` is resolved from the job's matrix.",
        fix "Build and upload releases on GitHub-hosted runners or ephemeral self-hosted ones (actions-runner-controller scale sets, --ephemeral) with a label containing \"ephemeral\"; never on runners that also run pull requests.",
        effect Check::Release;
    ReleaseSharedCache = "AUD202-release-shared-cache", High,
        "A release job restores a shared build cache (actions/cache, sccache, ccache, a setup action's cache): release builds must start cold, or a cache poisoned by another branch or pull request is shipped.",
        fix "Remove caching from the jobs that build what is published (keep it in test jobs), or key release caches to the release ref only and never restore them from other refs.",
        effect Check::Release;
    UploadWithoutEnvironment = "AUD203-upload-without-environment", High,
        "An upload job has no deployment environment: any branch (and anyone who can push one) can run it and publish.",
        fix "Put the upload job in an environment (environment: release) restricted to protected branches or tags, with required reviewers, and keep the upload credential in that environment.",
        effect Check::Release;
    UploadRepositorySecret = "AUD204-upload-credential-in-repository-secrets", High,
        "An upload job publishes with a credential from repository or organisation secrets: every workflow on every branch can read it.",
        fix "Use trusted publishing (PyPI OIDC: permissions id-token: write and pypa/gh-action-pypi-publish without a password), or move the credential to the job's protected environment.",
        effect Check::Release;
    PrTargetCheckout = "AUD205-pr-target-checkout", Critical,
        "A pull_request_target or workflow_run job checks out the pull request's code: it runs with the base repository's token and secrets, so the PR's author runs code with them.",
        fix "Use the pull_request trigger for anything that runs PR code; if a privileged follow-up is needed, pass data (not code) through artifacts and never check out or execute the PR's head in the privileged job.",
        effect Check::Release;
    ReleaseConsumesForeignArtifact = "AUD206-release-consumes-foreign-artifact", High,
        "A release job downloads artifacts made by another workflow run: a pull request's CI artifact can be published or run where secrets live.",
        fix "Build what is released in the release workflow itself, from the tagged commit; never publish artifacts of other runs (dawidd6/action-download-artifact, download-artifact with run-id, gh run download).",
        effect Check::Release;
    ReleaseMutableTag = "AUD207-release-mutable-tag", Medium,
        "A release pushes a container image under a tag that moves (latest, a branch name, no tag): what the tag names is not what was reviewed.",
        fix "Push immutable tags (the version, the commit SHA) and let users pin by digest; if a moving tag is wanted for convenience, publish it from the immutable one in a separate reviewed step.",
        effect Check::Release;
    ReleaseMutableImage = "AUD208-release-mutable-base-image", Medium,
        "A release build starts from an image pulled by a tag that can be moved (FROM image:tag, a job container): the build is not reproducible and follows whoever controls the tag.",
        fix "Pin base images and job containers by digest (image:tag@sha256:...), updated by a bot (Dependabot, Renovate) through reviewed PRs.",
        effect Check::Release;
    ReleaseBinaryAsset = "AUD209-release-binary-asset", Medium,
        "Binaries are attached to a GitHub release: release assets can be replaced by anyone with write access to the repository, unseen by the people who download them.",
        fix "Publish binaries to an index or registry with immutable versions (PyPI, a container registry) and signatures/attestations; if release assets are needed, publish their SHA-256 and a signature (pickguard sign, actions/attest-build-provenance) alongside.",
        effect Check::Release;
    ReleaseUnpinnedAction = "AUD210-release-unpinned-action", High,
        "A release workflow uses a third-party action (or docker:// image) by tag or branch: whoever controls the tag controls the release job and its credentials.",
        doc "A release workflow uses a third-party action (or docker:// image) by tag or branch: whoever controls the tag controls the release job and its credentials.\n\nOnly release workflows (those with an upload job) are checked, and GitHub's own `actions/*` and `github/*` are left to zizmor's `unpinned-uses`, which checks every workflow.",
        fix "Pin every third-party action in release workflows by full commit SHA (uses: owner/repo@<40 hex> # v1.2.3), updated through reviewed PRs.",
        effect Check::Release;
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub rule: Rule,
    pub severity: pickguard_findings::Severity,
    /// Which check reported it.
    pub check: Check,
    /// The installer whose behaviour decides it (dependency-confusion findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<Client>,
    pub origin: String,
    /// The file the finding is in (relative to the project) and its line.
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    pub fix: &'static str,
}

/// Where a private package resolves from, per context.
#[derive(Clone, Debug, Serialize)]
pub struct Prediction {
    pub package: String,
    pub client: Client,
    pub origin: String,
    /// `private`, `public`, or `none` (not installable).
    pub resolves_from: &'static str,
    /// Whether a public index is even asked for the name (a leak).
    pub public_queried: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// The checks that ran.
    pub checks: Vec<Check>,
    /// Launch sites of torch.distributed found (the distributed check).
    pub distributed: Distributed,
    /// Release jobs found (the release check).
    pub release: Release,
    pub predictions: Vec<Prediction>,
    pub private_names: Vec<String>,
    pub inputs: Inputs,
}

impl Report {
    pub fn exposed(&self) -> bool {
        !self.findings.is_empty()
    }
    /// Configuration files the confusion check could not read, and indexes
    /// `--online` could not ask: its answer is incomplete by that many.
    pub fn confusion_unread(&self) -> usize {
        self.inputs
            .warnings
            .iter()
            .filter(|w| w.ends_with(UNREAD) || w.ends_with(ONLINE_UNREAD))
            .count()
    }

    /// Files a check should have read and could not: its answer is incomplete.
    pub fn unread(&self) -> Vec<&str> {
        // Configuration files that could not be parsed (their warning says so).
        let config = self
            .inputs
            .warnings
            .iter()
            .filter(|w| w.ends_with(UNREAD) || w.ends_with(ONLINE_UNREAD))
            .filter_map(|w| w.split(": ").next());
        self.distributed
            .unread
            .iter()
            .chain(&self.release.unread)
            .map(String::as_str)
            .chain(config)
            .collect()
    }
    /// Whether a check found anything it applies to.
    pub fn checked(&self, c: Check) -> bool {
        self.checks.contains(&c)
            && match c {
                Check::Confusion => {
                    !self.inputs.contexts.is_empty() || !self.inputs.locked.is_empty()
                }
                Check::Distributed => !self.distributed.sites.is_empty(),
                Check::Release => self.release.workflows_read > 0,
            }
    }
}

/// Host of a URL, lower case, without credentials or port.
pub fn host(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or("");
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    let h = if hostport.starts_with('[') {
        hostport
            .split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        hostport.split(':').next().unwrap_or("").to_owned()
    };
    h.to_lowercase()
}

/// PyPI and public mirrors of it: anyone can publish any unclaimed name.
const PUBLIC_HOSTS: &[&str] = &[
    "pypi.org",
    "pypi.python.org",
    "files.pythonhosted.org",
    "test.pypi.org",
    "mirrors.aliyun.com",
    "pypi.tuna.tsinghua.edu.cn",
    "mirrors.tuna.tsinghua.edu.cn",
    "pypi.mirrors.ustc.edu.cn",
    "mirrors.ustc.edu.cn",
    "mirrors.cloud.tencent.com",
    "mirrors.tencent.com",
    "repo.huaweicloud.com",
    "mirrors.huaweicloud.com",
    "pypi.doubanio.com",
    "pypi.douban.com",
    "mirror.baidu.com",
    "mirrors.bfsu.edu.cn",
    "mirror.sjtu.edu.cn",
    "mirrors.sustech.edu.cn",
    "mirrors.163.com",
    "pypi.kakao.com",
    "mirror.kakao.com",
];

/// Vendors' public wheel indexes: public, curated by the vendor.
const CURATED_HOSTS: &[&str] = &[
    "download.pytorch.org",
    "pypi.nvidia.com",
    "pypi.ngc.nvidia.com",
    "developer.download.nvidia.com",
    "data.pyg.org",
    "download.openmmlab.com",
    "storage.googleapis.com",
    "dl.fbaipublicfiles.com",
];

fn url_under(url: &str, prefix: &str) -> bool {
    let u = url.trim_end_matches('/').to_ascii_lowercase();
    let p = prefix.trim_end_matches('/').to_ascii_lowercase();
    u == p || u.starts_with(&format!("{p}/"))
}

/// What is known about an index URL, before pins and lockfiles are read.
pub fn trust_of(url: &str, opts: &Options) -> Trust {
    if opts.private_indexes.iter().any(|p| url_under(url, p)) {
        return Trust::Private;
    }
    if opts.public_indexes.iter().any(|p| url_under(url, p)) {
        return Trust::Public;
    }
    let h = host(url);
    if PUBLIC_HOSTS.contains(&h.as_str()) {
        Trust::Public
    } else if CURATED_HOSTS.contains(&h.as_str()) {
        Trust::Curated
    } else {
        Trust::Unknown
    }
}

/// True for PyPI, its public mirrors, vendors' public indexes and indexes
/// named public by the user.
pub fn is_public(url: &str, extra_public: &[String]) -> bool {
    trust_of(
        url,
        &Options {
            public_indexes: extra_public.to_vec(),
            ..Default::default()
        },
    )
    .is_public()
}

struct Private {
    globs: globset::GlobSet,
    names: BTreeSet<String>,
}

impl Private {
    fn new(list: &[String]) -> Private {
        let mut b = globset::GlobSetBuilder::new();
        let mut names = BTreeSet::new();
        for p in list {
            let n = pickguard_index::normalize(p);
            if n.contains('*') || n.contains('?') || n.contains('[') {
                if let Ok(g) = globset::Glob::new(&n) {
                    b.add(g);
                }
            } else {
                names.insert(n);
            }
        }
        Private {
            globs: b.build().unwrap_or_else(|_| globset::GlobSet::empty()),
            names,
        }
    }
    fn contains(&self, n: &str) -> bool {
        self.names.contains(n) || self.globs.is_match(n)
    }
}

fn finding(rule: Rule, ctx: &Context, message: String, packages: Vec<String>) -> Finding {
    Finding {
        rule,
        severity: rule.severity(),
        check: Check::Confusion,
        client: Some(ctx.client),
        origin: ctx.origin.clone(),
        file: ctx.file.clone(),
        line: ctx.line,
        message,
        packages,
        fix: rule.fix().unwrap_or_default(),
    }
}

/// Where `pkg` comes from in `ctx`: (resolves_from, public queried, rule that explains exposure).
fn predict(ctx: &Context, pkg: &str) -> (&'static str, bool, Option<Rule>) {
    if ctx.no_index && ctx.indexes.iter().all(|i| i.role != Role::FindLinks) {
        return ("none", false, None);
    }
    let by_name = |n: &str| {
        ctx.indexes
            .iter()
            .find(|i| i.name.as_deref() == Some(n) || i.url == n)
    };
    if let Some(pin) = ctx.pins.get(pkg) {
        return match by_name(pin) {
            Some(i) if i.public => ("public", true, Some(Rule::PrivateFromPublic)),
            Some(_) => ("private", false, None),
            None if is_public(pin, &[]) => ("public", true, Some(Rule::PrivateFromPublic)),
            None => ("private", false, None),
        };
    }
    let usable: Vec<&Index> = ctx
        .indexes
        .iter()
        .filter(|i| i.role != Role::Explicit)
        .filter(|i| i.exclude.iter().all(|g| !glob_match(g, pkg)))
        .collect();
    // pdm include_packages binds a name to one source.
    if let Some(i) = usable
        .iter()
        .find(|i| i.include.iter().any(|g| glob_match(g, pkg)))
    {
        return if i.public {
            ("public", true, Some(Rule::PrivateFromPublic))
        } else {
            ("private", false, None)
        };
    }
    let usable: Vec<&Index> = usable
        .into_iter()
        .filter(|i| i.include.is_empty())
        .collect();
    let any_public = usable.iter().any(|i| i.public);
    let any_private = usable.iter().any(|i| !i.public);
    match ctx.client {
        Client::Pip => {
            if !any_public {
                ("private", false, None)
            } else if !any_private {
                ("public", true, Some(Rule::PrivateFromPublic))
            } else if ctx.hashes_required {
                ("private", true, None)
            } else {
                ("public", true, Some(Rule::MergedIndexes))
            }
        }
        Client::UvPip | Client::Uv => {
            let strategy = ctx.strategy.as_deref().unwrap_or("first-index");
            if strategy != "first-index" && any_public && any_private {
                return ("public", true, Some(Rule::UnsafeStrategy));
            }
            // Search order: extra/ordered indexes first, the default (primary) last.
            let mut order: Vec<&&Index> = usable
                .iter()
                .filter(|i| matches!(i.role, Role::Extra | Role::Ordered))
                .collect();
            order.extend(
                usable
                    .iter()
                    .filter(|i| matches!(i.role, Role::Primary | Role::FindLinks)),
            );
            match order.first() {
                Some(first) if first.public => {
                    let rule = if ctx.client == Client::UvPip && first.role == Role::Extra {
                        Rule::ExtraIndexFirst
                    } else {
                        Rule::PrivateFromPublic
                    };
                    ("public", true, Some(rule))
                }
                Some(_) => ("private", false, None),
                None => ("none", false, None),
            }
        }
        Client::Poetry => {
            let primaries: Vec<&&Index> =
                usable.iter().filter(|i| i.role == Role::Primary).collect();
            let supplemental: Vec<&&Index> = usable
                .iter()
                .filter(|i| i.role == Role::Supplemental)
                .collect();
            let prim_public = primaries.iter().any(|i| i.public);
            let prim_private = primaries.iter().any(|i| !i.public);
            if prim_private && !prim_public {
                if supplemental.iter().any(|i| i.public) {
                    ("private", false, Some(Rule::SupplementalFallthrough))
                } else {
                    ("private", false, None)
                }
            } else if prim_public {
                ("public", true, Some(Rule::PrivateFromPublic))
            } else {
                ("none", false, None)
            }
        }
        Client::Pdm => {
            if !any_public {
                ("private", false, None)
            } else if ctx.source_order {
                // Waterfall: the first source with a match wins; later ones still asked on misses.
                match usable.first() {
                    Some(i) if !i.public => ("private", true, Some(Rule::SourceOrderLeak)),
                    _ => ("public", true, Some(Rule::PrivateFromPublic)),
                }
            } else if any_private {
                ("public", true, Some(Rule::MergedIndexes))
            } else {
                ("public", true, Some(Rule::PrivateFromPublic))
            }
        }
        Client::Pipenv => match usable.first() {
            Some(i) if i.public => ("public", true, Some(Rule::PrivateFromPublic)),
            Some(_) => ("private", false, None),
            None => ("none", false, None),
        },
    }
}

fn glob_match(g: &str, name: &str) -> bool {
    globset::Glob::new(&pickguard_index::normalize(g))
        .map(|g| g.compile_matcher().is_match(name))
        .unwrap_or(false)
}

/// The indexes a client may take one unpinned name from, when more than one
/// is consulted in a way that lets another index win; empty when the client
/// effectively uses one index.
fn merged_indexes(c: &Context) -> Vec<&Index> {
    let usable: Vec<&Index> = c
        .indexes
        .iter()
        .filter(|i| i.role != Role::Explicit && i.include.is_empty())
        .collect();
    if c.no_index || usable.len() < 2 {
        return vec![];
    }
    let any_public = usable.iter().any(|i| i.public);
    match c.client {
        Client::Pip if c.hashes_required => vec![],
        Client::Pip | Client::Pdm => usable,
        Client::Uv | Client::UvPip => {
            if c.strategy.as_deref().unwrap_or("first-index") != "first-index" {
                return usable;
            }
            // first-index: the first index searched decides; a public one
            // first takes any name away from the others.
            let first = usable
                .iter()
                .find(|i| matches!(i.role, Role::Extra | Role::Ordered))
                .or_else(|| usable.first());
            if first.is_some_and(|i| i.public) && usable.iter().any(|i| !i.public) {
                usable
            } else {
                vec![]
            }
        }
        Client::Poetry => {
            let primaries = usable.iter().filter(|i| i.role == Role::Primary).count();
            if primaries >= 2 || any_public {
                usable
            } else {
                vec![]
            }
        }
        Client::Pipenv => {
            if usable.first().is_some_and(|i| i.public) {
                usable
            } else {
                vec![]
            }
        }
    }
}

/// Mark indexes that something declares private: pinned packages point at
/// them, or a lockfile records them as a package's source.
fn mark_declared(inputs: &mut Inputs, opts: &Options) {
    let locked: Vec<String> = inputs
        .locked
        .iter()
        .filter_map(|l| l.source.clone())
        .filter(|s| !trust_of(s, opts).is_public())
        .collect();
    for c in &mut inputs.contexts {
        let pinned: BTreeSet<String> = c.pins.values().cloned().collect();
        for i in &mut c.indexes {
            let by_pin = pinned
                .iter()
                .any(|p| i.name.as_deref() == Some(p.as_str()) || i.url == *p);
            let by_lock = locked
                .iter()
                .any(|l| url_under(&i.url, l) || url_under(l, &i.url));
            if (by_pin || by_lock) && !i.public {
                i.trust = Trust::Private;
            }
        }
    }
}

/// Audit a project directory with the checks `opts.checks` selects (all by default).
pub fn audit(dir: &Path, opts: &Options) -> Report {
    let checks: Vec<Check> = if opts.checks.is_empty() {
        Check::ALL.to_vec()
    } else {
        Check::ALL
            .iter()
            .copied()
            .filter(|c| opts.checks.contains(c))
            .collect()
    };
    let mut report = if checks.contains(&Check::Confusion) {
        confusion(dir, opts)
    } else {
        Report {
            findings: vec![],
            checks: vec![],
            distributed: Distributed::default(),
            release: Release::default(),
            predictions: vec![],
            private_names: vec![],
            inputs: Inputs::default(),
        }
    };
    report.checks = checks.clone();
    let files = parse::project_files(dir);
    let mut hits = Vec::new();
    if checks.contains(&Check::Distributed) {
        let (d, h) = distributed::check(&files, &mut report.inputs.warnings);
        report.distributed = d;
        hits.extend(h);
    }
    if checks.contains(&Check::Release) {
        let (r, h) = release::check(&files, dir, &mut report.inputs.warnings);
        report.release = r;
        hits.extend(h);
    }
    hits.sort_by(|a, b| (&a.file, a.line, a.rule).cmp(&(&b.file, b.line, b.rule)));
    hits.dedup_by(|a, b| {
        a.file == b.file && a.line == b.line && a.rule == b.rule && a.message == b.message
    });
    for h in hits {
        report.findings.push(Finding {
            rule: h.rule,
            severity: h.rule.severity(),
            check: h.rule.effect(),
            client: None,
            origin: format!("{}:{}", h.file, h.line),
            file: h.file,
            line: Some(h.line),
            message: h.message,
            packages: vec![],
            fix: h.rule.fix().unwrap_or_default(),
        });
    }
    report
}

fn confusion(dir: &Path, opts: &Options) -> Report {
    let mut warnings = Vec::new();
    let (settings, declared) = parse::project_settings(dir, opts, &mut warnings);
    let opts = &settings;
    let mut inputs = discover(dir, opts);
    inputs.warnings.extend(warnings);
    inputs.declared_private = declared;
    inputs.private_indexes = opts.private_indexes.clone();
    mark_declared(&mut inputs, opts);
    let mut private_list = opts.private.clone();
    private_list.extend(inputs.declared_private.iter().cloned());
    // Names pinned to a non-public index, or locked from one, are private too.
    for c in &inputs.contexts {
        for (pkg, idx) in &c.pins {
            let public = c
                .indexes
                .iter()
                .find(|i| i.name.as_deref() == Some(idx.as_str()) || &i.url == idx)
                .map(|i| i.public)
                .unwrap_or_else(|| is_public(idx, &opts.public_indexes));
            if !public {
                private_list.push(pkg.clone());
            }
        }
    }
    for l in &inputs.locked {
        if let Some(s) = &l.source
            && !is_public(s, &opts.public_indexes)
        {
            private_list.push(l.package.clone());
        }
    }
    let private = Private::new(&private_list);
    let nothing_declared = private.names.is_empty() && private.globs.is_empty();
    let mut findings = Vec::new();
    let mut predictions = Vec::new();
    let mut private_names: BTreeSet<String> = private.names.clone();
    for c in &inputs.contexts {
        // Configuration-level findings.
        for i in &c.indexes {
            if i.url.contains('@')
                && i.url
                    .split("://")
                    .nth(1)
                    .is_some_and(|r| r.split('/').next().unwrap_or("").contains('@'))
            {
                let shown = redact(&i.url);
                findings.push(finding(
                    Rule::SecretInUrl,
                    c,
                    format!("index URL {shown} carries credentials"),
                    vec![],
                ));
            }
            if i.url.starts_with("http://") && !is_loopback(&i.url) {
                findings.push(finding(
                    Rule::PlainHttp,
                    c,
                    format!("index {} is plain HTTP", redact(&i.url)),
                    vec![],
                ));
            }
        }
        // Private names the context installs: its own requirements, and the
        // transitive ones a lockfile next to it records (torchtriton was a
        // transitive dependency: pinning the top-level package does not protect).
        let dir_of = |o: &str| {
            let file = o.split(" (").next().unwrap_or(o);
            let file = file.split(':').next().unwrap_or(file);
            Path::new(file)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        };
        let here = dir_of(&c.origin);
        let candidates: BTreeSet<String> = c
            .packages
            .iter()
            .cloned()
            .chain(
                inputs
                    .locked
                    .iter()
                    .filter(|l| dir_of(&l.file) == here)
                    .map(|l| pickguard_index::normalize(&l.package)),
            )
            .filter(|p| private.contains(p))
            .collect();
        private_names.extend(candidates.iter().cloned());
        // Without named packages, judge the configuration for the known private names.
        let names: BTreeSet<String> = if c.packages.is_empty() {
            private.names.clone()
        } else {
            candidates
        };
        let mut exposed: BTreeMap<Rule, Vec<String>> = BTreeMap::new();
        for p in &names {
            let (from, queried, rule) = predict(c, p);
            predictions.push(Prediction {
                package: p.clone(),
                client: c.client,
                origin: c.origin.clone(),
                resolves_from: from,
                public_queried: queried,
            });
            if let Some(r) = rule {
                exposed.entry(r).or_default().push(p.clone());
            }
        }
        for (rule, pkgs) in exposed {
            let msg = match rule {
                Rule::MergedIndexes => format!(
                    "{} is installed from several indexes merged by version, a public one among them",
                    pkgs.join(", ")
                ),
                Rule::ExtraIndexFirst => format!(
                    "{} is looked up on the public --extra-index-url before the private --index-url",
                    pkgs.join(", ")
                ),
                Rule::UnsafeStrategy => format!(
                    "{} is resolved with index-strategy {}",
                    pkgs.join(", "),
                    c.strategy.as_deref().unwrap_or("")
                ),
                Rule::SupplementalFallthrough => format!(
                    "{} falls through to a public supplemental source when no private version matches",
                    pkgs.join(", ")
                ),
                Rule::SourceOrderLeak => format!(
                    "{} is also asked of later (public) sources",
                    pkgs.join(", ")
                ),
                _ => format!("{} can be resolved from a public index", pkgs.join(", ")),
            };
            findings.push(finding(rule, c, msg, pkgs));
        }
        // Fail closed: indexes merged, and nothing says which names are private.
        let merged = merged_indexes(c);
        if nothing_declared
            && !merged.is_empty()
            && !merged.iter().all(|i| i.public)
            && !merged.iter().all(|i| i.trust == Trust::Private)
        {
            let pkgs: Vec<String> = c.packages.iter().cloned().collect();
            let shown: Vec<String> = merged
                .iter()
                .map(|i| format!("{} ({})", redact(&i.url), trust_word(i.trust)))
                .collect();
            let reqs = match pkgs.len() {
                0 => "any package it installs".to_string(),
                1 => format!("its requirement {}", pkgs[0]),
                n if n <= 8 => format!("any of its {n} requirements ({})", pkgs.join(", ")),
                n => format!(
                    "any of its {n} requirements ({}, ...)",
                    pkgs[..8].join(", ")
                ),
            };
            findings.push(finding(
                Rule::UndeclaredPrivate,
                c,
                format!(
                    "{} merges {} indexes: {}. No private names are declared, so {reqs} can come from whichever index offers the best version: declare the private ones",
                    client_word(c.client),
                    merged.len(),
                    shown.join(", ")
                ),
                pkgs,
            ));
        }
        // Hash-less pins across several indexes.
        let multi = c
            .indexes
            .iter()
            .filter(|i| i.role != Role::Explicit)
            .count()
            > 1;
        if c.client == Client::Pip
            && multi
            && !nothing_declared
            && !c.hashes_required
            && c.indexes.iter().any(|i| i.public)
            && !c.indexes.iter().all(|i| i.public)
            && c.origin.contains("requirements")
            && names.is_empty()
        {
            findings.push(finding(
                Rule::UnhashedPins,
                c,
                "requirements are pinned without hashes while several indexes are configured"
                    .into(),
                vec![],
            ));
        }
        if c.origin.contains("(command)")
            && c.indexes
                .iter()
                .any(|i| matches!(i.role, Role::Extra | Role::FindLinks))
            && !findings.iter().any(|f| {
                f.origin == c.origin && f.rule != Rule::PlainHttp && f.rule != Rule::SecretInUrl
            })
        {
            findings.push(finding(
                Rule::InstallCommandIndexes,
                c,
                format!(
                    "install command uses extra indexes: {}",
                    c.indexes
                        .iter()
                        .map(|i| redact(&i.url))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                vec![],
            ));
        }
    }
    for l in &inputs.locked {
        let n = pickguard_index::normalize(&l.package);
        if private.contains(&n) {
            private_names.insert(n.clone());
            let src = l.source.as_deref().unwrap_or("https://pypi.org/simple");
            if is_public(src, &opts.public_indexes) {
                findings.push(Finding {
                    rule: Rule::LockedFromPublic,
                    severity: Rule::LockedFromPublic.severity(),
                    check: Check::Confusion,
                    client: Some(if l.file.ends_with("uv.lock") {
                        Client::Uv
                    } else if l.file.ends_with("poetry.lock") {
                        Client::Poetry
                    } else if l.file.contains("Pipfile") {
                        Client::Pipenv
                    } else {
                        Client::Pip
                    }),
                    origin: l.file.clone(),
                    file: l.file.clone(),
                    line: l.line,
                    message: format!(
                        "{} {} is locked from {}",
                        n,
                        l.version.as_deref().unwrap_or(""),
                        redact(src)
                    ),
                    packages: vec![n],
                    fix: Rule::LockedFromPublic.fix().unwrap_or_default(),
                });
            }
        }
    }
    Report {
        findings,
        checks: vec![Check::Confusion],
        distributed: Distributed::default(),
        release: Release::default(),
        predictions,
        private_names: private_names.into_iter().collect(),
        inputs,
    }
}

fn trust_word(t: Trust) -> &'static str {
    match t {
        Trust::Public => "public",
        Trust::Curated => "public, vendor-curated",
        Trust::Private => "declared private",
        Trust::Unknown => "not declared",
    }
}

fn client_word(c: Client) -> &'static str {
    match c {
        Client::Pip => "pip",
        Client::UvPip => "uv pip",
        Client::Uv => "uv",
        Client::Poetry => "poetry",
        Client::Pdm => "pdm",
        Client::Pipenv => "pipenv",
    }
}

fn is_loopback(url: &str) -> bool {
    let h = host(url);
    h.starts_with("127.") || h == "localhost" || h == "[::1]"
}

/// Hide the password of `user:pass@host` URLs.
pub fn redact(url: &str) -> String {
    // The whole user-info goes: a token is often the user name
    // (https://TOKEN@host), and a password may hold a raw `@`, so the
    // authority is cut at its last `@`.
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{path}"),
        None => url.to_owned(),
    }
}

/// Serialize an index URL without its credentials.
fn ser_redacted<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact(url))
}

fn ser_redacted_all<S: serde::Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(urls.len()))?;
    for u in urls {
        seq.serialize_element(&redact(u))?;
    }
    seq.end()
}

/// Write the private names for `pickguard firewall` (`POST /admin/claims`).
/// What the public index says of a private name (`audit --online`).
#[derive(Clone, Debug)]
pub enum PublicState {
    /// 404: nobody holds it.
    Absent,
    /// A project page: its versions and the earliest upload time listed.
    Present {
        versions: Vec<String>,
        first_upload: Option<String>,
    },
}

/// Findings from asking the public index `index` about the private names:
/// AUD013 for each it has, AUD014 for each it does not.
pub fn add_online(report: &mut Report, index: &str, answers: &[(String, PublicState)]) {
    for (name, state) in answers {
        let (rule, message) = match state {
            PublicState::Absent => (
                Rule::UnclaimedPublicly,
                format!(
                    "{name} is private and unclaimed on {}: anyone can publish it there",
                    redact(index)
                ),
            ),
            PublicState::Present {
                versions,
                first_upload,
            } => {
                let mut v = versions.clone();
                v.truncate(5);
                (
                    Rule::TakenPublicly,
                    format!(
                        "{name} is private, and {} has a project of that name ({} version(s){}{})",
                        redact(index),
                        versions.len(),
                        if v.is_empty() {
                            String::new()
                        } else {
                            format!(
                                ": {}{}",
                                v.join(", "),
                                if versions.len() > 5 { ", ..." } else { "" }
                            )
                        },
                        first_upload
                            .as_deref()
                            .map(|t| format!("; first uploaded {t}"))
                            .unwrap_or_default()
                    ),
                )
            }
        };
        report.findings.push(Finding {
            rule,
            severity: rule.severity(),
            check: Check::Confusion,
            client: None,
            origin: redact(index),
            file: String::new(),
            line: None,
            message,
            packages: vec![name.clone()],
            fix: rule.fix().unwrap_or_default(),
        });
    }
}

pub fn claims_json(report: &Report) -> String {
    serde_json::json!({"names": report.private_names, "source": "pickguard audit"}).to_string()
}

pub fn relative(dir: &Path, p: &Path) -> String {
    p.strip_prefix(dir)
        .map(PathBuf::from)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn credentials_never_survive() {
        for (url, want) in [
            (
                "https://alice:s3cret@pkgs.example/simple/",
                "https://***@pkgs.example/simple/",
            ),
            (
                "https://glpat-TOKEN123@gitlab.example/api/simple/",
                "https://***@gitlab.example/api/simple/",
            ),
            (
                "https://bob:p@ss@host.example/simple/",
                "https://***@host.example/simple/",
            ),
            (
                "https://host.example/simple/?a=b@c",
                "https://host.example/simple/?a=b@c",
            ),
            (
                "https://host.example/simple/",
                "https://host.example/simple/",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact(url), want, "{url}");
        }
    }
}
