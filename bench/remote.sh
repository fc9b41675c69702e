#!/usr/bin/env bash
# Remote scans: `pickguard scan URL` (range requests; tensors not fetched)
# against downloading the file and scanning it (curl, then pickguard; curl,
# then modelaudit), on loopback, with the bytes each fetches. Not part of CI. Usage:
#   bench/remote.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
work=bench/work/remote
mkdir -p "$work"
eval "$(scripts/setup-test-env.sh)"
if ! command -v hyperfine >/dev/null; then
  echo "bench: installing hyperfine (Debian package)" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq hyperfine >/dev/null; else sudo apt-get install -y -qq hyperfine >/dev/null; fi
fi
command -v curl >/dev/null || { echo "bench: curl is needed" >&2; exit 1; }
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pickguard"
mvenv="$cache/modelaudit-venv"
if [ ! -x "$mvenv/bin/modelaudit" ]; then
  python3 -m venv "$mvenv"
  "$mvenv/bin/pip" install --quiet -r bench/modelaudit-requirements.txt
fi
cargo build --release --locked --quiet
pg="$PWD/target/release/pickguard"
# Models from their real producers (torch, gguf-py, safetensors), 16 MB each,
# and a 1 GiB torch checkpoint.
[ -f "$work/big.pt" ] || "$PICKGUARD_PYTHON" fixtures/gen/remote_models.py "$work"
[ -f "$work/huge.pt" ] || "$PICKGUARD_PYTHON" -c "import torch; torch.save({'w%d' % i: torch.randn(1 << 24) for i in range(16)}, '$work/huge.pt')"
rm -f "$work/port"
python3 bench/range_server.py "$work" "$work/port" 900 & server=$!
trap 'kill $server 2>/dev/null' EXIT
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
url="http://127.0.0.1:$(cat "$work/port")"
results="$work/results.md"
: > "$results"
for f in huge.pt big.pt big.gguf big-vocab-ssti.gguf big.safetensors; do
  size=$(stat -c %s "$work/$f")
  fetched=$("$pg" scan --no-progress -f json "$url/$f" | python3 -c "import json,sys; print(json.load(sys.stdin)['files'][0]['fetched']['bytes'])" || true)
  echo "### $f ($size bytes; pickguard fetched $fetched)" >> "$results"
  cmds=(-n "pickguard scan URL" "$pg scan --no-progress -f json -o /dev/null $url/$f"
        -n "curl + pickguard scan" "sh -c 'curl -s -o $work/dl.$f $url/$f && $pg scan --no-progress -f json -o /dev/null $work/dl.$f; rm -f $work/dl.$f'")
  cmds+=(-n "curl + modelaudit" "sh -c 'curl -s -o $work/dl.$f $url/$f && $mvenv/bin/modelaudit scan $work/dl.$f >/dev/null; rm -f $work/dl.$f'")
  hyperfine --warmup 1 --runs "$runs" -i --export-markdown "$work/$f.md" "${cmds[@]}" >&2
  cat "$work/$f.md" >> "$results"
  echo >> "$results"
done
cat "$results"
