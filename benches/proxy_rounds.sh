#!/usr/bin/env bash
# The proxy comparison of benches/proxy_compare.sh, in interleaved rounds (the machine is
# shared and noisy: one long run per target would compare different moments). Each round runs
# every row (non-streaming and streaming, 1 and 64 connections) against every target (the
# upstream directly, the hub, the hub on one thread, nginx with 1 worker) back to back, and
# the non-streaming rows against the floor of a tokio proxy too (benches/proxy_floor.rs: no
# features, the same runtime; "floor" with tokio's default threads, "floor-1t" on one). Per
# row and target it prints the medians over the rounds of req/s, p50 latency and the CPU the
# proxy process spent per request (utime+stime from /proc/PID/stat, which scheduling noise
# moves less), and each target's ratio to nginx taken within each round (paired), as
# "median [min-max]".
#
#   bash benches/proxy_rounds.sh [ROUNDS] [SECONDS_PER_RUN]
#
# BEFORE=/path/to/an/older/gambiarra adds that build's hub as a target ("before"), to measure a
# change in the same rounds (e.g. `git worktree add /tmp/old REV` and build it there).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECS=${2:-3}
BIN=target/release/gambiarra
cargo build --release --quiet
cargo build --release --quiet --bench proxy_floor
FLOOR=$(ls -t target/release/deps/proxy_floor-* | grep -v '\.d$' | head -1)
WORK=$(mktemp -d)
MOCK=18481; HUB=18482; HUB1=18483; NGINX=18484
source benches/common.sh
trap cleanup EXIT
start_mock $MOCK 20
start_hub $HUB
start_hub $HUB1 --threads 1
start_nginx $NGINX $MOCK
FLOOR_PORT=18486; FLOOR1_PORT=18487
"$FLOOR" $FLOOR_PORT $MOCK &
FLOOR_PID=$!
"$FLOOR" $FLOOR1_PORT $MOCK 1 &
FLOOR1_PID=$!
OLD=18485
[ -n "${BEFORE:-}" ] && BIN=$BEFORE start_hub $OLD
sleep 0.5
C1=$(make_room $HUB $MOCK); C2=$(make_room $HUB1 $MOCK)
[ -n "${BEFORE:-}" ] && C0=$(make_room $OLD $MOCK)
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)
MOCK_PID=$(pgrep -f "mock-llm --port $MOCK" | head -1)
for r in $(seq 1 "$ROUNDS"); do
  for mode in "" "--stream"; do
    for c in 1 64; do
      row="${mode:-plain} c=$c"
      measure "$r|$row|direct" "$MOCK_PID" -c $c -d "${SECS}s" $mode --hub http://127.0.0.1:$MOCK --path /v1/chat/completions
      if [ -n "${BEFORE:-}" ]; then
        measure "$r|$row|before" "$(pid_of $OLD)" -c $c -d "${SECS}s" $mode --hub http://127.0.0.1:$OLD --room "$C0"
      fi
      measure "$r|$row|hub" "$(pid_of $HUB)" -c $c -d "${SECS}s" $mode --hub http://127.0.0.1:$HUB --room "$C1"
      measure "$r|$row|hub-1t" "$(pid_of $HUB1)" -c $c -d "${SECS}s" $mode --hub http://127.0.0.1:$HUB1 --room "$C2"
      measure "$r|$row|nginx" "$NGINX_WORKER" -c $c -d "${SECS}s" $mode --hub http://127.0.0.1:$NGINX --path /v1/chat/completions
      if [ -z "$mode" ]; then
        measure "$r|$row|floor" "$FLOOR_PID" -c $c -d "${SECS}s" --hub http://127.0.0.1:$FLOOR_PORT --path /v1/chat/completions
        measure "$r|$row|floor-1t" "$FLOOR1_PID" -c $c -d "${SECS}s" --hub http://127.0.0.1:$FLOOR1_PORT --path /v1/chat/completions
      fi
    done
  done
done | rounds_table
