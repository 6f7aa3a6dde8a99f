#!/usr/bin/env bash
# The per-request micro-benchmarks (benches/hub.rs, criterion) as a regression guard, run by
# hand: not in CI, because on a shared 2-core VM a short run moves by more than the threshold
# from one minute to the next (measured: a baseline, then a check minutes later; benches whose
# code had not changed, such as httparse alone or the router, moved by -44 % to +59 %, and 5
# of 35 failed the 25 % bound). Run it on a quiet machine:
#
#   bash benches/regression.sh save [NAME]     # before a change: store a baseline (default "main")
#   bash benches/regression.sh check [NAME]    # after: fails when a bench's mean is > 25 % slower
#
# THRESHOLD (percent, default 25) and FILTER (a criterion name filter, default all) may be set.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-check}
NAME=${2:-main}
THRESHOLD=${THRESHOLD:-25}
ARGS=(--warm-up-time 1 --measurement-time 3 --noplot)
case "$MODE" in
  save)
    cargo bench --bench hub -- "${ARGS[@]}" --save-baseline "$NAME" ${FILTER:-} ;;
  check)
    find target/criterion -path '*/change/estimates.json' -delete 2>/dev/null || true
    cargo bench --bench hub -- "${ARGS[@]}" --baseline "$NAME" ${FILTER:-} >/dev/null
    python3 - "$THRESHOLD" <<'PY'
import glob, json, os, sys
limit = float(sys.argv[1]) / 100
worse = []
rows = 0
for path in sorted(glob.glob("target/criterion/**/change/estimates.json", recursive=True)):
    name = os.path.relpath(os.path.dirname(os.path.dirname(path)), "target/criterion")
    mean = json.load(open(path))["mean"]["point_estimate"]
    rows += 1
    print("%+7.1f %%  %s" % (mean * 100, name))
    if mean > limit:
        worse.append(name)
if rows == 0:
    sys.exit("no comparison: save a baseline first (bash benches/regression.sh save)")
if worse:
    sys.exit("slower by more than %d %%: %s" % (limit * 100, ", ".join(worse)))
print("%d benches within %d %% of the baseline" % (rows, limit * 100))
PY
    ;;
  *) echo "usage: $0 save|check [NAME]" >&2; exit 2 ;;
esac
