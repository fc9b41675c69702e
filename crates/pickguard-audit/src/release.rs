/*!
Release pipelines against PyTorch's CI/CD principles: binary build and
upload jobs on ephemeral runners, cold-start release builds, uploads only
from deployment environments restricted to protected branches, upload
credentials never in repository secrets, CI artifacts from PRs never
published, immutable container tags, no binary assets on GitHub release
pages, and (here) actions in release workflows pinned by commit.

A *release job* is a job with an upload step (PyPI, a container registry, a
GitHub release, a model hub, a package registry) and every job it needs,
transitively: those build what is published. Generic workflow security
(template injection, excessive permissions, every unpinned action) is
zizmor's; run both (docs/pytorch-policy.md says how they combine).

GitHub Actions workflows are read with locations; GitLab CI jobs (`extends`
resolved, hidden templates skipped) are checked for the rules that map.
*/

use crate::Rule;
use crate::distributed::Hit;
use crate::yaml::{self, Y};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Release {
    pub workflows_read: usize,
    /// `file: job` of every release job found.
    pub release_jobs: Vec<String>,
    /// Workflow files that could not be read (the check is incomplete).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<String>,
}

/// What an upload step publishes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Upload {
    PackageIndex,
    Container,
    ReleaseAsset,
    ModelHub,
    /// Through a script, a make target or an action pickguard does not read,
    /// with an upload credential in reach.
    Indirect,
}

impl Upload {
    fn word(self) -> &'static str {
        match self {
            Upload::PackageIndex => "a package index",
            Upload::Container => "a container registry",
            Upload::ReleaseAsset => "a GitHub release",
            Upload::ModelHub => "a model hub",
            Upload::Indirect => {
                "an index or registry, through a script or make target with an upload credential"
            }
        }
    }
}

const RELEASE_ACTIONS: &[&str] = &[
    "softprops/action-gh-release",
    "actions/upload-release-asset",
    "svenstaro/upload-release-action",
    "ncipollo/release-action",
    "xresloader/upload-to-github-release",
    "shogo82148/actions-upload-release-asset",
];

fn action_name(uses: &str) -> &str {
    uses.split('@').next().unwrap_or(uses)
}

/// Upload performed by a step's `uses:` (with its inputs) or `run:` text.
fn uploads_of(uses: &str, with: &Y, run: &str) -> BTreeSet<Upload> {
    let mut out = BTreeSet::new();
    let a = action_name(uses).to_ascii_lowercase();
    if a == "pypa/gh-action-pypi-publish" || a.starts_with("pypa/gh-action-pypi-publish/") {
        out.insert(Upload::PackageIndex);
    }
    if a == "docker/build-push-action" && with.at("push").is_true() {
        out.insert(Upload::Container);
    }
    if RELEASE_ACTIONS.contains(&a.as_str()) {
        // ncipollo/softprops without files only create the release page.
        let files = ["files", "artifacts", "asset_path", "file", "assets"]
            .iter()
            .any(|k| !with.at(k).s().is_empty());
        if files || a == "actions/upload-release-asset" || a == "svenstaro/upload-release-action" {
            out.insert(Upload::ReleaseAsset);
        }
    }
    if a == "huggingface/huggingface-hub-upload" {
        out.insert(Upload::ModelHub);
    }
    for line in run.lines() {
        let l = line.trim();
        if l.starts_with('#') {
            continue;
        }
        let has = |w: &str| {
            l.split([';', '&', '|']).any(|seg| {
                seg.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .contains(w)
            })
        };
        if has("twine upload")
            || has("uv publish")
            || has("poetry publish")
            || has("flit publish")
            || has("hatch publish")
            || has("pdm publish")
            || has("maturin publish")
            || has("maturin upload")
            || has("anaconda upload")
            || has("anaconda -t")
            || has("cargo publish")
            || has("npm publish")
        {
            out.insert(Upload::PackageIndex);
        }
        if has("docker push")
            || has("podman push")
            || has("buildah push")
            || has("skopeo copy")
            || has("crane push")
            || has("crane copy")
            || has("crane cp")
            || has("oras push")
            || (has("executor") && l.contains("--destination"))
            || (has("docker buildx bake") && l.contains("--push"))
            || (has("docker buildx build") && l.contains("--push"))
            || (has("docker build") && l.contains("--push"))
        {
            out.insert(Upload::Container);
        }
        if has("gh release upload") || (has("gh release create") && release_create_has_files(l)) {
            out.insert(Upload::ReleaseAsset);
        }
        if has("huggingface-cli upload") || has("hf upload") || l.contains("upload_folder(") {
            out.insert(Upload::ModelHub);
        }
    }
    out
}

/// `gh release create TAG [FILES...]`: files after the tag (options aside).
fn release_create_has_files(line: &str) -> bool {
    let toks: Vec<&str> = line.split_whitespace().collect();
    let Some(p) = toks
        .windows(3)
        .position(|w| w == ["gh", "release", "create"])
    else {
        return false;
    };
    let mut positional = 0;
    let mut i = p + 3;
    while i < toks.len() {
        let t = toks[i];
        if matches!(t, "&&" | ";" | "||" | "|") {
            break;
        }
        if t.starts_with('-') {
            // Options with a value.
            if matches!(
                t,
                "-t" | "--title"
                    | "-n"
                    | "--notes"
                    | "-F"
                    | "--notes-file"
                    | "--target"
                    | "-R"
                    | "--repo"
                    | "--discussion-category"
                    | "--notes-start-tag"
            ) {
                i += 1;
            }
        } else {
            positional += 1;
        }
        i += 1;
    }
    positional >= 2
}

