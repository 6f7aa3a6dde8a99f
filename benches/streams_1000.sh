#!/usr/bin/env bash
# 1,000 concurrent streams of 200 tokens (20 ms apart, like a real model) through the hub vs
# straight to the upstream, same tool, one run: every stream must complete with all its tokens;
# the hub's added time-to-first-token is the difference of the two TTFT percentiles.
#
#   bash benches/streams_1000.sh [STREAMS] [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
DUR=${2:-20s}
BIN=target/release/gambiarra
cargo build --release --quiet
MOCK=18191; HUB=18192
WORK=$(mktemp -d)
source benches/common.sh
trap cleanup EXIT
start_mock $MOCK 200 20
start_hub $HUB
sleep 0.5
CODE=$(make_room $HUB $MOCK)
HUB_PID=$(pgrep -f "gambiarra serve --host 127.0.0.1 --port $HUB")
report() {
  python3 -c 'import sys,json; r=json.load(sys.stdin); print("streams %6d  errors %d  tokens/stream %.1f  ttft p50 %6.2f ms  p99 %6.2f ms  tok/s %7.0f" % (r["requests"], r["errors"], r["tokens"]/max(r["requests"],1), r["ttftMsP50"], r["ttftMsP99"], r["tokensPerSecond"]))'
}
printf 'direct  '; $BIN bench --json --hub http://127.0.0.1:$MOCK --path /v1/chat/completions -c $N -d $DUR --stream | report
( sleep 10; echo "hub RSS under load: $(ps -o rss= -p $HUB_PID) KiB" >&2 ) &
printf 'hub     '; $BIN bench --json --hub http://127.0.0.1:$HUB --room $CODE -c $N -d $DUR --stream | report
wait %3 2>/dev/null || true
