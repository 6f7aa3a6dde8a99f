#!/usr/bin/env python3
"""Soak test: a long run of mixed load against a real hub and the mock LLM (not run in CI).

    cargo build --release
    python3 benches/soak.py --minutes 30            # starts its own hub and mock LLM
    python3 benches/soak.py --minutes 2 --warmup 0.5   # a quick look

Load, all at once, for --minutes:
  * chat clients: streaming and not, to `*`, `model:`, and a participant id; one in ten
    streaming clients hangs up after the first bytes (dies mid-stream);
  * participants joining, health-checking and leaving (churn), plus a fixed set that stays;
  * one protected room, used with its password (and sometimes a wrong one);
  * SSE subscribers coming and going, some never reading.

With --attack, an attacker runs beside that load from other loopback addresses (so the
per-address limits, left at their defaults, apply to it and not to the legitimate clients):
  * tunnel churn: tunnelled participants whose agent opens 64 tunnels at once and drops them;
  * parallel wrong passwords against the protected room;
  * trickled bodies: 16 MB prompts announced and sent a byte a second;
  * a loop: a participant whose endpoint is the room itself, asked again and again (508);
and a prober on yet another address times `GET /health` every 200 ms throughout.

Checks at the end, printed as a table and as one JSON line:
  * every request got an answer (a status line), except the ones the client cut on purpose;
    statuses other than the expected ones are counted as errors;
  * RSS after the load, once idle, within 10% of RSS at the end of warm-up;
  * open file descriptors once idle equal to before the load (pooled upstream connections
    expire after 30 s, so the idle measurement waits for that).
  * with --attack: every /health probe answered within 100 ms.
Exit status 0 only if all of them hold.
"""

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "soak password"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}

    def add(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n

    def snapshot(self):
        with self.lock:
            return dict(self.c)


class Soak:
    def __init__(self, host, port, mock_url, stop):
        self.host, self.port, self.mock_url, self.stop = host, port, mock_url, stop
        self.n = Counters()

    def conn(self, timeout=30):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def call(self, method, path, body=None, password=None, expect=(200, 201), source=None):
        """One request; counts it as answered (any status) or unanswered (no status line)."""
        headers = {"Content-Type": "application/json"}
        if password:
            headers["Authorization"] = f"Bearer {password}"
        c = http.client.HTTPConnection(self.host, self.port, timeout=30,
                                       source_address=(source, 0) if source else None)
        try:
            c.request(method, path, body=json.dumps(body) if body is not None else None,
                      headers=headers)
            r = c.getresponse()
            data = r.read()
            self.n.add("answered")
            if r.status not in expect:
                self.n.add(f"unexpected {r.status} {method} {path.split('/')[-1]}")
            return r.status, data
        except Exception as e:  # noqa: BLE001 — counted and reported
            self.n.add("unanswered")
            self.n.add(f"error {type(e).__name__}")
            return None, b""
        finally:
            c.close()

    def leave(self, code, pid, secret, password=None):
        headers = {"Gambiarra-Participant-Secret": secret or ""}
        if password:
            headers["Authorization"] = f"Bearer {password}"
        c = self.conn()
        try:
            c.request("DELETE", f"/rooms/{code}/leave/{pid}", headers=headers)
            r = c.getresponse()
            r.read()
            self.n.add("answered")
            if r.status != 200:
                self.n.add(f"unexpected {r.status} DELETE leave")
        except Exception as e:  # noqa: BLE001
            self.n.add("unanswered")
            self.n.add(f"error {type(e).__name__}")
        finally:
            c.close()

    def setup(self):
        _, data = self.call("POST", "/rooms", {"name": "soak"})
        self.code = json.loads(data)["room"]["code"]
        _, data = self.call("POST", "/rooms", {"name": "soak-locked", "password": PASSWORD})
        self.locked = json.loads(data)["room"]["code"]
        for i in range(4):
            self.join(self.code, f"stay-{i}", f"m{i % 2}")
        self.join(self.locked, "locked-0", "m0", PASSWORD)

    def join(self, code, pid, model, password=None):
        return self.call("POST", f"/rooms/{code}/join", {
            "id": pid, "nickname": pid, "model": model, "endpoint": self.mock_url,
        }, password=password)

    # --- workers -----------------------------------------------------------------------
    def chat_worker(self, seed):
        rnd = random.Random(seed)
        while not self.stop.is_set():
            stream = rnd.random() < 0.6
            model = rnd.choice(["*", "model:m0", "model:m1", "stay-2"])
            room, password = self.code, None
            if rnd.random() < 0.2:
                room, password, model = self.locked, PASSWORD, "*"
                if rnd.random() < 0.05:
                    password = "wrong"
            body = {"model": model, "stream": stream,
                    "messages": [{"role": "user", "content": "soak " * rnd.randint(1, 50)}],
                    "mock_tokens": rnd.randint(1, 40)}
            if stream and rnd.random() < 0.1:
                self.die_mid_stream(room, body)
                continue
            # Wrong passwords come from another address: its failures get it blocked (429),
            # which must not touch everyone else.
            wrong = password == "wrong"
            status, data = self.call("POST", f"/rooms/{room}/v1/chat/completions", body,
                                     password=password, expect=(401, 429) if wrong else (200,),
                                     source="127.0.0.2" if wrong else None)
            if status == 200:
                self.n.add("chats ok")
                if stream and b"[DONE]" not in data:
                    self.n.add("stream without [DONE]")

    def die_mid_stream(self, room, body):
        s = socket.create_connection((self.host, self.port), timeout=30)
        payload = json.dumps(body).encode()
        s.sendall(f"POST /rooms/{room}/v1/chat/completions HTTP/1.1\r\nHost: soak\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
                  .encode() + payload)
        try:
            first = s.recv(64)
            self.n.add("killed mid-stream" if first else "unanswered (mid-stream client)")
        except OSError as e:
            self.n.add(f"unanswered (mid-stream client: {type(e).__name__})")
        s.close()

    def churn_worker(self, seed):
        rnd = random.Random(seed)
        i = 0
        while not self.stop.is_set():
            pid = f"churn-{seed}-{i}"
            i += 1
            _, data = self.join(self.code, pid, "m1")
            secret = json.loads(data or b"{}").get("participantSecret")
            for _ in range(rnd.randint(1, 3)):
                self.call("POST", f"/rooms/{self.code}/health", {"id": pid})
                time.sleep(rnd.uniform(0.05, 0.3))
            self.leave(self.code, pid, secret)
            self.call("GET", f"/rooms/{self.code}/participants")
            self.call("GET", "/rooms")

    def health_worker(self):
        while not self.stop.is_set():
            for i in range(4):
                self.call("POST", f"/rooms/{self.code}/health", {"id": f"stay-{i}"})
            self.call("POST", f"/rooms/{self.locked}/health", {"id": "locked-0"},
                      password=PASSWORD)
            self.stop.wait(1.0)

    def sse_worker(self, seed):
        rnd = random.Random(seed)
        while not self.stop.is_set():
            room, password = (self.locked, PASSWORD) if rnd.random() < 0.3 else (self.code, None)
            s = socket.create_connection((self.host, self.port), timeout=30)
            auth = f"Authorization: Bearer {password}\r\n" if password else ""
            s.sendall(f"GET /rooms/{room}/events HTTP/1.1\r\nHost: soak\r\n{auth}\r\n".encode())
            try:
                head = s.recv(4096)
                if head.startswith(b"HTTP/1.1 200"):
                    self.n.add("sse ok")
                else:
                    self.n.add("sse refused")
                self.n.add("answered" if head else "unanswered (sse)")
                deadline = time.time() + rnd.uniform(0.2, 3.0)
                if rnd.random() < 0.2:
                    time.sleep(deadline - time.time())  # subscribed, never reads
                else:
                    while time.time() < deadline and s.recv(65536):
                        pass
            except OSError as e:
                self.n.add(f"unanswered (sse: {type(e).__name__})")
            s.close()


PROBE = """
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
while True:
    t = time.perf_counter()
    try:
        s = socket.create_connection((host, port), timeout=5, source_address=("127.0.0.6", 0))
        s.sendall(b"GET /health HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n")
        ok = s.recv(4096).startswith(b"HTTP/1.1 200")
        s.close()
        ms = (time.perf_counter() - t) * 1000 if ok else 5000.0
    except OSError:
        ms = 5000.0
    print(f"{ms:.2f}", flush=True)
    time.sleep(0.2)
"""


class Attacker:
    """Hostile load from other loopback addresses; counted apart from the legitimate load."""

    def __init__(self, soak, stop):
        self.s, self.stop = soak, stop
        self.n = Counters()
        # The attacker's own participants live in a room of their own, so that legitimate
        # requests for "*" are never routed to them.
        _, data = soak.call("POST", "/rooms", {"name": "evil"})
        self.evil = json.loads(data)["room"]["code"]
        self.health_ms = []
        self.lock = threading.Lock()

    def raw(self, source, data, read=True, timeout=10):
        sock = socket.create_connection((self.s.host, self.s.port), timeout=timeout,
                                        source_address=(source, 0))
        try:
            sock.sendall(data)
            return sock.recv(4096) if read else sock
        finally:
            if read:
                sock.close()

    def tunnel_churn(self, seed):
        """Six tunnelled participants per thread; for each in turn, 64 tunnels opened at once and
        then dropped without a word (an agent killed again and again)."""
        src = "127.0.0.3"
        secrets = {}
        for i in range(6):
            pid = f"evil-tunnel-{seed}-{i}"
            body = json.dumps({"id": pid, "nickname": "x", "model": "evil", "tunnel": True,
                               "endpoint": "http://127.0.0.1:9"}).encode()
            head = (f"POST /rooms/{self.evil}/join HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
            try:
                answer = self.raw(src, head + body)
                secrets[pid] = json.loads(answer.split(b"\r\n\r\n", 1)[1])["tunnelSecret"]
            except Exception:  # noqa: BLE001
                self.n.add("tunnel join failed")
        while not self.stop.is_set():
            for pid, secret in secrets.items():
                socks = []
                for _ in range(64):
                    try:
                        sock = self.raw(src, (f"GET /rooms/{self.evil}/tunnel/{pid} HTTP/1.1\r\nHost: a\r\n"
                                              f"Connection: Upgrade\r\nUpgrade: gambiarra-tunnel\r\n"
                                              f"Gambiarra-Tunnel-Secret: {secret}\r\n\r\n").encode(), read=False)
                        socks.append(sock)
                        self.n.add("tunnels opened")
                    except OSError:
                        self.n.add("tunnel refused")
                time.sleep(0.2)
                for sock in socks:
                    sock.close()
                if self.stop.is_set():
                    return

    def wrong_passwords(self, seed):
        rnd = random.Random(seed)
        while not self.stop.is_set():
            try:
                answer = self.raw("127.0.0.4", (f"GET /rooms/{self.s.locked}/v1/models HTTP/1.1\r\nHost: a\r\n"
                                                f"Authorization: Bearer guess-{rnd.random()}\r\n"
                                                "Connection: close\r\n\r\n").encode())
                self.n.add(f"guess {answer[9:12].decode(errors='replace')}")
            except OSError:
                self.n.add("guess refused")

    def trickle(self, seed):
        while not self.stop.is_set():
            try:
                sock = self.raw("127.0.0.5", (f"POST /rooms/{self.s.code}/v1/chat/completions HTTP/1.1\r\n"
                                              "Host: a\r\nContent-Length: 16000000\r\n\r\n{").encode(),
                                read=False)
            except OSError:
                self.n.add("trickle refused")
                time.sleep(1)
                continue
            self.n.add("trickles started")
            try:
                while not self.stop.is_set():
                    sock.sendall(b" ")
                    time.sleep(1)
            except OSError:
                self.n.add("trickles cut off by the hub")
            sock.close()

    def loop(self):
        pid = "evil-mirror"
        self.s.call("POST", f"/rooms/{self.evil}/join", {
            "id": pid, "nickname": "mirror", "model": "mirror",
            "endpoint": f"http://{self.s.host}:{self.s.port}/rooms/{self.evil}"})
        n = 0
        while not self.stop.is_set():
            n += 1
            if n % 50 == 0:  # stay online
                self.s.call("POST", f"/rooms/{self.evil}/health", {"id": pid})
            body = json.dumps({"model": pid, "messages": [{"role": "user", "content": "x"}]}).encode()
            try:
                answer = self.raw("127.0.0.7", (f"POST /rooms/{self.evil}/v1/chat/completions HTTP/1.1\r\n"
                                                f"Host: a\r\nContent-Length: {len(body)}\r\n"
                                                "Connection: close\r\n\r\n").encode() + body)
                self.n.add(f"loop {answer[9:12].decode(errors='replace')}")
            except OSError:
                self.n.add("loop refused")
            time.sleep(0.05)

    def prober(self):
        """`GET /health` every 200 ms from 127.0.0.6, timed in a process of its own (this one's
        dozens of threads would otherwise add their GIL waits to the measurement)."""
        proc = subprocess.Popen([sys.executable, "-c", PROBE, self.s.host, str(self.s.port)],
                                stdout=subprocess.PIPE, text=True)
        while not self.stop.is_set():
            line = proc.stdout.readline()
            if not line:
                break
            with self.lock:
                self.health_ms.append(float(line))
        proc.terminate()
        proc.wait()

    def threads(self):
        t = [threading.Thread(target=self.tunnel_churn, args=(i,)) for i in range(3)]
        t += [threading.Thread(target=self.wrong_passwords, args=(i,)) for i in range(8)]
        t += [threading.Thread(target=self.trickle, args=(i,)) for i in range(40)]
        t += [threading.Thread(target=self.loop), threading.Thread(target=self.prober)]
        return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=2, help="minutes before the RSS baseline")
    ap.add_argument("--chatters", type=int, default=8)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/gambiarra"))
    ap.add_argument("--attack", action="store_true",
                    help="run the attacker beside the load (per-address limits at their defaults)")
    args = ap.parse_args()

    port, mock_port = free_port(), free_port()
    mock = subprocess.Popen([args.binary, "mock-llm", "--port", str(mock_port), "--model", "m0",
                             "--tokens", "20", "--token-delay-ms", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The legitimate load comes from one address, far above any per-address budget; with
    # --attack the per-address connection limit stays on (the attacker's addresses differ).
    limits = ["--rate-limit", "0"] + ([] if args.attack else ["--max-connections-per-ip", "0"])
    hub = subprocess.Popen([args.binary, "serve", "--host", "127.0.0.1", "--port", str(port),
                            "--quiet"] + limits,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                socket.create_connection(("127.0.0.1", mock_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        stop = threading.Event()
        soak = Soak("127.0.0.1", port, f"http://127.0.0.1:{mock_port}", stop)
        soak.setup()
        fds_before = fds(hub.pid)
        rss_start = rss_kb(hub.pid)
        threads = [threading.Thread(target=soak.chat_worker, args=(i,)) for i in range(args.chatters)]
        threads += [threading.Thread(target=soak.churn_worker, args=(100 + i,)) for i in range(2)]
        threads += [threading.Thread(target=soak.sse_worker, args=(200 + i,)) for i in range(4)]
        threads += [threading.Thread(target=soak.health_worker)]
        attacker = Attacker(soak, stop) if args.attack else None
        if attacker:
            threads += attacker.threads()
        for t in threads:
            t.start()
        t0 = time.time()
        samples = []
        rss_warm = None
        while time.time() - t0 < args.minutes * 60:
            time.sleep(10)
            elapsed = time.time() - t0
            samples.append((round(elapsed), rss_kb(hub.pid), fds(hub.pid)))
            if rss_warm is None and elapsed >= args.warmup * 60:
                rss_warm = samples[-1][1]
            probe = ""
            if attacker:
                with attacker.lock:
                    probe = f"  /health max {max(attacker.health_ms or [0]):6.1f} ms"
            print(f"  {elapsed:6.0f}s  rss {samples[-1][1] / 1024:6.1f} MB  fds {samples[-1][2]:5d}  "
                  f"answered {soak.n.snapshot().get('answered', 0)}{probe}", flush=True)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        rss_peak = max(s[1] for s in samples) if samples else rss_kb(hub.pid)
        # Let pooled upstream connections (30 s idle timeout) and closed sockets go.
        time.sleep(35)
        rss_end, fds_end = rss_kb(hub.pid), fds(hub.pid)
        if fds_end > fds_before:
            subprocess.run(["ss", "-tanp"], check=False)
        alive = hub.poll() is None
    finally:
        hub.send_signal(signal.SIGTERM)
        mock.send_signal(signal.SIGTERM)
        hub.wait(timeout=20)
        mock.wait(timeout=20)

    counts = soak.n.snapshot()
    rss_warm = rss_warm or rss_start
    errors = {k: v for k, v in counts.items() if k.startswith(("unexpected", "error", "stream without"))}
    ok_rss = rss_end <= rss_warm * 1.10
    ok_fds = fds_end <= fds_before
    unanswered = sum(v for k, v in counts.items() if k.startswith("unanswered"))
    ok_answered = unanswered == 0 and not errors and alive
    print()
    print(f"duration            {args.minutes} min (warm-up {args.warmup} min), {args.chatters} chat clients")
    print(f"requests answered   {counts.get('answered', 0)}  (unanswered {unanswered})")
    print(f"chats ok            {counts.get('chats ok', 0)}; cut mid-stream on purpose {counts.get('killed mid-stream', 0)}")
    print(f"SSE subscriptions   {counts.get('sse ok', 0)} (refused {counts.get('sse refused', 0)})")
    print(f"errors              {errors or 'none'}")
    print(f"RSS                 start {rss_start / 1024:.1f} MB, after warm-up {rss_warm / 1024:.1f} MB, "
          f"peak {rss_peak / 1024:.1f} MB, idle at end {rss_end / 1024:.1f} MB "
          f"({(rss_end / rss_warm - 1) * 100:+.1f}% vs warm-up)")
    print(f"file descriptors    before load {fds_before}, idle at end {fds_end}")
    ok_probe = True
    attack = {}
    if attacker:
        probes = sorted(attacker.health_ms)
        slow = sum(1 for ms in probes if ms > 100)
        ok_probe = bool(probes) and slow == 0
        attack = {"counts": attacker.n.snapshot(), "health_probes": len(probes),
                  "health_ms_p50": probes[len(probes) // 2] if probes else None,
                  "health_ms_p99": probes[int(len(probes) * 0.99)] if probes else None,
                  "health_ms_max": probes[-1] if probes else None, "health_over_100ms": slow}
        print(f"attacker            {attack['counts']}")
        print(f"/health probes      {len(probes)}: p50 {attack['health_ms_p50']:.1f} ms, "
              f"p99 {attack['health_ms_p99']:.1f} ms, max {attack['health_ms_max']:.1f} ms, over 100 ms: {slow}")
    verdict = ok_rss and ok_fds and ok_answered and ok_probe
    print(f"verdict             {'PASS' if verdict else 'FAIL'} (rss {ok_rss}, fds {ok_fds}, "
          f"answered {ok_answered}, probe {ok_probe})")
    print(json.dumps({"counts": counts, "rss_kb": {"start": rss_start, "warm": rss_warm,
                      "peak": rss_peak, "end": rss_end}, "fds": {"before": fds_before, "end": fds_end},
                      "attack": attack, "pass": verdict}))
    sys.exit(0 if verdict else 1)


if __name__ == "__main__":
    main()