/// GitHub-hosted runner labels (standard and arm64 images).
fn github_hosted(label: &str) -> bool {
    let l = label.to_ascii_lowercase();
    let Some((os, rest)) = l.split_once('-') else {
        return false;
    };
    if !matches!(os, "ubuntu" | "windows" | "macos") {
        return false;
    }
    // ubuntu-latest, ubuntu-24.04, windows-2022, macos-15, with the hosted
    // variants -arm, -large, -xlarge, -intel; a custom label that merely
    // starts with "ubuntu-" (ubuntu-gpu-a100) is a self-hosted runner's.
    let (ver, variant) = rest.split_once('-').unwrap_or((rest, ""));
    let ver_ok = ver == "latest"
        || (!ver.is_empty()
            && ver
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())));
    ver_ok && matches!(variant, "" | "arm" | "large" | "xlarge" | "intel")
}

/// A label that says the runner is ephemeral (and does not say it is not).
fn ephemeral_label(l: &str) -> bool {
    let l = l.to_ascii_lowercase();
    l.contains("ephemeral")
        && ![
            "non-ephemeral",
            "nonephemeral",
            "not-ephemeral",
            "non_ephemeral",
            "persistent",
        ]
        .iter()
        .any(|n| l.contains(n))
}

struct Step<'a> {
    y: &'a Y,
    uses: &'a str,
    run: &'a str,
}

struct Job<'a> {
    id: &'a str,
    y: &'a Y,
    steps: Vec<Step<'a>>,
    uploads: BTreeSet<Upload>,
}

