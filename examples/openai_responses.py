#!/usr/bin/env python3
"""OpenAI's Responses API (`client.responses.create`, what Codex and newer agent SDKs use)
against a room. The hub passes it through to participants whose server speaks it; it does not
translate it, so in a room where none does the answer is 501 naming what the room speaks.

    pip install openai
    python examples/openai_responses.py http://localhost:3000 K7QF2M [MODEL] [--expect-501]
"""

import os
import sys

from openai import APIStatusError, OpenAI


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    hub, code = args[0].rstrip("/"), args[1]
    model = args[2] if len(args) > 2 else "*"
    client = OpenAI(base_url=f"{hub}/rooms/{code}/v1",
                    api_key=os.environ.get("GAMBIARRA_PASSWORD") or "unused", max_retries=0)
    try:
        r = client.responses.create(model=model, input="Say hello in one word.")
    except APIStatusError as e:
        print("responses:", e.status_code, e.message)
        assert "--expect-501" in sys.argv and e.status_code == 501, e
        print("responses example (501): ok")
        return 0
    assert "--expect-501" not in sys.argv, "expected 501, got an answer"
    print("responses:", r.output_text)
    assert r.output_text, r
    print("responses example: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
