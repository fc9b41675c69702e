#!/usr/bin/env bash
# pickguard convert against torch.load + safetensors.save_file on a >= 1 GB
# checkpoint: wall time (hyperfine) and peak memory (/usr/bin/time -v).
# Usage: bench/convert.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
work=bench/work
mkdir -p "$work"
eval "$(scripts/setup-test-env.sh)"
command -v hyperfine >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq hyperfine >/dev/null; }
[ -x /usr/bin/time ] || { [ "$(id -u)" = 0 ] && apt-get install -y -qq time >/dev/null; }
in="$work/big-1g.pt"
if [ ! -f "$in" ]; then
  # 256 float32 tensors of 1024x1024: 1 GiB.
  "$PICKGUARD_PYTHON" -c "import torch,sys; torch.save({f'layers.{i}.weight': torch.randn(1024, 1024) for i in range(256)}, sys.argv[1])" "$in"
fi
cargo build --release --locked --quiet
pg="$PWD/target/release/pickguard"
hyperfine --warmup 1 --runs "$runs" -N --export-markdown "$work/convert.md" \
  -n pickguard "$pg convert --force $in -o $work/out-pg.safetensors" \
  -n torch+safetensors "$PICKGUARD_PYTHON bench/convert_baseline.py $in $work/out-py.safetensors" >&2
peak() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}'; }
a=$(peak "$pg" convert --force "$in" -o "$work/out-pg.safetensors")
b=$(peak "$PICKGUARD_PYTHON" bench/convert_baseline.py "$in" "$work/out-py.safetensors")
cmp -s <(tail -c +1 "$work/out-pg.safetensors" | wc -c) <(tail -c +1 "$work/out-py.safetensors" | wc -c) || echo "note: output sizes differ" >&2
{
  cat "$work/convert.md"
  echo
  echo "| peak RSS | KiB |"
  echo "|---|---:|"
  echo "| pickguard | $a |"
  echo "| torch+safetensors | $b |"
  awk -v a="$a" -v b="$b" 'BEGIN { printf "\nmemory ratio (torch+safetensors / pickguard): %.1f\n", b / a }'
} | tee "$work/convert-results.md"
