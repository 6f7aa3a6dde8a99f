#!/usr/bin/env python3
"""A room used as an Anthropic base URL, with the `anthropic` Python SDK (what Claude Code
does with ANTHROPIC_BASE_URL): the hub answers the Messages API and translates for
participants that speak only OpenAI's.

    pip install anthropic
    python examples/anthropic_python.py http://localhost:3000 K7QF2M [MODEL] [--tools]

For a protected room, set GAMBIARRA_PASSWORD: it is the API key (sent as x-api-key).
`--tools` asks for a tool call instead (the participant must be able to make one).
"""

import os
import sys

import anthropic


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    hub, code = args[0].rstrip("/"), args[1]
    client = anthropic.Anthropic(base_url=f"{hub}/rooms/{code}",
                                 api_key=os.environ.get("GAMBIARRA_PASSWORD") or "unused",
                                 max_retries=0)

    models = [m.id for m in client.models.list().data]
    print("models:", models)
    assert models, "the room serves no model"
    model = args[2] if len(args) > 2 else models[0]
    ask = [{"role": "user", "content": "Say hello in one word."}]

    if "--tools" in sys.argv:
        tools = [{"name": "get_weather", "description": "The weather in a city",
                  "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                   "required": ["city"]}}]
        called = client.messages.create(model=model, max_tokens=64, tools=tools,
                                        messages=[{"role": "user", "content": "Weather in Recife?"}])
        uses = [b for b in called.content if b.type == "tool_use"]
        print("tool call:", [(u.name, u.input) for u in uses], called.stop_reason)
        assert uses and called.stop_reason == "tool_use", called
        with client.messages.stream(model=model, max_tokens=64, tools=tools,
                                    messages=[{"role": "user", "content": "Weather in Recife?"}]) as stream:
            final = stream.get_final_message()
        uses = [b for b in final.content if b.type == "tool_use"]
        print("streamed tool call:", [(u.name, u.input) for u in uses], final.stop_reason)
        assert uses and isinstance(uses[0].input, dict) and final.stop_reason == "tool_use", final
        print("anthropic example (tools): ok")
        return 0

    reply = client.messages.create(model=model, max_tokens=32, messages=ask)
    print("create:", reply.content[0].text, f"({reply.usage.output_tokens} tokens, {reply.stop_reason})")
    assert reply.content and reply.content[0].type == "text", reply

    with client.messages.stream(model=model, max_tokens=32, messages=ask) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    print(f"stream: {text!r} ({final.stop_reason})")
    assert text and final.stop_reason in ("end_turn", "max_tokens"), final

    counted = client.messages.count_tokens(model=model, messages=ask)
    print("count_tokens:", counted.input_tokens)
    assert counted.input_tokens > 0, counted

    try:
        client.messages.create(model="no-such-model", max_tokens=8, messages=ask)
        raise AssertionError("an unknown model must fail")
    except anthropic.NotFoundError as e:
        print("error surfaced:", e.status_code, e.body["error"]["type"])
    print("anthropic example: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
