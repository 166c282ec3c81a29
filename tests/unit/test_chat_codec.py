"""Chat request parsing and completion/chunk rendering (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from app.core import chat_codec
from app.core.turn import Message, ToolCall, ToolResult, Usage
from app.errors import InvalidRequestError
from app.wire.chat import ChatCompletionRequest
from tests.support.spec import validate, validated_completion


def _req(messages: list[dict[str, Any]], **extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": messages, **extra})


def _call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


def test_system_and_developer_messages_become_instructions() -> None:
    turn = chat_codec.parse_request(
        _req(
            [
                {"role": "system", "content": "A"},
                {"role": "user", "content": "hi"},
                {"role": "developer", "content": [{"type": "text", "text": "B"}]},
                {"role": "user", "content": "again"},
            ]
        )
    )
    assert turn.instructions == "A\n\nB"
    assert turn.items == (Message("user", "hi"), Message("user", "again"))


def test_text_parts_and_null_content_normalise() -> None:
    turn = chat_codec.parse_request(
        _req(
            [
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": None, "tool_calls": [_call("c1")]},
                {"role": "tool", "tool_call_id": "c1", "content": "out"},
            ]
        )
    )
    assert turn.items == (
        Message("user", "a\nb", parts=("a", "b")),
        Message("assistant", "", (ToolCall("c1", "f", "{}"),)),
        ToolResult("c1", "out"),
    )


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "tool", "tool_call_id": "x", "content": "1"}], "messages[0].tool_call_id"),
        ([{"role": "user", "content": "q"}, {"role": "tool", "content": "1"}], "messages[1].tool_call_id"),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "tool_calls": [_call("a"), _call("b")]},
                {"role": "tool", "tool_call_id": "a", "content": "1"},
            ],
            "messages",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "tool_calls": [_call("a")]},
                {"role": "tool", "tool_call_id": "a", "content": "1"},
                {"role": "tool", "tool_call_id": "a", "content": "again"},
            ],
            "messages[3].tool_call_id",
        ),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "messages[1].role"),
        ([{"role": "system", "content": "s"}], "messages"),
    ],
)
def test_invalid_conversations_name_the_field(messages: list[dict[str, Any]], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        chat_codec.parse_request(_req(messages))
    assert info.value.param == param


def test_options_and_tools_are_carried() -> None:
    turn = chat_codec.parse_request(
        _req(
            [{"role": "user", "content": "q"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            tool_choice="required",
            max_tokens=5,
            temperature=0.2,
        )
    )
    assert turn.tools is not None and turn.tools[0].name == "f"
    assert turn.options.tool_choice == "required"
    assert turn.options.max_output_tokens == 5
    assert turn.options.temperature == 0.2


def test_rendered_completion_validates_against_the_spec() -> None:
    validated_completion(text="hi", tool_calls=(), finish_reason="stop", usage=Usage(1, 2, 3))
    calls = validated_completion(
        completion_id="chatcmpl-2",
        text="",
        tool_calls=(ToolCall("call_1", "f", "{}"),),
        finish_reason="tool_calls",
        usage=None,
    )
    assert calls["choices"][0]["message"]["content"] is None
    assert calls["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}


@pytest.mark.parametrize("include_usage", [False, True])
def test_every_chunk_validates_against_the_spec(include_usage: bool) -> None:
    r = chat_codec.ChunkRenderer("m", include_usage=include_usage)
    chunks = [
        r.role(),
        r.text("Hel"),
        r.tool_calls((ToolCall("call_1", "f", "{}"), ToolCall("call_2", "g", '{"a":1}'))),
        r.finish("tool_calls"),
    ]
    if include_usage:
        chunks.append(r.usage(Usage(3, 4, 7)))
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[2]["choices"][0]["delta"]["tool_calls"][1]["index"] == 1
