# Shared by the benchmark scripts (sourced): start the pieces and make a room.
# Needs BIN (the gambiarra binary) and WORK (a scratch directory) set by the caller.

# start_mock PORT [TOKENS] [DELAY_MS]
start_mock() {
  "$BIN" mock-llm --port "$1" --tokens "${2:-20}" --token-delay-ms "${3:-0}" >/dev/null &
}

# start_hub PORT [extra serve flags...] — no health checks are sent during a run, so the
# participant timeout is a day; every load comes from one address, so the per-address limits
# are off.
start_hub() {
  local port=$1; shift
  "$BIN" serve --host 127.0.0.1 --port "$port" --quiet --participant-timeout-ms 86400000 \
    --max-connections-per-ip 0 --rate-limit 0 "$@" &
}

# start_nginx PORT UPSTREAM_PORT — 1 worker, upstream keep-alive, no buffering.
start_nginx() {
  cat > "$WORK/nginx.conf" <<NGX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream mock { server 127.0.0.1:$2; keepalive 128; }
  server {
    listen 127.0.0.1:$1;
    location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
NGX
  nginx -c "$WORK/nginx.conf" -p "$WORK"
}

# make_room HUB_PORT MOCK_PORT [SLOTS] [ROUTING] — a room with the mock joined directly as
# participant "mock", with SLOTS parallel slots (default 1024: the mock answers any number at
# once, so the queue never holds a request back); prints the code.
make_room() {
  local code
  code=$(curl -s -XPOST "localhost:$1/rooms" -d "{\"name\":\"bench\",\"routing\":\"${4:-cache-aware}\"}" | python3 -c 'import sys,json;print(json.load(sys.stdin)["room"]["code"])')
  join_room "$1" "$code" mock "$2" "${3:-1024}"
  echo "$code"
}

# join_room HUB_PORT CODE ID MOCK_PORT SLOTS [MODEL] — one more participant (default model
# llama3).
join_room() {
  curl -s -XPOST "localhost:$1/rooms/$2/join" -d "{\"id\":\"$3\",\"nickname\":\"$3\",\"model\":\"${6:-llama3}\",\"endpoint\":\"http://127.0.0.1:$4\",\"slots\":$5}" >/dev/null
}

# new_room HUB_PORT ROUTING — an empty room; prints the code.
new_room() {
  curl -s -XPOST "localhost:$1/rooms" -d "{\"name\":\"bench\",\"routing\":\"$2\"}" | python3 -c 'import sys,json;print(json.load(sys.stdin)["room"]["code"])'
}

# pid_of PORT — the hub serving on PORT.
pid_of() { pgrep -f "serve --host 127.0.0.1 --port $1 " | head -1; }
# ticks PID — CPU time (user + system) the process has used, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure NAME PID bench-args... — one `gambiarra bench` run; prints "NAME req/s CPU-us/request
# p50-ms" with the CPU the process PID (the proxy under test) spent per request.
measure() {
  local name=$1 pid=$2; shift 2
  local t0 t1 out
  t0=$(ticks "$pid")
  if ! out=$($BIN bench --json "$@"); then
    # One failed run (say a target that refused connections for a moment) costs its sample,
    # not the rounds after it; the reason is on stderr.
    echo "measure $name: the bench failed; sample skipped" >&2
    return 0
  fi
  t1=$(ticks "$pid")
  python3 -c 'import sys,json; r=json.loads(sys.argv[1]); print(sys.argv[2].replace(" ", "_"), round(r["requestsPerSecond"]), round((int(sys.argv[4])-int(sys.argv[3]))/int(sys.argv[5])*1e6/max(r["requests"],1),2), r["latencyMsP50"])' \
    "$out" "$name" "$t0" "$t1" "$(getconf CLK_TCK)"
}

# rounds_table [BASE] — reads `measure` lines named ROUND|ROW|TARGET; per row and target prints
# the medians of req/s, p50 and CPU per request, and the ratio to BASE's req/s (and BASE's p50
# to the target's) paired within each round: "median [min-max]". BASE defaults to nginx.
rounds_table() {
  BASE=${1:-nginx} python3 -c '
import os, sys, statistics as st
base_name = os.environ["BASE"]
runs = {}
for line in sys.stdin:
    name, rps, cpu, p50 = line.split()
    rnd, row, target = name.split("|")
    runs.setdefault(row.replace("_", " "), {}).setdefault(target, {})[rnd] = (int(rps), float(cpu), float(p50))
def span(v):
    return "%.2f [%.2f-%.2f]" % (st.median(v), min(v), max(v)) if v else "-"
print("%-15s %-8s %9s %9s %9s   %-20s %-20s" % ("row", "target", "req/s", "p50 ms", "CPU us/r", "req/s vs " + base_name, "p50 %s/target" % base_name))
for row, targets in runs.items():
    base = targets.get(base_name, {})
    for target, by_round in targets.items():
        v = list(by_round.values())
        paired = [by_round[r][0] / base[r][0] for r in by_round if r in base]
        lat = [base[r][2] / by_round[r][2] for r in by_round if r in base and by_round[r][2] > 0]
        print("%-15s %-8s %9.0f %9.3f %9.2f   %-20s %-20s" % (row, target, st.median(x[0] for x in v), st.median(x[2] for x in v), st.median(x[1] for x in v), span(paired), span(lat)))
'
}

# medians — reads `measure` lines, prints the median req/s and CPU per request of each name.
medians() {
  python3 -c '
import sys, statistics
rows = {}
for line in sys.stdin:
    name, rps, cpu = line.split()[:3]
    rows.setdefault(name, []).append((int(rps), float(cpu)))
print("%-18s %s" % ("run", "median req/s   median CPU us/request   (rounds: req/s)"))
for name, v in rows.items():
    print("%-18s %12.0f   %21.2f   %s" % (name, statistics.median(r for r, _ in v), statistics.median(c for _, c in v), " ".join(str(r) for r, _ in v)))
'
}

# cleanup: stop background jobs and nginx (for `trap cleanup EXIT`).
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
}
