#!/usr/bin/env python3
"""End to end against a real model: two llama.cpp servers (llama-cpp-python) serving
SmolLM2-135M, joined to a hub by the real `gambiarra join` (one direct, one through a reverse
tunnel), a third serving it under two names (`smol-a`, `smol-b`) shared by one agent with
`--all-models` and an alias, and the OpenAI Python SDK, the `ollama` library and the
`anthropic` SDK talking to the room (the last two through the hub's translation: llama.cpp
speaks only OpenAI's API).

    VENV=$(dirname "$(bash tests/real_model/setup.sh | tail -1)")/venv   # once: venv, llama.cpp, model
    $VENV/bin/python tests/real_model/run.py [--binary target/debug/gambiarra]

Checks that the hub relays what a real server sends (chat, streams, completions, embeddings,
/v1/models, routing by id, by `model:` and by each name of a multi-model participant) and that the `llm:complete` metrics it announces are
the server's own: `tokens` equal to the completion tokens the server reports in `usage` (asked
for in a stream with `stream_options.include_usage`, and without it, where the hub counts the
streamed tokens itself), a time to first token below the duration, a plausible tokens/s.
Its last line is `N passed, N failed`.
"""

import argparse
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("GAMBIARRA_REAL_MODEL_DIR") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gambiarra", "real-model")
MODEL_FILE = os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf")
ALIAS = "smollm2"
# The names the multi-model server gives the same model file.
MULTI = ["smol-a", "smol-b"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(url, seconds, proc=None):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:  # noqa: BLE001 — not up yet
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {seconds} s")


def http_json(method, url, body=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


class Events:
    """The room's event stream, on a raw socket, into a queue of (name, data)."""

    def __init__(self, hub_port, code):
        self.q = queue.Queue()
        self.sock = socket.create_connection(("127.0.0.1", hub_port))
        self.sock.sendall(f"GET /rooms/{code}/events HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        buf = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                name, payload = None, []
                for line in block.split(b"\n"):
                    line = line.rstrip(b"\r")
                    # Chunk-size lines of the chunked framing are not `field: value` lines.
                    if line.startswith(b"event:"):
                        name = line[6:].strip().decode()
                    elif line.startswith(b"data:"):
                        payload.append(line[5:].strip().decode())
                if name and payload:
                    try:
                        self.q.put((name, json.loads("\n".join(payload))))
                    except ValueError:
                        pass

    def next(self, name, timeout=120):
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f"no {name} event within {timeout} s")
            ev, data = self.q.get(timeout=left)
            if ev == name:
                return data
            if ev == "llm:error":
                raise AssertionError(f"llm:error while waiting for {name}: {data}")

    def drain(self):
        while not self.q.empty():
            self.q.get_nowait()


class Suite:
    def __init__(self):
        self.passed, self.failed = 0, 0

    def check(self, name, fn):
        t = time.time()
        try:
            fn()
            self.passed += 1
            print(f"ok    {name} ({time.time() - t:.1f}s)", flush=True)
        except Exception as e:  # noqa: BLE001 — reported, then the next check runs
            self.failed += 1
            print(f"FAIL  {name}: {type(e).__name__}: {e}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/debug/gambiarra"))
    ap.add_argument("--model", default=MODEL_FILE)
    args = ap.parse_args()
    from openai import OpenAI  # the venv setup.sh made has it

    suite = Suite()
    procs = []
    os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
    logs = open(os.path.join(ROOT, "target/real-model-servers.log"), "w")

    def spawn(cmd):
        p = subprocess.Popen(cmd, stdout=logs, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    try:
        llama_ports = [free_port(), free_port()]
        llamas = [spawn([sys.executable, "-m", "llama_cpp.server", "--model", args.model,
                         "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(p),
                         "--n_ctx", "2048", "--n_threads", "1", "--embedding", "true",
                         "--verbose", "false"]) for p in llama_ports]
        # One server, two model names (llama-cpp-python's config file; it swaps between them).
        multi_port = free_port()
        config = os.path.join(ROOT, "target/real-model-multi.json")
        with open(config, "w") as f:
            json.dump({"host": "127.0.0.1", "port": multi_port, "models": [
                {"model": args.model, "model_alias": name, "n_ctx": 1024, "n_threads": 1, "verbose": False}
                for name in MULTI]}, f)
        multi = spawn([sys.executable, "-m", "llama_cpp.server", "--config_file", config])
        hub_port = free_port()
        hub = spawn([args.binary, "serve", "--host", "127.0.0.1", "--port", str(hub_port), "--quiet"])
        hub_url = f"http://127.0.0.1:{hub_port}"
        wait_http(f"{hub_url}/health", 20, hub)
        for p, proc in zip(llama_ports + [multi_port], llamas + [multi]):
            wait_http(f"http://127.0.0.1:{p}/v1/models", 180, proc)
        code = http_json("POST", f"{hub_url}/rooms", {"name": "real model"})["room"]["code"]
        events = Events(hub_port, code)
        joins = [("direct", llama_ports[0], ["--direct"]), ("tunnel", llama_ports[1], [])]
        for pid, port, extra in joins:
            spawn([args.binary, "join", "--hub", hub_url, "--code", code, "--model", ALIAS,
                   "--endpoint", f"http://127.0.0.1:{port}", "--id", pid, "--no-specs",
                   "--health-interval-ms", "2000"] + extra)
        spawn([args.binary, "join", "--hub", hub_url, "--code", code, "--all-models",
               "--alias", f"tiny={MULTI[1]}", "--endpoint", f"http://127.0.0.1:{multi_port}",
               "--id", "multi", "--no-specs", "--health-interval-ms", "2000"])
        for _ in range(3):
            joined = events.next("participant:joined", 60)
            assert joined["id"] in ("direct", "tunnel", "multi"), joined
            if joined["id"] == "multi":
                assert joined["models"] == [{"name": MULTI[0]}, {"name": MULTI[1], "aliases": ["tiny"]}], joined
        time.sleep(0.5)  # the tunnelled agent parks its tunnels
        client = OpenAI(base_url=f"{hub_url}/rooms/{code}/v1", api_key="unused", max_retries=0)
        messages = [{"role": "user", "content": "Name three colours."}]
        params = dict(max_tokens=24, temperature=0, seed=7)

        def metrics_ok(m, streamed):
            assert m["durationMs"] > 0, m
            if streamed and m["tokens"] > 1:
                assert m["latencyFirstTokenMs"] < m["durationMs"], m
            assert 0 < m["tokensPerSecond"] < 100_000, m

        def models():
            listed = client.models.list().data
            ids = [m.id for m in listed]
            assert {"direct", "tunnel", "multi"} <= set(ids), ids
            # The catalogue: each model name once (in join order), before the participants.
            assert set(ids[:4]) == {ALIAS, MULTI[0], MULTI[1], "tiny"}, ids
            assert all(m.owned_by == "gambiarra" for m in listed[:4]), listed
            smol = next(m for m in listed if m.id == ALIAS)
            counts = smol.model_extra["gambiarra"]["participants"]
            assert counts["online"] == 2, counts

        def by_each_name():
            for asked, served in [(MULTI[0], MULTI[0]), (MULTI[1].upper(), MULTI[1]),
                                  ("tiny", MULTI[1]), (f"model:{MULTI[0]}", MULTI[0])]:
                events.drain()
                r = client.chat.completions.create(model=asked, messages=messages, max_tokens=4)
                assert r.choices[0].message.content is not None, r
                done = events.next("llm:complete")
                assert (done["participantId"], done["model"]) == ("multi", served), (asked, done)

        def chat(pid):
            def run():
                events.drain()
                r = client.chat.completions.create(model=pid, messages=messages, **params)
                assert r.choices[0].message.content, r.choices
                done = events.next("llm:complete")
                assert done["participantId"] == pid, done
                assert done["model"] == ALIAS, done
                assert done["metrics"]["tokens"] == r.usage.completion_tokens, (done["metrics"], r.usage)
                metrics_ok(done["metrics"], streamed=False)
            return run

        def stream(pid, include_usage):
            def run():
                # The same request without streaming says how many tokens this prompt makes
                # (temperature 0: the same tokens). Its own llm:complete is consumed here.
                expected = client.chat.completions.create(model=pid, messages=messages, **params)
                events.next("llm:complete")
                extra = {"stream_options": {"include_usage": True}} if include_usage else {}
                chunks, usage, text = 0, None, ""
                for chunk in client.chat.completions.create(model=pid, messages=messages, stream=True,
                                                            **params, **extra):
                    if chunk.usage:
                        usage = chunk.usage.completion_tokens
                    if chunk.choices and chunk.choices[0].delta.content:
                        chunks += 1
                        text += chunk.choices[0].delta.content
                assert text == expected.choices[0].message.content, (text[:80], expected.choices[0].message.content[:80])
                done = events.next("llm:complete")
                m = done["metrics"]
                # llama-cpp-python sends no usage chunk even when asked; where a server does,
                # the hub reports that, else it counts the streamed tokens itself.
                want = expected.usage.completion_tokens
                assert usage is None or usage == want, (usage, want)
                assert m["tokens"] == want, (m, want, chunks)
                metrics_ok(m, streamed=True)
                assert m["tokens"] > 1
            return run

        def completions():
            events.drain()
            r = client.completions.create(model="direct", prompt="Once upon a time", **params)
            assert r.choices[0].text, r.choices
            done = events.next("llm:complete")
            assert done["metrics"]["tokens"] == r.usage.completion_tokens, (done["metrics"], r.usage)

        def completions_stream():
            events.drain()
            n = 0
            for chunk in client.completions.create(model="tunnel", prompt="Once upon a time",
                                                   stream=True, **params):
                n += bool(chunk.choices and chunk.choices[0].text)
            done = events.next("llm:complete")
            assert done["metrics"]["tokens"] >= n > 1, (done["metrics"], n)
            metrics_ok(done["metrics"], streamed=True)

        def embeddings():
            for pid in ("direct", "tunnel"):
                r = client.embeddings.create(model=pid, input=["hello", "world"])
                events.next("llm:complete")
                assert len(r.data) == 2, len(r.data)
                vector = r.data[0].embedding
                # A model without pooling answers one vector per token: [[...], ...].
                if vector and isinstance(vector[0], list):
                    vector = vector[0]
                assert len(vector) > 10 and all(isinstance(x, float) for x in vector), len(vector)

        def by_model():
            seen = set()
            for _ in range(4):
                client.chat.completions.create(model=f"model:{ALIAS}", messages=messages, max_tokens=4)
                seen.add(events.next("llm:complete")["participantId"])
            assert seen == {"direct", "tunnel"}, f"model:{ALIAS} went only to {seen}"

        suite.check("models", models)
        suite.check("chat direct", chat("direct"))
        suite.check("chat tunnel", chat("tunnel"))
        suite.check("stream with include_usage (direct)", stream("direct", True))
        suite.check("stream with include_usage (tunnel)", stream("tunnel", True))
        suite.check("stream without usage: the hub counts (direct)", stream("direct", False))
        suite.check("stream without usage: the hub counts (tunnel)", stream("tunnel", False))
        suite.check("completions", completions)
        suite.check("completions stream", completions_stream)
        suite.check("embeddings", embeddings)
        suite.check("model: routing", by_model)
        suite.check("one agent, two names: routing by each", by_each_name)

        import ollama  # the venv setup.sh made has it
        olla = ollama.Client(host=f"{hub_url}/rooms/{code}")

        def ollama_list():
            names = {m.model for m in olla.list().models}
            assert {ALIAS, MULTI[0], MULTI[1], "tiny"} <= names, names

        def ollama_chat():
            events.drain()
            r = olla.chat(model=ALIAS, messages=messages, options={"num_predict": 24, "temperature": 0, "seed": 7})
            assert r.message.content and r.done and r.done_reason in ("stop", "length"), r
            done = events.next("llm:complete")
            assert r.eval_count == done["metrics"]["tokens"], (r.eval_count, done["metrics"])

        def ollama_chat_stream():
            events.drain()
            parts = list(olla.chat(model=ALIAS, messages=messages, stream=True,
                                   options={"num_predict": 24, "temperature": 0, "seed": 7}))
            text = "".join(p.message.content for p in parts)
            assert text and parts[-1].done and not any(p.done for p in parts[:-1]), parts[-3:]
            done = events.next("llm:complete")
            assert parts[-1].eval_count == done["metrics"]["tokens"] > 1, (parts[-1], done["metrics"])

        def ollama_generate():
            r = olla.generate(model="model:" + ALIAS, prompt="Once upon a time", options={"num_predict": 8})
            assert r.response and r.done, r
            events.next("llm:complete")

        def ollama_embed():
            r = olla.embed(model=ALIAS, input=["hello", "world"])
            assert len(r.embeddings) == 2 and len(r.embeddings[0]) > 10, len(r.embeddings)
            events.next("llm:complete")

        suite.check("ollama library: list", ollama_list)
        suite.check("ollama library: chat (translated)", ollama_chat)
        suite.check("ollama library: streamed chat (translated)", ollama_chat_stream)
        suite.check("ollama library: generate (translated)", ollama_generate)
        suite.check("ollama library: embed (translated)", ollama_embed)

        import anthropic  # the venv setup.sh made has it
        claude = anthropic.Anthropic(base_url=f"{hub_url}/rooms/{code}", api_key="unused", max_retries=0)

        def anthropic_create():
            events.drain()
            m = claude.messages.create(model=ALIAS, max_tokens=24, messages=messages)
            assert m.content and m.content[0].type == "text" and m.content[0].text, m
            assert m.stop_reason in ("end_turn", "max_tokens"), m
            done = events.next("llm:complete")
            assert m.usage.output_tokens == done["metrics"]["tokens"], (m.usage, done["metrics"])

        def anthropic_stream():
            events.drain()
            with claude.messages.stream(model=ALIAS, max_tokens=24, messages=messages) as s:
                text = "".join(s.text_stream)
                final = s.get_final_message()
            assert text and final.usage.output_tokens > 1, final
            done = events.next("llm:complete")
            assert final.usage.output_tokens == done["metrics"]["tokens"], (final.usage, done["metrics"])

        def anthropic_count_tokens():
            # The participant's own tokenizer: a longer prompt has more tokens.
            short = claude.messages.count_tokens(model=ALIAS, messages=messages).input_tokens
            events.next("llm:complete")
            longer = claude.messages.count_tokens(
                model=ALIAS, messages=[{"role": "user", "content": "Name three colours, then three animals."}]
            ).input_tokens
            events.next("llm:complete")
            assert 0 < short < longer, (short, longer)

        suite.check("anthropic SDK: messages.create (translated)", anthropic_create)
        suite.check("anthropic SDK: messages.stream (translated)", anthropic_stream)
        suite.check("anthropic SDK: count_tokens (translated)", anthropic_count_tokens)
    except Exception as e:  # noqa: BLE001 — set-up failed: counted, reported
        suite.failed += 1
        print(f"FAIL  set-up: {type(e).__name__}: {e}", flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    print(f"{suite.passed} passed, {suite.failed} failed")
    sys.exit(1 if suite.failed else 0)


if __name__ == "__main__":
    main()