fn secrets_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = text[from..].find("secrets.") {
        let s = from + p + "secrets.".len();
        let name: String = text[s..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        from = s;
        if !name.is_empty() && name != "GITHUB_TOKEN" && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

fn all_text(y: &Y) -> String {
    y.scalars()
        .iter()
        .map(|(_, s)| *s)
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_sha(r: &str) -> bool {
    r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `runs-on` labels, with `${{ matrix.X }}` replaced by the matrix's values.
fn runner_labels(doc: &Y, job: &Y) -> Vec<String> {
    let ro = job.at("runs-on");
    let mut raw: Vec<String> = if ro.is_map() {
        let mut v: Vec<String> = ro
            .at("labels")
            .strs()
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !ro.at("group").s().is_empty() {
            v.push(format!("group:{}", ro.at("group").s()));
        }
        v
    } else {
        ro.strs().iter().map(|s| s.to_string()).collect()
    };
    let matrix = job.at("strategy").at("matrix");
    let mut out = Vec::new();
    for l in raw.drain(..) {
        let t = l.trim();
        if let Some(key) = t
            .strip_prefix("${{")
            .and_then(|r| r.strip_suffix("}}"))
            .map(str::trim)
            .and_then(|e| e.strip_prefix("matrix."))
        {
            let mut vals: Vec<String> = matrix
                .at(key)
                .strs()
                .iter()
                .map(|s| s.to_string())
                .collect();
            for inc in matrix.at("include").seq() {
                vals.extend(inc.at(key).strs().iter().map(|s| s.to_string()));
            }
            if vals.is_empty() {
                out.push(l.clone());
            }
            out.extend(vals);
        } else if let Some(key) = t
            .strip_prefix("${{")
            .and_then(|r| r.strip_suffix("}}"))
            .map(str::trim)
            .and_then(|e| e.strip_prefix("inputs."))
        {
            // workflow_dispatch / workflow_call inputs: their default.
            let on = doc.get("on").unwrap_or(doc.at("true"));
            let d = ["workflow_dispatch", "workflow_call"]
                .iter()
                .map(|t| on.at(t).at("inputs").at(key).at("default").s())
                .find(|d| !d.is_empty());
            out.push(d.map(str::to_owned).unwrap_or(l));
        } else {
            out.push(l);
        }
    }
    out
}

fn triggers(doc: &Y) -> BTreeSet<String> {
    let on = doc.get("on").or_else(|| doc.get("true"));
    let Some(on) = on else { return BTreeSet::new() };
    if on.is_map() {
        on.entries().iter().map(|(k, _)| k.to_string()).collect()
    } else {
        on.strs().iter().map(|s| s.to_string()).collect()
    }
}

/// Dockerfiles a step builds (`docker build -f`, build-push-action `file`/`context`).
fn dockerfiles_built(step: &Step, base: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if action_name(step.uses) == "docker/build-push-action" {
        let with = step.y.at("with");
        let ctx = with.at("context").s();
        let ctx = if ctx.is_empty() || ctx.contains("${{") {
            "."
        } else {
            ctx
        };
        let file = with.at("file").s();
        out.push(if file.is_empty() {
            base.join(ctx).join("Dockerfile")
        } else {
            base.join(file)
        });
    }
    for line in step.run.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        if let Some(p) = toks.windows(2).position(|w| {
            (w[0] == "docker" || w[0] == "podman") && w[1] == "build" || w == ["buildx", "build"]
        }) {
            let rest = &toks[p + 2..];
            let mut file = None;
            let mut ctx = None;
            let mut i = 0;
            while i < rest.len() {
                match rest[i] {
                    "-f" | "--file" => {
                        file = rest.get(i + 1).copied();
                        i += 1;
                    }
                    "-t" | "--tag" | "--build-arg" | "--platform" | "--target" | "--cache-from"
                    | "--cache-to" | "--label" | "--secret" | "-o" | "--output" => i += 1,
                    t if t.starts_with('-') => {}
                    "&&" | ";" | "|" => break,
                    t => ctx = Some(t),
                }
                i += 1;
            }
            let ctx = ctx.filter(|c| !c.contains('$')).unwrap_or(".");
            out.push(match file {
                Some(f) if !f.contains('$') => base.join(f),
                _ => base.join(ctx).join("Dockerfile"),
            });
        }
    }
    out
}

/// AUD208 for the `FROM` lines of the Dockerfiles a release step builds.
fn base_images(step: &Step, base: &std::path::Path, role: &str, rel: &str, hits: &mut Vec<Hit>) {
    for df in dockerfiles_built(step, base) {
        let Ok(text) = std::fs::read_to_string(&df) else {
            continue;
        };
        let shown = df.strip_prefix(base).unwrap_or(&df).display().to_string();
        for (ln, img) in mutable_froms(&text) {
            hits.push(hit(
                Rule::ReleaseMutableImage,
                &shown,
                ln,
                format!("{shown} (built by {role} in {rel}) starts FROM {img}, a tag that can be moved: pin it by digest (@sha256:…)"),
            ));
        }
    }
}

/// `FROM image:tag` lines without a digest.
fn mutable_froms(text: &str) -> Vec<(usize, String)> {
    let mut stages = BTreeSet::new();
    let mut out = Vec::new();
    // `ARG BASE=image:tag` then `FROM ${BASE}`: the default is what builds.
    let mut args: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut t = line.trim().to_owned();
        if let Some(a) = t.strip_prefix("ARG ").or_else(|| t.strip_prefix("arg "))
            && let Some((k, v)) = a.trim().split_once('=')
        {
            args.push((
                k.trim().to_owned(),
                v.trim().trim_matches(['"', '\'']).to_owned(),
            ));
        }
        for (k, v) in args.iter().rev() {
            t = t
                .replace(&format!("${{{k}}}"), v)
                .replace(&format!("${k}"), v);
        }
        let t = t.as_str();
        let mut toks = t.split_whitespace();
        if !toks.next().is_some_and(|k| k.eq_ignore_ascii_case("FROM")) {
            continue;
        }
        let mut image = "";
        let mut rest: Vec<&str> = vec![];
        for tok in toks.by_ref() {
            if tok.starts_with("--") {
                continue;
            }
            image = tok;
            rest = toks.by_ref().collect();
            break;
        }
        if rest.len() >= 2 && rest[0].eq_ignore_ascii_case("AS") {
            stages.insert(rest[1].to_ascii_lowercase());
        }
        if image.is_empty()
            || image == "scratch"
            || image.contains('$')
            || image.contains("@sha256:")
            || stages.contains(&image.to_ascii_lowercase()) && !image.contains(':')
        {
            continue;
        }
        out.push((i + 1, image.to_owned()));
    }
    out
}

/// Tags pushed that anyone with push rights moves: `latest`, branch names, none.
fn mutable_tag(image: &str) -> Option<String> {
    mutable_tag_on(image, false)
}

/// `tag_push`: the workflow runs only for tag pushes, so `github.ref_name`
/// is the version tag.
fn mutable_tag_on(image: &str, tag_push: bool) -> Option<String> {
    let image = image.trim().trim_matches(['"', '\'']);
    if image.is_empty() || image.starts_with('-') || image.contains("@sha256:") {
        return None;
    }
    // A whole expression (`${{ steps.meta.outputs.tags }}`): the tags are
    // computed elsewhere and not known here.
    if image.starts_with("${{") || image.starts_with('$') && !image.contains('/') {
        return None;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    let tag = match last.split_once(':') {
        Some((_, t)) => t,
        None if last.contains("${{") => return None,
        None => return Some("(no tag: latest)".into()),
    };
    if tag_push && tag.contains("github.ref_name") {
        return None;
    }
    let t = tag.to_ascii_lowercase();
    let moving = matches!(
        t.as_str(),
        "latest" | "main" | "master" | "dev" | "develop" | "nightly" | "edge" | "stable" | "head"
    ) || ((t.contains("github.ref_name")
        || t.contains("github.head_ref")
        || t.contains("ci_commit_branch")
        || t.contains("ci_commit_ref_name")
        || t.contains("ci_commit_ref_slug"))
        && !t.contains("sha"));
    moving.then(|| tag.to_owned())
}

fn pushed_images(step: &Step) -> Vec<String> {
    let mut out = Vec::new();
    if action_name(step.uses) == "docker/build-push-action"
        && step.y.at("with").at("push").is_true()
    {
        for l in step.y.at("with").at("tags").s().split([',', '\n']) {
            if !l.trim().is_empty() {
                out.push(l.trim().to_owned());
            }
        }
    }
    let tagged: Vec<String> = step
        .run
        .lines()
        .flat_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            let mut v: Vec<String> = t
                .windows(4)
                .filter(|w| (w[0] == "docker" || w[0] == "podman") && w[1] == "tag")
                .flat_map(|w| [w[2].to_owned(), w[3].to_owned()])
                .collect();
            if t.windows(2)
                .any(|w| (w[0] == "docker" || w[0] == "podman") && w[1] == "build")
            {
                v.extend(
                    t.windows(2)
                        .filter(|w| w[0] == "-t" || w[0] == "--tag")
                        .map(|w| w[1].to_owned()),
                );
            }
            v
        })
        .collect();
    for line in step.run.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        for w in toks.windows(3) {
            if (w[0] == "docker" || w[0] == "podman") && w[1] == "push" {
                if w[2] == "--all-tags" || w[2] == "-a" {
                    out.extend(tagged.iter().cloned());
                } else {
                    out.push(w[2].to_owned());
                }
            }
            if (w[0] == "skopeo" && w[1] == "copy"
                || w[0] == "crane" && matches!(w[1], "copy" | "cp" | "push"))
                && let Some(dst) = toks.iter().rev().find(|t| !t.starts_with('-'))
            {
                out.push(dst.trim_start_matches("docker://").to_owned());
            }
        }
        for t in &toks {
            if let Some(d) = t.strip_prefix("--destination=") {
                out.push(d.to_owned());
            }
        }
        if line.contains("--push") {
            for w in toks.windows(2) {
                if w[0] == "-t" || w[0] == "--tag" {
                    out.push(w[1].to_owned());
                }
            }
        }
    }
    out
}

const CACHE_ACTIONS: &[&str] = &[
    "actions/cache",
    "actions/cache/restore",
    "mozilla-actions/sccache-action",
    "hendrikmuhs/ccache-action",
    "swatinem/rust-cache",
    "astral-sh/setup-uv",
];

