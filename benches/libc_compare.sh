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
for r in $(seq 1 "$ROUNDS"); do
  for c in 1 16; do
    for mode in "" "--stream"; do
      tag="c$c${mode:+-stream}"
      measure "glibc-$tag" "$(pid_of $GLIBC)" -c $c -d "${SECS}s" $mode --hub http://127.0.0.1:$GLIBC --room "$CG"
      measure "musl-$tag" "$(pid_of $MUSL)" -c $c -d "${SECS}s" $mode --hub http://127.0.0.1:$MUSL --room "$CM"
    done
  done
done | medians
