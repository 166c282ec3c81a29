"""Neutral items as Assistants thread messages, and a turn's share of its run's usage (pure)."""

from __future__ import annotations

from app.backends.assistants import mapping
from app.core.turn import Message, ToolCall, ToolResult, Usage
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


def _step(status: str, usage: dict[str, int] | None) -> dict[str, object]:
    return {"id": f"step_{status}", "status": status, "usage": usage}


def test_only_completed_steps_count() -> None:
    steps = [
        _step("completed", {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}),
        _step("completed", {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}),
        _step("in_progress", None),
        _step("failed", {"prompt_tokens": 99, "completion_tokens": 99, "total_tokens": 198}),
    ]
    assert mapping.steps_usage(steps) == Usage(13, 5, 18)
    assert mapping.steps_usage([]) == mapping.NO_USAGE


def test_a_waiting_run_gives_what_its_steps_reported_since_the_last_turn() -> None:
    waiting = {"status": "requires_action", "usage": None}
    turn, so_far = mapping.turn_usage(waiting, reported=Usage(10, 4, 14), seen=Usage(13, 5, 18))
    assert (turn, so_far) == (Usage(3, 1, 4), Usage(13, 5, 18))
    nothing, kept = mapping.turn_usage(waiting, reported=mapping.NO_USAGE, seen=mapping.NO_USAGE)
    assert (nothing, kept) == (mapping.NO_USAGE, mapping.NO_USAGE)


def test_the_runs_own_cumulative_usage_wins_and_is_not_counted_twice() -> None:
    done = {"status": "completed", "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}}
    turn, so_far = mapping.turn_usage(done, reported=Usage(13, 5, 18), seen=Usage(13, 5, 18))
    assert (turn, so_far) == (Usage(17, 4, 21), Usage(30, 9, 39))
    # A figure below what was reported (never seen from Azure) gives nothing rather than negative tokens.
    low = {"status": "completed", "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    assert mapping.turn_usage(low, reported=Usage(13, 5, 18), seen=mapping.NO_USAGE) == (
        mapping.NO_USAGE,
        Usage(13, 5, 18),
    )
