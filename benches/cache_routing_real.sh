#!/usr/bin/env bash
# Cache-aware against least-loaded routing on real models, side by side in one run: two
# llama.cpp servers (llama-cpp-python, one thread each, so the two cores are shared evenly)
# serving SmolLM2-135M, each keeping the states of recent prompts in RAM (--cache: a request
# resumes from the longest cached prefix of its prompt) and joined with one slot (the server
# runs one request at a time). `gambiarra bench --conversations` runs N chats of T turns at
# once, every turn the whole history after a shared system prompt. Each round restarts both
# servers (cold caches) for each policy; rounds alternate which policy goes first.
#
#   bash benches/cache_routing_real.sh [ROUNDS] [CONVERSATIONS] [TURNS]
#
# MAX_TOKENS (per answer, default 32) and THINK (mean ms between turns, default 0) tune the
# workload; CACHE_BYTES (default 1 GiB: every state of the run fits) bounds each server's
# prompt cache, as a GPU's memory bounds vLLM's or Ollama's (a state here is 1–2 MB). Installs what it needs with tests/real_model/setup.sh (cached).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
CONVS=${2:-8}
TURNS=${3:-6}
MAX_TOKENS=${MAX_TOKENS:-32}
BIN=target/release/gambiarra
cargo build --release --quiet
MODEL=$(bash tests/real_model/setup.sh | tail -1)
PY="$(dirname "$MODEL")/venv/bin/python"
WORK=$(mktemp -d)
HUB=18291
source benches/common.sh
trap cleanup EXIT
start_hub $HUB ${HUB_FLAGS:-}
port=18300
ready() { # PORT — wait for a llama server to answer
  for _ in $(seq 600); do
    curl -sf "127.0.0.1:$1/v1/models" >/dev/null && return 0
    sleep 0.2
  done
  echo "llama server on $1 did not start" >&2; return 1
}
one() { # policy — prints the bench's JSON report
  local a=$port b=$((port + 1)); port=$((port + 2))
  local pids=()
  for p in $a $b; do
    "$PY" -m llama_cpp.server --model "$MODEL" --model_alias smollm2 --host 127.0.0.1 --port $p \
      --n_ctx 2048 --n_threads 1 --n_threads_batch 1 --cache true --cache_type ram \
      --cache_size "${CACHE_BYTES:-1073741824}" --interrupt_requests false >"$WORK/llama-$p.log" 2>&1 &
    pids+=($!)
  done
  ready $a; ready $b
  local code
  code=$(new_room $HUB "$1")
  join_room $HUB "$code" a $a 1 smollm2
  join_room $HUB "$code" b $b 1 smollm2
  "$BIN" bench --hub http://127.0.0.1:$HUB --room "$code" --model smollm2 \
    --conversations "$CONVS" --turns "$TURNS" --system-bytes 1500 --think-ms "${THINK:-0}" \
    --extra "\"max_tokens\":$MAX_TOKENS,\"temperature\":0,\"seed\":1" --json
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
echo "$CONVS conversations × $TURNS turns on 2 SmolLM2 servers × 1 slot, $MAX_TOKENS tokens per answer, think ${THINK:-0} ms, prompt cache ${CACHE_BYTES:-1073741824} bytes each"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="least-loaded cache-aware"; else order="cache-aware least-loaded"; fi
  for policy in $order; do
    one "$policy" | python3 -c 'import sys,json; r=json.load(sys.stdin); print("%-13s TTFT ms p50 %7.1f p90 %7.1f   latency p50 %7.1f   total %6.2f s   errors %d   tokens %d   TTFT p50 by turn %s" % (sys.argv[1], r["ttftMsP50"], r["ttftMsP90"], r["latencyMsP50"], r["seconds"], r["errors"], r["tokens"], " ".join("%.0f" % t for t in r["ttftMsP50ByTurn"])))' "$policy"
  done
done
