#!/usr/bin/env bash
# Build the wheel and test it as a Python user gets it:
#  1. a fresh venv with only the wheel, numpy and pre-commit, and no Rust
#     toolchain on PATH: the `pickguard` command on the fixture corpus, the
#     Python API with backend="numpy" (torch not installed), pre-commit hooks,
#     and `uvx --from WHEEL pickguard scan`;
#  2. the wheel's files with the test venv's real torch: pickguard.load
#     against torch.load(weights_only=True), bit for bit, on checkpoints
#     made by torch.save, and every unsafe fixture refused without its
#     payload running.
# scripts/test.sh runs this after the cargo tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
eval "$(scripts/setup-test-env.sh)"
# The release wheel, as users get it (a less optimised profile was tried:
# it built no faster, the time goes to C dependencies and linking).
wheel=$(scripts/build-wheel.sh | tail -1)
echo "test-wheel: $wheel" >&2
work=$(mktemp -d)
[ -n "${PICKGUARD_KEEP_WORK:-}" ] || trap 'rm -rf "$work"' EXIT
cache="${XDG_CACHE_HOME:-$HOME/.cache}"

# Checkpoints from real torch.save, and the wheel's files for the torch venv.
"$PICKGUARD_PYTHON" fixtures/gen/convert_cases.py "$work/cases" >/dev/null
"$PICKGUARD_PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps --target "$work/site" "$wheel"

echo "test-wheel: pickguard.load against torch.load (real torch)" >&2
PICKGUARD_ROOT="$root" PICKGUARD_WORK="$work" PYTHONPATH="$work/site:$root/tests/python" \
  "$PICKGUARD_PYTHON" -W ignore::UserWarning -m unittest test_torch

# A fresh venv and an environment with nothing of the build in it.
python3 -m venv "$work/venv"
mkdir -p "$work/home"
clean=(env -i HOME="$work/home" PATH="$work/venv/bin:/usr/local/bin:/usr/bin:/bin" LANG=C.UTF-8
       PIP_CACHE_DIR="$cache/pip" PIP_DISABLE_PIP_VERSION_CHECK=1 PRE_COMMIT_HOME="$work/pre-commit"
       PICKGUARD_ROOT="$root" PICKGUARD_WORK="$work" PYTHONPATH="$root/tests/python")
if "${clean[@]}" sh -c 'command -v cargo || command -v rustc' >/dev/null; then
  echo "test-wheel: a Rust toolchain is on the clean PATH; the test would prove nothing" >&2
  exit 1
fi
"${clean[@]}" pip install --quiet "$wheel" -r scripts/wheel-test-requirements.txt

echo "test-wheel: the wheel's command and the numpy backend, without torch or Rust" >&2
(cd "$work" && "${clean[@]}" python -m unittest test_cli test_numpy)

echo "test-wheel: uvx --from WHEEL pickguard scan" >&2
uv=$(dirname "$PICKGUARD_PYTHON")/uv
out=$("${clean[@]}" UV_CACHE_DIR="$work/uv-cache" UV_PYTHON_DOWNLOADS=never "$uv" tool run --offline \
  --from "$wheel" pickguard scan "$root/fixtures/corpus/mal-append-sys-path.pkl" || true)
grep -q "malicious" <<<"$out" || { echo "test-wheel: uvx run did not report the malicious fixture: $out" >&2; exit 1; }
"${clean[@]}" UV_CACHE_DIR="$work/uv-cache" UV_PYTHON_DOWNLOADS=never "$uv" tool run --offline \
  --from "$wheel" pickguard scan "$root/fixtures/corpus/ok-torch-state-dict.pt" >/dev/null

echo "test-wheel: pre-commit hooks on a small repository" >&2
repo="$work/repo"
mkdir -p "$repo/models"
git -C "$repo" init -q
cp fixtures/corpus/ok-torch-state-dict.pt "$repo/models/good.pt"
printf 'requests==2.32.0\n' > "$repo/requirements.txt"
git -C "$repo" add -A
# try-repo runs this checkout's .pre-commit-hooks.yaml (uncommitted changes included).
(cd "$repo" && "${clean[@]}" pre-commit try-repo "$root" pickguard-scan --all-files >/dev/null) \
  || { echo "test-wheel: pickguard-scan failed on a clean model" >&2; exit 1; }
cp fixtures/corpus/mal-append-sys-path.pkl "$repo/models/bad.pkl"
git -C "$repo" add -A
if (cd "$repo" && "${clean[@]}" pre-commit try-repo "$root" pickguard-scan --all-files > "$work/pc.log" 2>&1); then
  echo "test-wheel: pickguard-scan passed a malicious model" >&2; cat "$work/pc.log" >&2; exit 1
fi
grep -q "PG101" "$work/pc.log" || { echo "test-wheel: the hook's output does not name the rule" >&2; cat "$work/pc.log" >&2; exit 1; }
(cd "$repo" && "${clean[@]}" pre-commit try-repo "$root" pickguard-audit --all-files > "$work/pc-audit.log" 2>&1) || true
grep -q "pickguard audit" "$work/pc-audit.log" || { echo "test-wheel: pickguard-audit hook did not run" >&2; cat "$work/pc-audit.log" >&2; exit 1; }
echo "test-wheel: ok" >&2