/// A shared build cache a step restores, if any.
fn cache_of(step: &Step) -> Option<String> {
    let a = action_name(step.uses).to_ascii_lowercase();
    let with = step.y.at("with");
    if CACHE_ACTIONS.contains(&a.as_str()) {
        if a == "astral-sh/setup-uv" && !with.at("enable-cache").is_true() {
            return None;
        }
        return Some(a);
    }
    if a.starts_with("actions/setup-")
        && !with.at("cache").s().is_empty()
        && with.at("cache").s() != "false"
    {
        return Some(format!("{a} with cache: {}", with.at("cache").s()));
    }
    if a == "docker/build-push-action" && with.at("cache-from").s().contains("type=gha") {
        return Some("docker/build-push-action cache-from type=gha".into());
    }
    let env: String = step
        .y
        .at("env")
        .entries()
        .iter()
        .map(|(k, v)| format!("{k}={}\n", v.s()))
        .collect();
    for (needle, what) in [
        ("sccache", "sccache"),
        ("ccache", "ccache"),
        ("SCCACHE_GHA_ENABLED", "sccache"),
    ] {
        if step.run.contains(needle) || env.contains(needle) {
            return Some(what.into());
        }
    }
    None
}

/// A download of artifacts made by another run (a PR's, possibly).
fn cross_run_download(step: &Step) -> bool {
    let a = action_name(step.uses).to_ascii_lowercase();
    (a == "actions/download-artifact" && !step.y.at("with").at("run-id").s().is_empty())
        || a == "dawidd6/action-download-artifact"
        || step.run.contains("gh run download")
}

fn pr_head_ref(text: &str) -> bool {
    [
        "github.event.pull_request.head",
        "github.head_ref",
        "github.event.workflow_run.head",
        "github.event.pull_request.number",
        "github.event.number",
        "refs/pull/",
        " pull/",
        "gh pr checkout",
        "github.event.issue.pull_request",
    ]
    .iter()
    .any(|n| text.contains(n))
}

fn hit(rule: Rule, file: &str, line: usize, message: String) -> Hit {
    Hit {
        rule,
        file: file.to_owned(),
        line,
        message,
    }
}

