#!/usr/bin/env bash
# Tunnel path vs direct path, one run: the same hub and upstream (mock-llm), one participant
# joined --direct and one through reverse tunnels; the same load tool targets each by id.
#
#   bash benches/tunnel_compare.sh [DURATION] [CONCURRENCY] [TUNNELS]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10s}
CONC=${2:-16}
TUNNELS=${3:-32}
BIN=target/release/gambiarra
cargo build --release --quiet
MOCK=18591; HUB=18592
WORK=$(mktemp -d)
source benches/common.sh
trap cleanup EXIT
start_mock $MOCK 20
start_hub $HUB
sleep 0.5
H=http://127.0.0.1:$HUB
CODE=$($BIN create --name tunnels --hub $H --json | python3 -c 'import sys,json;print(json.load(sys.stdin)["room"]["code"])')
$BIN join --code $CODE --model llama3 --endpoint http://127.0.0.1:$MOCK --hub $H --id direct --direct --no-specs >/dev/null &
$BIN join --code $CODE --model llama3 --endpoint http://127.0.0.1:$MOCK --hub $H --id tunnel --tunnels $TUNNELS --no-specs >/dev/null &
sleep 1.5
run() {
  printf '%-7s ' "$1"; shift
  $BIN bench --json --hub $H --room $CODE "$@" | python3 -c 'import sys,json; r=json.load(sys.stdin); print("req/s %7.0f  p50 %6.2f ms  p99 %6.2f ms  ttft p50 %6.2f p99 %6.2f ms  errors %d" % (r["requestsPerSecond"], r["latencyMsP50"], r["latencyMsP99"], r["ttftMsP50"], r["ttftMsP99"], r["errors"]))'
}
for mode in "" "--stream"; do
  for c in 1 $CONC; do
    echo "== ${mode:-non-streaming} concurrency $c, $DUR ($TUNNELS tunnels)"
    run direct --model direct -c $c -d $DUR $mode
    run tunnel --model tunnel -c $c -d $DUR $mode
  done
done
