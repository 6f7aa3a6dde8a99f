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
cleanup() { kill $(jobs -p) 2>/dev/null || true; [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; }
trap cleanup EXIT
$BIN mock-llm --port $MOCK --tokens 20 --token-delay-ms 0 >/dev/null &
$BIN serve --host 127.0.0.1 --port $HUB --quiet --participant-timeout-ms 86400000 &
$BIN serve --host 127.0.0.1 --port $HUB1 --quiet --participant-timeout-ms 86400000 --threads 1 &
cat > "$WORK/nginx.conf" <<NGX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream mock { server 127.0.0.1:$MOCK; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX;
    location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
NGX
nginx -c "$WORK/nginx.conf" -p "$WORK"
sleep 0.5
room() {
  local port=$1 code
  code=$(curl -s -XPOST localhost:$port/rooms -d '{"name":"bench"}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["room"]["code"])')
  curl -s -XPOST localhost:$port/rooms/$code/join -d "{\"id\":\"mock\",\"nickname\":\"mock\",\"model\":\"llama3\",\"endpoint\":\"http://127.0.0.1:$MOCK\"}" >/dev/null
  echo "$code"
}
C1=$(room $HUB); C2=$(room $HUB1)
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
