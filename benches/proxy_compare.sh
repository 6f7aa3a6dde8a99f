#!/usr/bin/env bash
# Side-by-side proxy benchmark, one run: the same fast upstream (gambiarra mock-llm, no token
# delay) reached directly, through the hub, and through nginx (1 worker, upstream keep-alive,
# buffering off) — all loaded by the same tool (gambiarra bench). Needs nginx on PATH.
#
#   bash benches/proxy_compare.sh [DURATION] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10s}
CONC=${2:-64}
BIN=target/release/gambiarra
cargo build --release --quiet
WORK=$(mktemp -d)
MOCK=18181; HUB=18182; HUB1=18184; NGINX=18183
source benches/common.sh
trap cleanup EXIT
start_mock $MOCK "${TOKENS:-20}"
start_hub $HUB
# Like for like with nginx's single worker: the hub on one thread.
start_hub $HUB1 --threads 1
start_nginx $NGINX $MOCK
sleep 0.5
CODE=$(make_room $HUB $MOCK)
CODE1=$(make_room $HUB1 $MOCK)

run() { # name, bench args...
  local name=$1; shift
  printf '%-8s ' "$name"
  $BIN bench --json "$@" | python3 -c 'import sys,json; r=json.load(sys.stdin); print("req/s %8.0f  p50 %6.2f ms  p99 %6.2f ms  ttft p50 %6.2f p99 %6.2f ms  tok/s %8.0f  errors %d" % (r["requestsPerSecond"], r["latencyMsP50"], r["latencyMsP99"], r["ttftMsP50"], r["ttftMsP99"], r["tokensPerSecond"], r["errors"]))'
}
for mode in "" "--stream"; do
  for c in 1 $CONC; do
    echo "== ${mode:-non-streaming} concurrency $c, $DUR"
    run direct --hub http://127.0.0.1:$MOCK --path /v1/chat/completions -c $c -d $DUR $mode
    run hub    --hub http://127.0.0.1:$HUB --room $CODE -c $c -d $DUR $mode
    run hub-1t --hub http://127.0.0.1:$HUB1 --room $CODE1 -c $c -d $DUR $mode
    run nginx  --hub http://127.0.0.1:$NGINX --path /v1/chat/completions -c $c -d $DUR $mode
  done
done
echo "hub RSS after load: $(ps -o rss= -p "$(pgrep -f "gambiarra serve --host 127.0.0.1 --port $HUB")") KiB"
