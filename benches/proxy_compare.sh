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
MOCK=18181; HUB=18182; NGINX=18183
cleanup() { kill $(jobs -p) 2>/dev/null || true; [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; }
trap cleanup EXIT

$BIN mock-llm --port $MOCK --tokens ${TOKENS:-20} --token-delay-ms 0 >/dev/null &
# No health checks are sent during the run: keep the participant online throughout.
$BIN serve --host 127.0.0.1 --port $HUB --quiet --participant-timeout-ms 86400000 &
# Like for like with nginx's single worker: the hub on one thread.
HUB1=18184
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
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGX
nginx -c "$WORK/nginx.conf" -p "$WORK"
sleep 0.5
CODE=$(curl -s -XPOST localhost:$HUB/rooms -d '{"name":"bench"}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["room"]["code"])')
curl -s -XPOST localhost:$HUB/rooms/$CODE/join -d "{\"id\":\"mock\",\"nickname\":\"mock\",\"model\":\"llama3\",\"endpoint\":\"http://127.0.0.1:$MOCK\"}" >/dev/null
CODE1=$(curl -s -XPOST localhost:$HUB1/rooms -d '{"name":"bench"}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["room"]["code"])')
curl -s -XPOST localhost:$HUB1/rooms/$CODE1/join -d "{\"id\":\"mock\",\"nickname\":\"mock\",\"model\":\"llama3\",\"endpoint\":\"http://127.0.0.1:$MOCK\"}" >/dev/null

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
