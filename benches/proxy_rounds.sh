#!/usr/bin/env bash
# Non-streaming proxy throughput at 64 connections, hub vs nginx, in interleaved rounds (the
# machine is shared and noisy): the median req/s of each, and the CPU time each proxy process
# spends per request (utime+stime from /proc/PID/stat), which scheduling noise does not move.
#
#   bash benches/proxy_rounds.sh [ROUNDS] [SECONDS_PER_ROUND]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECS=${2:-5}
BIN=target/release/gambiarra
cargo build --release --quiet
WORK=$(mktemp -d)
MOCK=18481; HUB=18482; HUB1=18483; NGINX=18484
source benches/common.sh
trap cleanup EXIT
start_mock $MOCK 20
start_hub $HUB
start_hub $HUB1 --threads 1
start_nginx $NGINX $MOCK
sleep 0.5
C1=$(make_room $HUB $MOCK); C2=$(make_room $HUB1 $MOCK)
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)
for r in $(seq 1 "$ROUNDS"); do
  measure hub "$(pid_of $HUB)" -c 64 -d "${SECS}s" --hub http://127.0.0.1:$HUB --room "$C1"
  measure hub-1t "$(pid_of $HUB1)" -c 64 -d "${SECS}s" --hub http://127.0.0.1:$HUB1 --room "$C2"
  measure nginx "$NGINX_WORKER" -c 64 -d "${SECS}s" --hub http://127.0.0.1:$NGINX --path /v1/chat/completions
done | medians
