#!/usr/bin/env bash
# pickguard against ModelAudit on GGUF, ONNX and zstd, side by side, as whole
# processes (hyperfine), plus what each reports on the committed fixtures.
# Not part of CI. Usage: bench/formats.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
work=bench/work/formats
mkdir -p "$work"
eval "$(scripts/setup-test-env.sh)"              # gguf, onnx, numpy to make the inputs
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pickguard"
mvenv="$cache/modelaudit-venv"
if [ ! -x "$mvenv/bin/modelaudit" ]; then
  python3 -m venv "$mvenv"
  "$mvenv/bin/pip" install --quiet -r bench/modelaudit-requirements.txt
fi
command -v hyperfine >/dev/null || { if [ "$(id -u)" = 0 ]; then apt-get install -y -qq hyperfine >/dev/null; else sudo apt-get install -y -qq hyperfine >/dev/null; fi; }
"$PICKGUARD_PYTHON" bench/formats_inputs.py "$work"
cargo build --release --locked --quiet
pg="$PWD/target/release/pickguard"
ma="$mvenv/bin/modelaudit"
results="$work/results.md"
{
  echo "### Verdicts on the committed fixtures"
  echo
  echo "| file | expected | pickguard | ModelAudit (issues by severity) |"
  echo "|---|---|---|---|"
  for f in "$work"/fixtures/*.gguf "$work"/fixtures/*.onnx "$work"/fixtures/*.zst; do
    n=$(basename "$f")
    want=$(python3 -c "import json,sys; m=json.load(open('fixtures/corpus/manifest.json')); print(next(x['expect'] for x in m['fixtures'] if x['name']==sys.argv[1]))" "$n")
    # scan exits 1/2 for non-clean files: the verdict is what matters here.
    got=$("$pg" scan --format json "$f" | python3 -c "import json,sys; print(json.load(sys.stdin)['files'][0]['verdict'])") || true
    mag=$("$ma" scan --format json "$f" 2>/dev/null | python3 -c "
import json,sys,collections
d=json.load(sys.stdin); c=collections.Counter(i.get('severity') for i in d.get('issues',[]))
print(', '.join(f'{k} {v}' for k,v in sorted(c.items())) or 'none')") || true
    echo "| $n | $want | $got | $mag |"
  done
  echo
} > "$results"
for input in llm-q8.gguf many.onnx external/many.onnx fixtures; do
  hyperfine --warmup 1 --runs "$runs" -N -i --export-markdown "$work/t.md" \
    -n pickguard "$pg scan --no-progress --format json $work/$input" \
    -n modelaudit "$ma scan --format json $work/$input" >&2
  { echo "### $input"; cat "$work/t.md"; echo; } >> "$results"
done
cat "$results"
