"""Client-side helpers: drain a streamed chat completion, run the seed scenario like a client would."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from tests.support import seed


@dataclass
class Collected:
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Any = None
    chunks: int = 0


def collect(stream: Any) -> Collected:
    """Aggregate a chat completion stream the way OpenAI's docs do (tool call deltas by index)."""
    out = Collected()
    calls: dict[int, dict[str, Any]] = {}
    for chunk in stream:
        out.chunks += 1
        if chunk.usage is not None:
            out.usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                out.text += delta.content
            for tc in delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                if tc.function is not None:
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
            if choice.finish_reason is not None:
                out.finish_reason = choice.finish_reason
    out.tool_calls = [calls[i] for i in sorted(calls)]
    return out


def turn(client: openai.OpenAI, *, stream: bool, **kwargs: Any) -> Collected:
    if stream:
        return collect(client.chat.completions.create(stream=True, **kwargs))
    completion = client.chat.completions.create(**kwargs)
    choice = completion.choices[0]
    return Collected(
        text=choice.message.content or "",
        tool_calls=[
            {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
            for tc in choice.message.tool_calls or []
        ],
        finish_reason=choice.finish_reason,
        usage=completion.usage,
    )


def answered(reply: Collected, *outputs: str) -> list[dict[str, Any]]:
    """The assistant's tool-call message as a client echoes it, then one tool message per output."""
    echo = {
        "role": "assistant",
        "content": reply.text or None,
        "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in reply.tool_calls
        ],
    }
    results = [
        {"role": "tool", "tool_call_id": call["id"], "content": output}
        for call, output in zip(reply.tool_calls, outputs, strict=False)
    ]
    return [echo, *results]


def answer_calls(messages: list[dict[str, Any]], reply: Collected) -> None:
    """Append the assistant's tool calls and the seed functions' outputs, as a chat client does."""
    messages += answered(reply, *(seed.call(c["name"], c["arguments"]) for c in reply.tool_calls))


def run_seed(client: openai.OpenAI, model: str, *, stream: bool) -> tuple[Collected, list[dict[str, Any]], int]:
    """The seed question with the seed's tools until the agent answers; returns (answer, history, rounds)."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": seed.QUESTION}]
    rounds = 0
    while True:
        reply = turn(client, stream=stream, model=model, messages=messages, tools=seed.TOOLS)
        if reply.finish_reason != "tool_calls":
            return reply, messages, rounds
        rounds += 1
        assert rounds <= 5, "the agent keeps calling tools"
        answer_calls(messages, reply)


def raw_sse(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> list[Any]:
    """POST a streamed request with plain httpx and return every `data:` payload (JSON, or the raw string)."""
    payloads: list[Any] = []
    with httpx.Client(timeout=30) as c, c.stream("POST", url, json=body, headers=headers or {}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                raw = line[len("data: ") :]
                payloads.append(raw if raw == "[DONE]" else json.loads(raw))
    return payloads
