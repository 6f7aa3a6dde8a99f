#!/usr/bin/env bash
# Footprint of the release binary: stripped size, time from start to accepting connections,
# and idle RSS, for the full build and the hub-only builds (glibc and, when the musl target and
# musl-gcc are installed, a static musl build).
#
#   bash benches/footprint.sh            # 20 starts per build
#   RUNS=5 bash benches/footprint.sh
#
# Ready time: start `gambiarra serve` on a free port, try to connect every 0.5 ms, stop the
# clock at the first accepted connection. Idle RSS: VmRSS (and the private part, from
# smaps_rollup: pages not shared with other processes, such as libc's) 0.5 s later.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-20}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

build() { # name, cargo args...
  local name=$1; shift
  cargo build --release --quiet "$@"
  local bin=target/release/gambiarra
  for a in "$@"; do
    case $a in x86_64-unknown-linux-musl) bin=target/x86_64-unknown-linux-musl/release/gambiarra ;; esac
  done
  cp "$bin" "$OUT/$name"
}

build full
build hub-only --no-default-features
build hub-only+mdns --no-default-features --features mdns
if rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl && command -v musl-gcc >/dev/null; then
  CC_x86_64_unknown_linux_musl=musl-gcc build hub-only-musl --no-default-features --target x86_64-unknown-linux-musl
  CC_x86_64_unknown_linux_musl=musl-gcc build full-musl --target x86_64-unknown-linux-musl
fi

python3 - "$OUT" "$RUNS" <<'PY'
import os, socket, statistics, subprocess, sys, time
out, runs = sys.argv[1], int(sys.argv[2])
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def rollup(pid):
    d = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            d[parts[0][:-1]] = int(parts[1])
    return d
print(f"| build | stripped size | ready in (median of {runs}) | idle RSS | of which private |")
print("|---|---|---|---|---|")
for name in sorted(os.listdir(out)):
    path = os.path.join(out, name)
    ready, rss, private = [], [], []
    for _ in range(runs):
        port = free_port()
        t0 = time.perf_counter()
        p = subprocess.Popen([path, "serve", "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
                break
            except OSError:
                time.sleep(0.0005)
        ready.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.5)
        r = rollup(p.pid)
        rss.append(r["Rss"]); private.append(r["Private_Clean"] + r["Private_Dirty"])
        p.terminate(); p.wait()
    size = os.path.getsize(path)
    print(f"| {name} | {size / 1e6:.2f} MB ({size} B) | {statistics.median(ready):.1f} ms | "
          f"{statistics.median(rss) / 1024:.2f} MiB | {statistics.median(private) / 1024:.2f} MiB |")
PY
