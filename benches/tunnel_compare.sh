#!/usr/bin/env bash
# Tunnel path vs direct path, in interleaved rounds: the same hub and upstream (mock-llm), one
# participant joined --direct, one through reverse tunnels (the agent splices each tunnel to a
# keep-alive connection of the mock), and — the floor of any extra hop — one joined --direct
# through nginx's TCP proxy (`stream`, C, no parsing) in front of the same mock. The same load
# tool targets each by id. Per row: medians over the rounds, the CPU per request of the process
# named (the agent for the tunnel, nginx for the spliced path, the mock for direct), and the
# ratio to direct paired within each round. Needs nginx with the stream module
# (Debian: libnginx-mod-stream).
#
#   bash benches/tunnel_compare.sh [ROUNDS] [SECONDS_PER_RUN] [TUNNELS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECS=${2:-3}
TUNNELS=${3:-32}
BIN=target/release/gambiarra
cargo build --release --quiet
MOCK=18591; HUB=18592; SPLICE=18593
WORK=$(mktemp -d)
source benches/common.sh
trap cleanup EXIT
start_mock $MOCK 20
start_hub $HUB
MOD=$(ls /usr/lib/nginx/modules/ngx_stream_module.so 2>/dev/null || true)
cat > "$WORK/nginx.conf" <<NGX
${MOD:+load_module $MOD;}
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 4096; }
stream { server { listen 127.0.0.1:$SPLICE; proxy_pass 127.0.0.1:$MOCK; } }
NGX
nginx -c "$WORK/nginx.conf" -p "$WORK"
sleep 0.5
H=http://127.0.0.1:$HUB
CODE=$($BIN create --name tunnels --hub $H --json | python3 -c 'import sys,json;print(json.load(sys.stdin)["room"]["code"])')
$BIN join --code $CODE --model llama3 --endpoint http://127.0.0.1:$MOCK --hub $H --id direct --direct --no-specs >/dev/null 2>&1 &
$BIN join --code $CODE --model llama3 --endpoint http://127.0.0.1:$MOCK --hub $H --id tunnel --tunnels $TUNNELS --no-specs >/dev/null 2>&1 &
AGENT=$!
$BIN join --code $CODE --model llama3 --endpoint http://127.0.0.1:$SPLICE --hub $H --id spliced --direct --no-specs >/dev/null 2>&1 &
sleep 1.5
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)
MOCK_PID=$(pgrep -f "mock-llm --port $MOCK" | head -1)
for r in $(seq 1 "$ROUNDS"); do
  for mode in "" "--stream"; do
    for c in 1 16; do
      row="${mode:-plain} c=$c"
      measure "$r|$row|direct" "$MOCK_PID" --hub $H --room $CODE --model direct -c $c -d "${SECS}s" $mode
      measure "$r|$row|tunnel" "$AGENT" --hub $H --room $CODE --model tunnel -c $c -d "${SECS}s" $mode
      measure "$r|$row|spliced" "$NGINX_WORKER" --hub $H --room $CODE --model spliced -c $c -d "${SECS}s" $mode
    done
  done
done | rounds_table direct