fn github_workflow(
    doc: &Y,
    rel: &str,
    base: &std::path::Path,
    out: &mut Release,
    hits: &mut Vec<Hit>,
) {
    let on = triggers(doc);
    // Runs only for pushed tags (and releases): ref_name is the version tag.
    let tag_push = {
        let push = doc.get("on").map(|o| o.at("push"));
        let only_tags =
            push.is_some_and(|p| p.get("tags").is_some() && p.get("branches").is_none());
        on.iter()
            .all(|t| t == "release" || t == "workflow_dispatch" || (t == "push" && only_tags))
            && !on.is_empty()
    };
    let wf_env = all_text(doc.at("env"));
    let jobs: Vec<Job> = doc
        .at("jobs")
        .entries()
        .into_iter()
        .map(|(id, y)| {
            let steps: Vec<Step> = y
                .at("steps")
                .seq()
                .iter()
                .map(|s| Step {
                    y: s,
                    uses: s.at("uses").s(),
                    run: s.at("run").s(),
                })
                .collect();
            let mut uploads: BTreeSet<Upload> = steps
                .iter()
                .flat_map(|s| uploads_of(s.uses, s.y.at("with"), s.run))
                .collect();
            // Local composite actions: their steps are this job's.
            for s in &steps {
                if let Some(dir) = s.uses.strip_prefix("./") {
                    let text = ["action.yml", "action.yaml"]
                        .iter()
                        .find_map(|f| std::fs::read_to_string(base.join(dir).join(f)).ok());
                    if let Some(Ok(docs)) = text.map(|t| yaml::parse(&t)) {
                        for d in &docs {
                            for st in d.at("runs").at("steps").seq() {
                                uploads.extend(uploads_of(
                                    st.at("uses").s(),
                                    st.at("with"),
                                    st.at("run").s(),
                                ));
                            }
                        }
                    }
                }
            }
            // A publishing credential handed to a script or make target.
            if uploads.is_empty() {
                let env: String = [doc.at("env"), y.at("env")]
                    .into_iter()
                    .chain(steps.iter().map(|s| s.y.at("env")))
                    .flat_map(|e| e.entries())
                    .filter(|(_, v)| v.s().contains("secrets."))
                    .map(|(k, _)| k.to_ascii_uppercase())
                    .collect::<Vec<_>>()
                    .join(" ");
                let cred = [
                    "TWINE_PASSWORD",
                    "PYPI",
                    "UV_PUBLISH",
                    "POETRY_PYPI",
                    "FLIT_PASSWORD",
                    "HATCH_INDEX",
                    "CARGO_REGISTRY_TOKEN",
                    "NPM_TOKEN",
                    "NODE_AUTH_TOKEN",
                    "DOCKER_PASSWORD",
                    "REGISTRY_PASSWORD",
                    "ANACONDA",
                ]
                .iter()
                .any(|c| env.contains(c));
                let runs = steps.iter().any(|s| {
                    s.run.lines().any(|l| {
                        let l = l.trim();
                        [
                            "make release",
                            "make publish",
                            "make upload",
                            "make dist-upload",
                            "make deploy",
                            "just release",
                            "just publish",
                        ]
                        .iter()
                        .any(|m| l.contains(m))
                            || l.split_whitespace().next().is_some_and(|c| {
                                (c.contains("release")
                                    || c.contains("publish")
                                    || c.contains("upload"))
                                    && (c.ends_with(".sh") || c.ends_with(".py"))
                            })
                    })
                });
                if cred || runs && !secrets_in(&all_text(y)).is_empty() {
                    uploads.insert(Upload::Indirect);
                }
            }
            Job {
                id,
                y,
                steps,
                uploads,
            }
        })
        .collect();
    // Release jobs: uploaders and what they need, transitively.
    let mut release: BTreeSet<&str> = jobs
        .iter()
        .filter(|j| !j.uploads.is_empty())
        .map(|j| j.id)
        .collect();
    // A job that calls a local reusable workflow which publishes is part of
    // the release too (its `needs` build what is published); the called
    // workflow's own jobs are checked when that file is read.
    let callers: BTreeSet<&str> = jobs
        .iter()
        .filter(|j| {
            let u = j.y.at("uses").s();
            // A reusable workflow of another repository handed secrets: it
            // cannot be read here, and may well be the release.
            let remote_with_secrets =
                !u.is_empty() && !u.starts_with("./") && j.y.get("secrets").is_some();
            remote_with_secrets
                || u.strip_prefix("./").is_some_and(|f| {
                    std::fs::read_to_string(base.join(f))
                        .ok()
                        .and_then(|t| yaml::parse(&t).ok())
                        .is_some_and(|docs| {
                            docs.iter().any(|d| {
                                d.at("jobs").entries().iter().any(|(_, cj)| {
                                    cj.at("steps").seq().iter().any(|st| {
                                        !uploads_of(
                                            st.at("uses").s(),
                                            st.at("with"),
                                            st.at("run").s(),
                                        )
                                        .is_empty()
                                    })
                                })
                            })
                        })
                })
        })
        .map(|j| j.id)
        .collect();
    release.extend(callers.iter().copied());
    let needs: BTreeMap<&str, Vec<&str>> = jobs
        .iter()
        .map(|j| (j.id, j.y.at("needs").strs()))
        .collect();
    let mut todo: Vec<&str> = release.iter().copied().collect();
    while let Some(j) = todo.pop() {
        for n in needs.get(j).cloned().unwrap_or_default() {
            if release.insert(n) {
                todo.push(n);
            }
        }
    }
    let pr_triggered = on.contains("pull_request_target") || on.contains("workflow_run");
    // pull_request_target / workflow_run jobs that check out the PR's code.
    if pr_triggered {
        for j in &jobs {
            // `${{ env.X }}` in a ref: the value X is given in the workflow,
            // job or step env.
            let env_of = |step: &Y| -> String {
                [doc.at("env"), j.y.at("env"), step.at("env")]
                    .iter()
                    .flat_map(|e| e.entries())
                    .map(|(k, v)| format!("env.{k}={}\n", v.s()))
                    .collect()
            };
            let resolved = |step: &Y, text: &str| -> String {
                let env = env_of(step);
                let mut out = text.to_owned();
                for line in env.lines() {
                    if let Some((k, v)) = line.split_once('=')
                        && text.contains(k)
                    {
                        out.push('\n');
                        out.push_str(v);
                    }
                }
                out
            };
            // A reusable workflow handed the PR's head: the callee checks it out.
            let callee = j.y.at("uses").s();
            if callee.ends_with(".yml") || callee.ends_with(".yaml") {
                let with = resolved(j.y, &all_text(j.y.at("with")));
                if pr_head_ref(&with) {
                    hits.push(hit(
                        Rule::PrTargetCheckout,
                        rel,
                        j.y.at("uses").line,
                        format!(
                            "job {} calls {callee} with the pull request's head{}: the called workflow runs the PR's code with the base repository's token and secrets",
                            j.id,
                            if j.y.at("secrets").s() == "inherit" { " and secrets: inherit" } else { "" }
                        ),
                    ));
                }
            }
            for s in &j.steps {
                let checks_out = (action_name(s.uses) == "actions/checkout"
                    && pr_head_ref(&resolved(s.y, &all_text(s.y.at("with")))))
                    || (s.run.contains("git checkout")
                        || s.run.contains("git fetch")
                        || s.run.contains("git pull")
                        || s.run.contains("gh pr checkout"))
                        && pr_head_ref(&resolved(s.y, s.run));
                if checks_out {
                    let secrets = secrets_in(&all_text(j.y));
                    let trig = if on.contains("pull_request_target") {
                        "pull_request_target"
                    } else {
                        "workflow_run"
                    };
                    hits.push(hit(
                        Rule::PrTargetCheckout,
                        rel,
                        s.y.line,
                        format!(
                            "job {} runs on {trig} (with the base repository's token{}) and checks out the pull request's code: the PR's author runs code with them",
                            j.id,
                            if secrets.is_empty() { String::new() } else { format!(" and secrets {}", secrets.join(", ")) }
                        ),
                    ));
                }
            }
        }
    }
    if release.is_empty() {
        return;
    }
    for j in jobs
        .iter()
        .filter(|j| release.contains(j.id) && !callers.contains(j.id))
    {
        out.release_jobs.push(format!("{rel}: {}", j.id));
        let uploads = !j.uploads.is_empty();
        let role = if uploads {
            format!(
                "upload job {} (publishes to {})",
                j.id,
                j.uploads
                    .iter()
                    .map(|u| u.word())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!("build job {} (its output is published)", j.id)
        };
        // Runners.
        let labels = runner_labels(doc, j.y);
        let ephemeral = labels.iter().any(|l| ephemeral_label(l));
        let self_hosted = labels
            .iter()
            .any(|l| l.eq_ignore_ascii_case("self-hosted") || l.starts_with("group:"))
            || labels
                .iter()
                .any(|l| !l.contains("${{") && !github_hosted(l))
            // A runner chosen at run time (an expression not resolved from the
            // matrix or an input default) cannot be shown to be ephemeral.
            || labels.iter().any(|l| l.contains("${{"));
        if self_hosted && !ephemeral && !labels.is_empty() {
            hits.push(hit(
                Rule::ReleaseSelfHostedRunner,
                rel,
                j.y.at("runs-on").line,
                format!(
                    "{role} runs on [{}]: not a GitHub-hosted runner and not marked ephemeral; a runner reused across jobs carries one job's tampering into the release",
                    labels.join(", ")
                ),
            ));
        }
        // Caches.
        for s in &j.steps {
            if let Some(c) = cache_of(s) {
                hits.push(hit(
                    Rule::ReleaseSharedCache,
                    rel,
                    s.y.line,
                    format!("{role} restores a shared build cache ({c}): a cache written by another branch's or PR's job goes into the release"),
                ));
            }
            if cross_run_download(s) {
                hits.push(hit(
                    Rule::ReleaseConsumesForeignArtifact,
                    rel,
                    s.y.line,
                    format!(
                        "{role} downloads artifacts made by another workflow run{}: a pull request's build can become the release",
                        if on.contains("workflow_run") { " (this workflow runs on workflow_run)" } else { "" }
                    ),
                ));
            }
        }
        if on.contains("workflow_run")
            && j.steps
                .iter()
                .any(|s| action_name(s.uses) == "actions/download-artifact")
            && !j.steps.iter().any(cross_run_download)
        {
            hits.push(hit(
                Rule::ReleaseConsumesForeignArtifact,
                rel,
                j.y.line,
                format!("{role} runs on workflow_run and downloads artifacts: the triggering run may be a pull request's"),
            ));
        }
        // Container images.
        if let Some(img) =
            j.y.get("container")
                .map(|c| if c.is_map() { c.at("image").s() } else { c.s() })
            && !img.is_empty()
            && !img.contains("@sha256:")
            && !img.contains("${{")
        {
            hits.push(hit(
                Rule::ReleaseMutableImage,
                rel,
                j.y.at("container").line,
                format!("{role} runs in the container {img}, pulled by a tag that can be moved"),
            ));
        }
        for s in &j.steps {
            base_images(s, base, &role, rel, hits);
            if s.uses.starts_with("docker://") && !s.uses.contains("@sha256:") {
                hits.push(hit(
                    Rule::ReleaseUnpinnedAction,
                    rel,
                    s.y.line,
                    format!("{role} runs the image {} by tag", s.uses),
                ));
            }
        }
        if !uploads {
            continue;
        }
        // Environment and credentials.
        let env = j.y.get("environment");
        let env_name = env
            .map(|e| if e.is_map() { e.at("name").s() } else { e.s() })
            .filter(|n| !matches!(*n, "null" | "~" | "Null" | "NULL" | "''" | "\"\""))
            .unwrap_or("");
        if env_name.is_empty() {
            hits.push(hit(
                Rule::UploadWithoutEnvironment,
                rel,
                j.y.line,
                format!("{role} has no deployment environment: any branch that can run this workflow can publish"),
            ));
            let mut secrets = secrets_in(&(all_text(j.y) + "\n" + &wf_env));
            secrets.sort();
            if !secrets.is_empty() {
                hits.push(hit(
                    Rule::UploadRepositorySecret,
                    rel,
                    j.y.line,
                    format!(
                        "{role} publishes with {} from repository or organisation secrets (no environment holds them): any workflow on any branch can read them",
                        secrets.join(", ")
                    ),
                ));
            }
        }
        for s in &j.steps {
            let kinds = uploads_of(s.uses, s.y.at("with"), s.run);
            if kinds.contains(&Upload::ReleaseAsset) {
                hits.push(hit(
                    Rule::ReleaseBinaryAsset,
                    rel,
                    s.y.line,
                    format!("{role} attaches files to a GitHub release: anyone with write access can replace them later, unseen by the people who download them"),
                ));
            }
            for img in pushed_images(s) {
                if let Some(tag) = mutable_tag_on(&img, tag_push) {
                    hits.push(hit(
                        Rule::ReleaseMutableTag,
                        rel,
                        s.y.line,
                        format!("{role} pushes {img}: the tag {tag} is moved by every push, so what it names is not what was reviewed"),
                    ));
                }
            }
        }
    }
    // Unpinned third-party actions (and reusable workflows) anywhere in a
    // release workflow.
    for j in &jobs {
        let u = j.y.at("uses").s();
        if !u.is_empty() && !u.starts_with("./") {
            let (name, r) = u.split_once('@').unwrap_or((u, ""));
            let owner = name.split('/').next().unwrap_or("").to_ascii_lowercase();
            if owner != "actions" && owner != "github" && !is_sha(r) {
                hits.push(hit(
                    Rule::ReleaseUnpinnedAction,
                    rel,
                    j.y.at("uses").line,
                    format!("job {} of a release workflow calls the reusable workflow {u}{}: whoever moves that ref runs code with this workflow's secrets; pin it by commit SHA", j.id, if j.y.at("secrets").s() == "inherit" { " with secrets: inherit" } else { "" }),
                ));
            }
        }
        for s in &j.steps {
            let u = s.uses;
            if u.is_empty() || u.starts_with("./") || u.starts_with("docker://") {
                continue;
            }
            let (name, r) = u.split_once('@').unwrap_or((u, ""));
            let owner = name.split('/').next().unwrap_or("").to_ascii_lowercase();
            if owner == "actions" || owner == "github" || is_sha(r) {
                continue;
            }
            hits.push(hit(
                Rule::ReleaseUnpinnedAction,
                rel,
                s.y.line,
                format!("job {} of a release workflow uses {u}: the tag can be moved to other code; pin it by commit SHA", j.id),
            ));
        }
    }
}

const GITLAB_KEYWORDS: &[&str] = &[
    "stages",
    "variables",
    "default",
    "include",
    "workflow",
    "image",
    "services",
    "before_script",
    "after_script",
    "cache",
    "types",
    "pages_",
    "spec",
];

fn gitlab_job<'a>(doc: &'a Y, y: &'a Y, depth: usize) -> Vec<(&'a str, &'a Y)> {
    // Own entries first, then what `extends` brings (bounded).
    let mut out = y.entries();
    if depth < 5 {
        for parent in y.at("extends").strs() {
            if let Some(p) = doc.get(parent) {
                for (k, v) in gitlab_job(doc, p, depth + 1) {
                    if !out.iter().any(|(ok, _)| *ok == k) {
                        out.push((k, v));
                    }
                }
            }
        }
    }
    out
}

