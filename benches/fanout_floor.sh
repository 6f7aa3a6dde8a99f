#!/usr/bin/env bash
# One event to N event-stream subscribers: the hub beside the floor of a fan-out on this
# machine (benches/fanout_floor.rs: a loop of blocking writes over the sockets, no runtime),
# each measured by the same probe (`gambiarra bench --subscribers N`), in interleaved rounds.
# Targets: the hub (default threads and --threads 1) and the floor on 2 and 1 OS threads.
# Prints, per target, the time for one event to reach all N: the median of every event of
# every round, and its min-max; the ratio of the floor's to the hub's, paired per round; and
# for the floor, how long its own writes took (first to last, measured inside it).
#
#   bash benches/fanout_floor.sh [ROUNDS] [SUBSCRIBERS] [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
N=${2:-10000}
EVENTS=${3:-4}
BIN=target/release/gambiarra
cargo build --release --quiet
cargo build --release --quiet --bench fanout_floor
FLOOR=$(ls -t target/release/deps/fanout_floor-* | grep -v '\.d$' | head -1)
PORT=18301
WORK=$(mktemp -d)
source benches/common.sh
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((N + 100)) ] || { echo "ulimit -n must be above $N" >&2; exit 1; }

# one TARGET ROUND — start the target, measure, stop it; prints "ROUND TARGET ALL_MS..."
one() {
  local target=$1 round=$2 code=floor pid
  case $target in
    hub)    start_hub $PORT --max-subscribers $((N + 10)) --max-subscribers-total $((N + 10)) --max-connections $((N + 100)) ;;
    hub-1t) start_hub $PORT --max-subscribers $((N + 10)) --max-subscribers-total $((N + 10)) --max-connections $((N + 100)) --threads 1 ;;
    floor)  "$FLOOR" $PORT 2 2>>"$WORK/writes-floor" & ;;
    floor-1t) "$FLOOR" $PORT 1 2>>"$WORK/writes-floor-1t" & ;;
  esac
  pid=$!
  sleep 0.5
  case $target in hub*) code=$(new_room $PORT least-loaded) ;; esac
  $BIN bench --json --hub http://127.0.0.1:$PORT --room "$code" --subscribers "$N" --events "$EVENTS" |
    python3 -c 'import sys,json; r=json.load(sys.stdin); print(sys.argv[1], sys.argv[2], *[d["all_ms"] for d in r["deliveries"]])' "$round" "$target"
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  sleep 1
}

for r in $(seq 1 "$ROUNDS"); do
  for t in hub floor hub-1t floor-1t; do one $t "$r"; done
done | tee "$WORK/runs" >&2
python3 - "$WORK" <<'PY'
import os, sys, statistics as st
runs = {}
for line in open(os.path.join(sys.argv[1], "runs")):
    rnd, target, *ms = line.split()
    runs.setdefault(target, {})[rnd] = [float(x) for x in ms]
print("%-9s %10s %18s   %s" % ("target", "all ms", "min-max", "floor/hub, paired per round"))
for t, by in runs.items():
    every = [x for v in by.values() for x in v]
    pair = {"floor": "hub", "floor-1t": "hub-1t"}.get(t)
    ratio = ""
    if pair in runs:
        r = [st.median(by[k]) / st.median(runs[pair][k]) for k in by if k in runs[pair]]
        ratio = "%.2f [%.2f-%.2f] of %s's time" % (st.median(r), min(r), max(r), pair)
    print("%-9s %10.1f %8.1f-%-9.1f   %s" % (t, st.median(every), min(every), max(every), ratio))
for t in ("floor", "floor-1t"):
    path = os.path.join(sys.argv[1], "writes-" + t)
    if os.path.exists(path):
        w = [float(l.split()[3]) for l in open(path) if l.startswith("wrote")]
        if w:
            print("%s: its own writes to all took %.1f ms (median, %.1f-%.1f)" % (t, st.median(w), min(w), max(w)))
PY
