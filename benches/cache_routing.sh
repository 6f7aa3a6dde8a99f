#!/usr/bin/env bash
# Cache-aware against least-loaded routing, side by side in one run, on mock participants that
# model prompt processing and a KV cache (mock-llm --prefill-us-per-byte, --kv-cache): two
# participants with one slot each, and `gambiarra bench --conversations` running N chats of T
# turns at once, every turn the whole history after a shared system prompt. Each round starts
# fresh mocks (cold caches) for each policy; rounds alternate which policy goes first.
#
#   bash benches/cache_routing.sh [ROUNDS] [CONVERSATIONS] [TURNS]
#
# The defaults are SmolLM2-135M on one thread of these machines, ten times faster: measured
# with llama-cpp-python, a 1.7 KB prompt's first token took 4.7 s cold and 0.04 s cached
# (about 2.7 ms per uncached byte) and tokens came 31 ms apart; so PREFILL (µs per uncached
# prompt byte) 270 and DELAY (ms per token) 3. KV (prompts each mock's cache holds, default 4)
# and TOKENS (per answer, default 32) complete the model.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
CONVS=${2:-8}
TURNS=${3:-6}
PREFILL=${PREFILL:-270}
KV=${KV:-4}
TOKENS=${TOKENS:-32}
DELAY=${DELAY:-3}
BIN=target/release/gambiarra
cargo build --release --quiet
WORK=$(mktemp -d)
HUB=18191
source benches/common.sh
trap cleanup EXIT
start_hub $HUB ${HUB_FLAGS:-}
sleep 0.3
port=18200
one() { # policy — prints the bench's JSON report
  local a=$port b=$((port + 1)); port=$((port + 2))
  local pids=()
  for p in $a $b; do
    "$BIN" mock-llm --port $p --tokens "$TOKENS" --token-delay-ms "$DELAY" --slots 1 \
      --prefill-us-per-byte "$PREFILL" --kv-cache "$KV" >"$WORK/mock-$p.out" &
    pids+=($!)
  done
  sleep 0.3
  local code
  code=$(new_room $HUB "$1")
  join_room $HUB "$code" a $a 1
  join_room $HUB "$code" b $b 1
  "$BIN" bench --hub http://127.0.0.1:$HUB --room "$code" --model '*' \
    --conversations "$CONVS" --turns "$TURNS" --system-bytes 1500 --think-ms "${THINK:-0}" --json
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  cat "$WORK/mock-$a.out" "$WORK/mock-$b.out" | grep '^Prompt bytes' >&2 || true
}
echo "$CONVS conversations × $TURNS turns, 2 participants × 1 slot; prefill ${PREFILL} µs/byte, KV cache $KV prompts, $TOKENS tokens × $DELAY ms"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="least-loaded cache-aware"; else order="cache-aware least-loaded"; fi
  for policy in $order; do
    one "$policy" | python3 -c 'import sys,json; r=json.load(sys.stdin); print("%-13s TTFT ms p50 %7.1f p90 %7.1f   latency p50 %7.1f   total %5.2f s   errors %d   TTFT p50 by turn %s" % (sys.argv[1], r["ttftMsP50"], r["ttftMsP90"], r["latencyMsP50"], r["seconds"], r["errors"], " ".join("%.0f" % t for t in r["ttftMsP50ByTurn"])))' "$policy"
  done
done