/// A GitLab script (`before_script`/`script`), `!reference [.job, key]`
/// items resolved (the loader keeps them as two-item sequences).
fn gitlab_script(doc: &Y, y: &Y) -> String {
    let mut out = Vec::new();
    for item in y
        .seq()
        .iter()
        .chain(std::iter::once(y).filter(|y| y.str().is_some()))
    {
        let path = item.strs();
        if !item.seq().is_empty()
            && path.len() == item.seq().len()
            && path.first().is_some_and(|p| p.starts_with('.'))
        {
            let mut node = doc;
            for p in &path {
                node = node.at(p);
            }
            out.push(all_text(node));
        } else {
            out.push(all_text(item));
        }
    }
    out.join("\n")
}

/// The pipeline with its `include: local` files merged in (the including
/// file's keys win); includes from outside the repository are unread.
fn gitlab_merged(
    doc: &Y,
    rel: &str,
    base: &std::path::Path,
    out: &mut Release,
    warnings: &mut Vec<String>,
) -> Y {
    let mut entries: Vec<(String, Y)> = Vec::new();
    let inc = doc.at("include");
    let items: Vec<&Y> = if inc.seq().is_empty() {
        vec![inc]
    } else {
        inc.seq().iter().collect()
    };
    for it in items {
        let local = if it.is_map() {
            it.at("local").s()
        } else {
            it.s()
        };
        let remote = it.is_map()
            && ["remote", "project", "template", "component"]
                .iter()
                .any(|k| it.get(k).is_some());
        if remote
            || (!local.is_empty()
                && (local.contains("://") || local.contains('*') || local.contains('$')))
        {
            let what = if local.is_empty() {
                all_text(it).replace('\n', " ")
            } else {
                local.to_owned()
            };
            warnings.push(format!("{rel}: includes {what} from outside the repository (or by pattern): its jobs were not checked"));
            out.unread.push(format!("{rel} (include {what})"));
            continue;
        }
        if local.is_empty() {
            continue;
        }
        let path = base.join(local.trim_start_matches('/'));
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| yaml::parse(&t))
        {
            Ok(docs) => {
                for d in docs {
                    if let crate::yaml::V::Map(m) = d.v {
                        entries.extend(m);
                    }
                }
            }
            Err(e) => {
                warnings.push(format!(
                    "{rel}: include {local}: {e}; its jobs were not checked"
                ));
                out.unread.push(format!("{rel} (include {local})"));
            }
        }
    }
    if let crate::yaml::V::Map(m) = &doc.v {
        for (k, v) in m {
            entries.retain(|(ek, _)| ek != k);
            entries.push((k.clone(), v.clone()));
        }
    }
    Y {
        line: doc.line,
        v: crate::yaml::V::Map(entries),
    }
}

