"""Use a Gambiarra room from the official OpenAI Python SDK.

    pip install openai
    python openai_python.py http://localhost:3000 ROOMCODE [MODEL]

The room's OpenAI base URL is http://HUB/rooms/CODE/v1. `model` picks who answers:
"*" (anyone), a participant id, "model:llama3" (anyone serving that model) or "llama3".
The API key is unused unless the room has a password: then it is the password (here taken
from $GAMBIARRA_PASSWORD).
"""
import os
import sys

import openai
from openai import OpenAI


def main() -> int:
    hub, code = sys.argv[1].rstrip("/"), sys.argv[2]
    model = sys.argv[3] if len(sys.argv) > 3 else "*"
    api_key = os.environ.get("GAMBIARRA_PASSWORD") or "unused"
    client = OpenAI(base_url=f"{hub}/rooms/{code}/v1", api_key=api_key)

    # What the room serves: each model once (a name to send, and how many participants serve
    # it), then one entry per participant (its id routes to it).
    models = client.models.list()
    for m in models.data:
        meta = m.model_extra["gambiarra"]
        if "participants" in meta:
            print(f"model {m.id}: {meta['participants']['online']} participant(s) serve it")
        else:
            print(f"participant {m.id} serves {meta['model']}")
    assert models.data, "the room has no online participant"

    # A plain completion.
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello in one word."}]
    )
    text = reply.choices[0].message.content
    print("completion:", text)
    assert text, "empty completion"

    # A streamed completion.
    pieces = []
    stream = client.chat.completions.create(
        model=model, stream=True, messages=[{"role": "user", "content": "Count to five."}]
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    print(f"stream: {len(pieces)} chunks: {''.join(pieces)[:60]!r}")
    assert len(pieces) > 1, "the stream did not arrive in pieces"

    # An error the SDK surfaces with the hub's message.
    try:
        client.chat.completions.create(model="model:no-such-model", messages=[{"role": "user", "content": "hi"}])
    except openai.NotFoundError as e:
        print("error surfaced:", e.status_code, e.body.get("message") if isinstance(e.body, dict) else e.body)
        assert "No available participant" in str(e)
    else:
        raise AssertionError("expected a 404 for an unknown model")
    print("python example: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
