#!/usr/bin/env bash
# The hub-only build on glibc (dynamic) vs musl (static), same mock upstream, interleaved
# rounds: median req/s and hub CPU per request, non-streaming and streaming, at 1 and 16
# connections. The load tool and the mock are the full glibc build.
#
#   bash benches/libc_compare.sh [ROUNDS] [SECONDS_PER_ROUND]
# Needs: rustup target add x86_64-unknown-linux-musl; apt install musl-tools.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-5}
cargo build --release --quiet
WORK=$(mktemp -d)
BIN=$WORK/full; cp target/release/gambiarra "$BIN"
cargo build --release --quiet --no-default-features
cp target/release/gambiarra "$WORK/glibc"
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --quiet --no-default-features --target x86_64-unknown-linux-musl
cp target/x86_64-unknown-linux-musl/release/gambiarra "$WORK/musl"
MOCK=18581; GLIBC=18582; MUSL=18583
source benches/common.sh
trap cleanup EXIT
start_mock $MOCK 20
BIN=$WORK/glibc start_hub $GLIBC
BIN=$WORK/musl start_hub $MUSL
sleep 0.5
CG=$(make_room $GLIBC $MOCK); CM=$(make_room $MUSL $MOCK)
pid_of() { pgrep -f "serve --host 127.0.0.1 --port $1 " | head -1; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
one() { # name pid bench-args...
  local name=$1 pid=$2; shift 2
  local t0 t1 out
  t0=$(ticks "$pid")
  out=$($BIN bench --json -d "${SECS}s" "$@")
  t1=$(ticks "$pid")
  python3 -c 'import sys,json; r=json.loads(sys.argv[1]); print(sys.argv[2], round(r["requestsPerSecond"]), round((int(sys.argv[4])-int(sys.argv[3]))/int(sys.argv[5])*1e6/max(r["requests"],1),2))' "$out" "$name" "$t0" "$t1" "$HZ"
}
for r in $(seq 1 "$ROUNDS"); do
  for c in 1 16; do
    for mode in "" "--stream"; do
      tag="c$c${mode:+-stream}"
      one "glibc-$tag" "$(pid_of $GLIBC)" -c $c $mode --hub http://127.0.0.1:$GLIBC --room "$CG"
      one "musl-$tag" "$(pid_of $MUSL)" -c $c $mode --hub http://127.0.0.1:$MUSL --room "$CM"
    done
  done
done | python3 -c '
import sys, statistics
rows = {}
for line in sys.stdin:
    name, rps, cpu = line.split()
    rows.setdefault(name, []).append((int(rps), float(cpu)))
print("%-18s %s" % ("build-load", "median req/s   median CPU us/request"))
for name in sorted(rows):
    v = rows[name]
    print("%-18s %12.0f   %21.2f" % (name, statistics.median(r for r, _ in v), statistics.median(c for _, c in v)))
'