fn gitlab(doc: &Y, rel: &str, base: &std::path::Path, out: &mut Release, hits: &mut Vec<Hit>) {
    let top_cache = doc.get("cache").is_some() || doc.at("default").get("cache").is_some();
    let mut stages: Vec<String> = doc
        .at("stages")
        .strs()
        .iter()
        .map(|s| s.to_string())
        .collect();
    if stages.is_empty() {
        stages = ["build", "test", "deploy"].map(String::from).to_vec();
    }
    stages.insert(0, ".pre".into());
    stages.push(".post".into());
    struct GJob<'a> {
        id: &'a str,
        y: &'a Y,
        entries: Vec<(&'a str, &'a Y)>,
        stage: usize,
        uploads: BTreeSet<Upload>,
        script: String,
    }
    let empty = Y {
        line: 0,
        v: crate::yaml::V::Map(vec![]),
    };
    let jobs: Vec<GJob> = doc
        .entries()
        .into_iter()
        .filter(|(id, y)| !id.starts_with('.') && !GITLAB_KEYWORDS.contains(id) && y.is_map())
        .map(|(id, y)| {
            let entries = gitlab_job(doc, y, 0);
            let get = |k: &str| entries.iter().find(|(ek, _)| *ek == k).map(|(_, v)| *v);
            let script: String = ["before_script", "script"]
                .iter()
                .filter_map(|k| get(k))
                .map(|y| gitlab_script(doc, y))
                .collect::<Vec<_>>()
                .join("\n");
            let stage_name = get("stage").map(|s| s.s()).unwrap_or("test");
            let stage = stages.iter().position(|s| s == stage_name).unwrap_or(2);
            let uploads = uploads_of("", &empty, &script);
            GJob {
                id,
                y,
                entries,
                stage,
                uploads,
                script,
            }
        })
        .collect();
    fn get<'a>(j: &GJob<'a>, k: &str) -> Option<&'a Y> {
        j.entries.iter().find(|(ek, _)| *ek == k).map(|(_, v)| *v)
    }
    for up in jobs.iter().filter(|j| !j.uploads.is_empty()) {
        out.release_jobs.push(format!("{rel}: {}", up.id));
        let role = format!(
            "upload job {} (publishes to {})",
            up.id,
            up.uploads
                .iter()
                .map(|u| u.word())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if get(up, "environment").is_none() {
            hits.push(hit(
                Rule::UploadWithoutEnvironment,
                rel,
                up.y.line,
                format!("{role} has no environment: make it deploy to a protected environment so only protected branches and approved people can publish"),
            ));
        }
        // What feeds it: `needs`, else `dependencies`, else every job of an
        // earlier stage (GitLab passes their artifacts on by default).
        let named: Option<Vec<&str>> =
            get(up, "needs")
                .or_else(|| get(up, "dependencies"))
                .map(|n| {
                    n.seq()
                        .iter()
                        .map(|x| if x.is_map() { x.at("job").s() } else { x.s() })
                        .collect()
                });
        let feeders: Vec<&GJob> = jobs
            .iter()
            .filter(|j| match &named {
                Some(names) => names.contains(&j.id),
                None => j.stage < up.stage,
            })
            .collect();
        for j in std::iter::once(up).chain(feeders) {
            if j.id != up.id {
                out.release_jobs.push(format!("{rel}: {}", j.id));
            }
            let cache = get(j, "cache");
            let what = if j.id == up.id {
                role.clone()
            } else {
                format!("build job {} (its artifacts reach {})", j.id, up.id)
            };
            // Runner tags choose self-managed runners (GitLab.com's hosted
            // ones are tagged saas-*).
            let tags: Vec<&str> = get(j, "tags").map(|t| t.strs()).unwrap_or_default();
            if !tags.is_empty()
                && !tags.iter().any(|t| ephemeral_label(t))
                && !tags.iter().all(|t| t.starts_with("saas-"))
            {
                hits.push(hit(
                    Rule::ReleaseSelfHostedRunner,
                    rel,
                    get(j, "tags").map(|t| t.line).unwrap_or(j.y.line),
                    format!(
                        "{what} runs on self-managed runners tagged [{}], not marked ephemeral",
                        tags.join(", ")
                    ),
                ));
            }
            let image = get(j, "image")
                .or_else(|| doc.get("image"))
                .or_else(|| doc.at("default").get("image"));
            if let Some(img) = image.map(|i| if i.is_map() { i.at("name").s() } else { i.s() })
                && !img.is_empty()
                && !img.contains("@sha256:")
                && !img.contains('$')
            {
                hits.push(hit(
                    Rule::ReleaseMutableImage,
                    rel,
                    image.map(|i| i.line).unwrap_or(j.y.line),
                    format!("{what} runs in the image {img}, pulled by a tag that can be moved"),
                ));
            }
            let step_y = Y {
                line: 0,
                v: crate::yaml::V::Map(vec![]),
            };
            let step = Step {
                y: &step_y,
                uses: "",
                run: &j.script,
            };
            base_images(&step, base, &what, rel, hits);
            if cache.is_some() || top_cache {
                hits.push(hit(
                    Rule::ReleaseSharedCache,
                    rel,
                    cache.map(|c| c.line).unwrap_or(j.y.line),
                    format!("{what} restores a shared cache: a cache written by another branch's pipeline goes into the release"),
                ));
            }
        }
        for line in up.script.lines() {
            let toks: Vec<&str> = line.split_whitespace().collect();
            for w in toks.windows(3) {
                if (w[0] == "docker" || w[0] == "podman")
                    && w[1] == "push"
                    && let Some(tag) = mutable_tag(w[2])
                {
                    hits.push(hit(
                        Rule::ReleaseMutableTag,
                        rel,
                        up.y.line,
                        format!(
                            "{role} pushes {}: the tag {tag} is moved by every push",
                            w[2]
                        ),
                    ));
                }
            }
        }
    }
    out.release_jobs.sort();
    out.release_jobs.dedup();
}

