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
pid_of() { pgrep -f "gambiarra serve --host 127.0.0.1 --port $1 " | head -1; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
one() { # name pid bench-args...
  local name=$1 pid=$2; shift 2
  local t0 t1 out
  t0=$(ticks "$pid")
  out=$($BIN bench --json -c 64 -d "${SECS}s" "$@")
  t1=$(ticks "$pid")
  python3 -c 'import sys,json; r=json.loads(sys.argv[1]); print(sys.argv[2], round(r["requestsPerSecond"]), round((int(sys.argv[4])-int(sys.argv[3]))/int(sys.argv[5])*1e6/max(r["requests"],1),2))' "$out" "$name" "$t0" "$t1" "$HZ"
}
for r in $(seq 1 "$ROUNDS"); do
  one hub "$(pid_of $HUB)" --hub http://127.0.0.1:$HUB --room "$C1"
  one hub-1t "$(pid_of $HUB1)" --hub http://127.0.0.1:$HUB1 --room "$C2"
  one nginx "$NGINX_WORKER" --hub http://127.0.0.1:$NGINX --path /v1/chat/completions
done | python3 -c '
import sys, statistics
rows = {}
for line in sys.stdin:
    name, rps, cpu = line.split()
    rows.setdefault(name, []).append((int(rps), float(cpu)))
print("%-7s %s" % ("proxy", "median req/s   median CPU us/request   (rounds: req/s)"))
for name, v in rows.items():
    print("%-7s %12.0f   %21.2f   %s" % (name, statistics.median(r for r, _ in v), statistics.median(c for _, c in v), " ".join(str(r) for r, _ in v)))
'
