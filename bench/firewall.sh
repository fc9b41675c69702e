#!/usr/bin/env bash
# Cached simple-page throughput and latency on loopback (wrk, 1000
# connections): pickguard firewall, devpi-server and proxpi, each proxying
# the same local upstream, one after the other. Usage: bench/firewall.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
work="$PWD/bench/work/firewall"
rm -rf "$work"; mkdir -p "$work"
eval "$(scripts/setup-test-env.sh)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pickguard"
bvenv="$cache/bench-venv"
[ -x "$bvenv/bin/python" ] || python3 -m venv "$bvenv"
"$bvenv/bin/pip" install --quiet -r bench/requirements.txt
for t in wrk curl; do
  command -v $t >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq $t >/dev/null; }
done
ulimit -n 65536 || true
cargo build --release --locked --quiet
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$PICKGUARD_PYTHON" fixtures/gen/index_fixture.py "$work/indexes" >/dev/null
"$PICKGUARD_PYTHON" fixtures/gen/serve_index.py "$work/indexes/public" 0 "$work/upstream.log" > "$work/up.port" & pids+=($!)
sleep 1; up=$(head -1 "$work/up.port")
upurl="http://127.0.0.1:$up/simple/"
# pickguard
cat > "$work/fw.toml" <<TOML
listen = "127.0.0.1:18001"
data_dir = "$work/pg-data"
page_ttl_secs = 600
[[upstream]]
name = "pypi"
url = "$upurl"
TOML
target/release/pickguard firewall serve --config "$work/fw.toml" 2>"$work/pg.log" & pids+=($!)
# proxpi (gunicorn, as its docs deploy it)
PROXPI_INDEX_URL="$upurl" PROXPI_INDEX_TTL=600 "$bvenv/bin/gunicorn" -w 2 -b 127.0.0.1:18002 --log-level warning 'proxpi.server:app' 2>"$work/proxpi.log" & pids+=($!)
# devpi-server with a mirror index of the same upstream
"$bvenv/bin/devpi-init" --serverdir "$work/devpi" --root-passwd root >/dev/null 2>&1
"$bvenv/bin/devpi-server" --serverdir "$work/devpi" --host 127.0.0.1 --port 18003 >"$work/devpi.log" 2>&1 & pids+=($!)
for i in $(seq 1 60); do curl -sf http://127.0.0.1:18003/+api >/dev/null && break; sleep 0.5; done
dc="$bvenv/bin/devpi"
export DEVPI_CLIENTDIR="$work/devpi-client"
$dc use http://127.0.0.1:18003 >/dev/null && $dc login root --password root >/dev/null
$dc index -c root/up type=mirror mirror_url="$upurl" mirror_cache_expiry=600 >/dev/null
sleep 1
accept='Accept: application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01'
declare -A urls=([pickguard]="http://127.0.0.1:18001/simple/publicdep/" [proxpi]="http://127.0.0.1:18002/index/publicdep/" [devpi]="http://127.0.0.1:18003/root/up/+simple/publicdep/")
out="$work/results.md"
echo "| server | requests/s | p50 | p99 | errors |" > "$out"
echo "|---|---:|---:|---:|---:|" >> "$out"
for s in pickguard proxpi devpi; do
  u=${urls[$s]}
  for i in 1 2 3; do curl -sf -H "$accept" "$u" >/dev/null || true; done      # warm the cache
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "$accept" "$u")
  [ "$code" = 200 ] || { echo "$s answered $code for $u" >&2; continue; }
  wrk -t2 -c1000 -d"${secs}s" --latency -H "$accept" "$u" > "$work/$s.wrk" 2>&1 || true
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/$s.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$work/$s.wrk")
  p99=$(awk '$1=="99%" {print $2}' "$work/$s.wrk")
  errs=$(awk '/Socket errors|Non-2xx/ {printf "%s ", $0}' "$work/$s.wrk")
  echo "| $s | $rps | $p50 | $p99 | ${errs:-0} |" >> "$out"
done
cat "$out"