pub(crate) fn check(
    files: &[(PathBuf, String)],
    base: &std::path::Path,
    warnings: &mut Vec<String>,
) -> (Release, Vec<Hit>) {
    let mut out = Release::default();
    let mut hits = Vec::new();
    for (path, rel) in files {
        let name = rel.rsplit('/').next().unwrap_or(rel).to_ascii_lowercase();
        let gh = rel.starts_with(".github/workflows/")
            && (name.ends_with(".yml") || name.ends_with(".yaml"));
        // Other pipeline files are read through the `include:` that names them.
        let gl = name == ".gitlab-ci.yml";
        if !gh && !gl {
            continue;
        }
        let text = match std::fs::metadata(path) {
            Ok(m) if m.len() as usize > yaml::MAX_BYTES => {
                warnings.push(format!(
                    "{rel}: larger than 4 MiB, its release jobs were not checked"
                ));
                out.unread.push(rel.clone());
                continue;
            }
            _ => match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    warnings.push(format!("{rel}: {e}; its release jobs were not checked"));
                    out.unread.push(rel.clone());
                    continue;
                }
            },
        };
        let docs = match yaml::parse(&text) {
            Ok(d) => d,
            Err(e) => {
                warnings.push(format!(
                    "{rel}: not read as YAML ({e}); its release jobs were not checked"
                ));
                out.unread.push(rel.clone());
                continue;
            }
        };
        out.workflows_read += 1;
        for d in &docs {
            if gh {
                github_workflow(d, rel, base, &mut out, &mut hits);
            } else {
                let merged = gitlab_merged(d, rel, base, &mut out, warnings);
                gitlab(&merged, rel, base, &mut out, &mut hits);
            }
        }
    }
    (out, hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_froms() {
        assert_eq!(
            mutable_tag("ghcr.io/acme/model:latest").as_deref(),
            Some("latest")
        );
        assert!(mutable_tag("ghcr.io/acme/model").is_some());
        assert_eq!(
            mutable_tag("ghcr.io/acme/model:${{ github.ref_name }}").as_deref(),
            Some("${{ github.ref_name }}")
        );
        assert_eq!(mutable_tag("ghcr.io/acme/model:v1.2.3"), None);
        assert_eq!(mutable_tag("localhost:5000/model:1.0"), None);
        assert_eq!(mutable_tag("ghcr.io/acme/model@sha256:abcd"), None);
        let froms = mutable_froms(
            "FROM --platform=linux/amd64 nvidia/cuda:12.4.1-devel-ubuntu22.04 AS build\nFROM build\nFROM python:3.11-slim@sha256:0123\nFROM scratch\nFROM ${BASE}\n",
        );
        assert_eq!(
            froms,
            vec![(1, "nvidia/cuda:12.4.1-devel-ubuntu22.04".to_owned())]
        );
        assert!(release_create_has_files(
            "gh release create v1 dist/*.whl --notes x"
        ));
        assert!(!release_create_has_files(
            "gh release create v1 --generate-notes"
        ));
    }
}
