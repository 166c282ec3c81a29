"""Neutral items as Assistants thread messages (pure)."""

from __future__ import annotations

from app.backends.assistants import mapping
from app.core.turn import Message, ToolCall, ToolResult
from tests.support.spec import validate


def test_several_text_parts_stay_parts() -> None:
    param = mapping.message_param(Message("user", "part one\npart two", parts=("part one", "part two")))
    assert param == {
        "role": "user",
        "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}],
    }
    validate(param, "CreateMessageRequest")


def test_empty_content_stays_empty() -> None:
    for role in ("user", "assistant"):
        param = mapping.message_param(Message(role, ""))  # type: ignore[arg-type]
        assert param == {"role": role, "content": ""}
        validate(param, "CreateMessageRequest")
    result = mapping.message_param(ToolResult("call_1", ""))
    assert result == {"role": "user", "content": "[tool call call_1 returned]\n"}
    assert "(empty)" not in str(result)


def test_tool_calls_are_written_as_text() -> None:
    param = mapping.message_param(Message("assistant", "", (ToolCall("call_1", "f", "{}"),)))
    assert param == {"role": "assistant", "content": "[called f({}) as call_1]"}
