"""The items an agent-endpoint route keeps (`app.core.history`): their shape, what is replayed, the bound."""

from __future__ import annotations

import pytest

from app.core import history
from app.errors import InvalidRequestError


def test_input_is_kept_as_items_with_ids_and_text_parts() -> None:
    kept = history.input_items("hi")
    assert kept == [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}], "type": "message", "id": kept[0]["id"]}
    ]
    assert kept[0]["id"].startswith("msg_")
    call = history.input_items([{"type": "function_call_output", "call_id": "c1", "output": "42", "id": "fc_mine"}])
    assert call == [{"type": "function_call_output", "call_id": "c1", "output": "42", "id": "fc_mine"}]


@pytest.mark.parametrize("value", [[{"type": "item_reference", "id": "msg_1"}], [{"type": "reasoning"}], [3], 5])
def test_what_cannot_be_kept_is_a_400_naming_it(value: object) -> None:
    with pytest.raises(InvalidRequestError) as info:
        history.input_items(value)
    assert info.value.param is not None and info.value.param.startswith("input")


def test_only_messages_and_function_calls_are_replayed_without_status() -> None:
    output = [
        {"type": "mcp_call", "id": "mcp_1", "status": "completed"},
        {"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f", "arguments": "{}", "status": "completed"},
        {"type": "message", "id": "msg_1", "role": "assistant", "content": [], "status": "completed"},
    ]
    assert [i["id"] for i in history.replayable(output)] == ["fc_1", "msg_1"]
    assert all("status" not in i for i in history.replayable(output))
    assert history.replayable(None) == []


def test_the_bound_counts_what_is_kept_and_what_the_turn_adds() -> None:
    history.check_bound(8, 2, 10, param="input")
    with pytest.raises(InvalidRequestError) as info:
        history.check_bound(9, 2, 10, param="input")
    assert info.value.code == "conversation_too_long" and "holds 9 items" in info.value.message
