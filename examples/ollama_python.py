#!/usr/bin/env python3
"""A room used as an Ollama host, with the `ollama` Python library: the hub answers Ollama's
API (`/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`, …) and translates for
participants that speak only OpenAI's.

    pip install ollama
    python examples/ollama_python.py http://localhost:3000 K7QF2M [MODEL]

For a protected room, set GAMBIARRA_PASSWORD: it goes as `Authorization: Bearer`.
"""

import os
import sys

import ollama


def main() -> int:
    hub, code = sys.argv[1].rstrip("/"), sys.argv[2]
    password = os.environ.get("GAMBIARRA_PASSWORD")
    headers = {"Authorization": f"Bearer {password}"} if password else None
    client = ollama.Client(host=f"{hub}/rooms/{code}", headers=headers)

    models = [m.model for m in client.list().models]
    print("models:", models)
    assert models, "the room serves no model"
    model = sys.argv[3] if len(sys.argv) > 3 else models[0]

    reply = client.chat(model=model, messages=[{"role": "user", "content": "Say hello in one word."}])
    print("chat:", reply.message.content, f"({reply.eval_count} tokens, {reply.done_reason})")
    assert reply.message.content and reply.done, reply

    pieces = [p.message.content for p in client.chat(
        model=model, messages=[{"role": "user", "content": "Count to five."}], stream=True)]
    print(f"stream: {len(pieces)} pieces: {''.join(pieces)!r}")
    assert len(pieces) > 1 and "".join(pieces), pieces

    print("generate:", client.generate(model=model, prompt="Once upon a time").response)

    vectors = client.embed(model=model, input=["hello", "world"]).embeddings
    print(f"embed: {len(vectors)} vectors of {len(vectors[0])}")
    assert len(vectors) == 2, vectors

    try:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("an unknown model must fail")
    except ollama.ResponseError as e:
        print("error surfaced:", e.status_code, e.error)
        assert e.status_code == 404, e
    print("ollama example: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
