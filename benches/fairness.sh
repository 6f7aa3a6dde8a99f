#!/usr/bin/env bash
# Fairness of the room's queue, in one run: two participants with two slots each (mock-llm,
# TOKENS tokens DELAY ms apart, so a request holds its slot about TOKENS×DELAY ms), one greedy
# client keeping 32 requests in flight and four light clients keeping one each. First each
# light client alone, then all together; every client is its own API key (gambiarra bench
# --client). Reports each client's throughput and latency, the light clients' p99 against
# alone, and Jain's fairness index of the five clients' throughputs.
#
#   bash benches/fairness.sh [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10s}
TOKENS=${TOKENS:-20}
DELAY=${DELAY:-5}
BIN=target/release/gambiarra
cargo build --release --quiet
WORK=$(mktemp -d)
HUB=18391; A=18392; B=18393
source benches/common.sh
trap cleanup EXIT
start_mock $A "$TOKENS" "$DELAY"
start_mock $B "$TOKENS" "$DELAY"
start_hub $HUB ${HUB_FLAGS:-}
sleep 0.5
CODE=$(new_room $HUB "${ROUTING:-cache-aware}")
join_room $HUB "$CODE" a $A 2
join_room $HUB "$CODE" b $B 2
bench() { "$BIN" bench --hub http://127.0.0.1:$HUB --room "$CODE" --stream -d "$DUR" --json "$@"; }
echo "2 participants × 2 slots, $TOKENS tokens × $DELAY ms, $DUR per run"
bench --client light=1 >"$WORK/alone.json"
bench --client greedy=32 --client light1=1 --client light2=1 --client light3=1 --client light4=1 >"$WORK/mixed.json"
python3 - "$WORK/alone.json" "$WORK/mixed.json" <<'PY'
import json, sys
alone = json.load(open(sys.argv[1]))["clients"][0]
mixed = json.load(open(sys.argv[2]))
print("alone   light        %7.1f req/s  latency p50 %6.1f ms  p99 %6.1f ms" % (alone["requestsPerSecond"], alone["latencyMsP50"], alone["latencyMsP99"]))
for c in mixed["clients"]:
    ratio = "" if c["key"] == "greedy" else "   p99 %.2f× alone" % (c["latencyMsP99"] / alone["latencyMsP99"])
    print("mixed   %-8s ×%-3d %7.1f req/s  latency p50 %6.1f ms  p99 %6.1f ms  errors %d%s" % (c["key"], c["concurrency"], c["requestsPerSecond"], c["latencyMsP50"], c["latencyMsP99"], c["errors"], ratio))
print("Jain's fairness index of the five clients' throughputs: %.3f" % mixed["jainIndex"])
PY
