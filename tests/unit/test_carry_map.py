"""A classic thread's messages and run steps as Foundry v2 conversation items (shapes: OpenAI's Assistants
schemas as vendored in tests/schemas, `MessageObject`, `RunStepDetailsToolCallsFunctionObject`)."""

from __future__ import annotations

from typing import Any

from app.core.carry_map import BATCH, carry_items, reply_runs


def _msg(mid: str, role: str, text: str, run_id: str | None = None, **extra: Any) -> dict[str, Any]:
    content = [{"type": "text", "text": {"value": text, "annotations": []}}] if text else []
    return {"id": mid, "object": "thread.message", "role": role, "content": content, "run_id": run_id, **extra}


def _calls(step_id: str, *calls: dict[str, Any]) -> dict[str, Any]:
    return {"id": step_id, "type": "tool_calls", "step_details": {"type": "tool_calls", "tool_calls": list(calls)}}


def _created(step_id: str, message_id: str) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "message_creation",
        "step_details": {"type": "message_creation", "message_creation": {"message_id": message_id}},
    }


def _function(call_id: str, name: str, arguments: str, output: str | None) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments, "output": output}}


def test_messages_with_roles_and_the_calls_of_their_run_before_the_reply() -> None:
    messages = [
        _msg("msg_1", "user", "weather?"),
        _msg("msg_2", "assistant", "It is sunny.", "run_1"),
        _msg("msg_3", "user", "thanks"),
        _msg("msg_4", "assistant", "You're welcome.", "run_2"),
    ]
    steps = {
        "run_1": [
            _calls("step_1", _function("call_1", "get_weather", '{"city":"Paris"}', "sunny")),
            _created("s2", "msg_2"),
        ],
        "run_2": [_created("step_3", "msg_4")],
    }
    carried = carry_items(messages, steps, ["run_1", "run_2"])
    assert carried.items == (
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "You're welcome."}]},
    )
    assert carried.lost == () and carried.calls == 1 and carried.messages == 4
    assert reply_runs(messages) == ["run_1", "run_2"]


def test_what_cannot_be_carried_is_listed() -> None:
    messages = [
        _msg("msg_1", "user", "see file", attachments=[{"file_id": "file-a", "tools": [{"type": "file_search"}]}]),
        {
            "id": "msg_2",
            "role": "assistant",
            "run_id": "run_1",
            "content": [{"type": "image_file", "image_file": {"file_id": "file-img"}}],
        },
    ]
    steps = {
        "run_1": [
            _calls("step_1", {"id": "call_ci", "type": "code_interpreter", "code_interpreter": {"input": "1+1"}}),
            _calls("step_2", _function("call_x", "f", "{}", None)),
        ],
        "run_9": [_calls("step_9", _function("call_9", "g", "{}", "out"))],
    }
    carried = carry_items(messages, steps, ["run_1", "run_9"])
    assert [i["role"] for i in carried.items] == ["user"]
    lost = "\n".join(carried.lost)
    for expected in (
        "attachment file-a",
        "image file file-img",
        "code_interpreter tool call call_ci",
        "call_x",
        "call_9",
    ):
        assert expected in lost


def test_batches_are_at_most_twenty_and_resume_after_what_is_held() -> None:
    messages = [_msg(f"msg_{i}", "user", f"m{i}") for i in range(45)]
    carried = carry_items(messages, {}, [])
    assert [len(b) for b in carried.batches()] == [20, 20, 5]
    assert [len(b) for b in carried.batches(20)] == [20, 5]
    assert carried.batches(45) == [] and BATCH == 20
