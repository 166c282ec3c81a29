"""Responses input parsing and the item ids that name their response (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from app.core import input_items, responses_codec, responses_input
from app.core.turn import Message, ToolCall, ToolResult
from app.errors import InvalidRequestError
from app.wire.responses import ResponsesRequest


def _req(items: list[dict[str, Any]]) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", "input": items})


def test_item_ids_name_their_response_and_no_other_ids_do() -> None:
    response_id = responses_codec.new_response_id()
    for item_id in (
        responses_codec.output_item_id(response_id, "msg", 0),
        responses_codec.output_item_id(response_id, "fc", 12),
        *(item["id"] for item in input_items.render(response_id, [["u", "q", []], ["t", "call_1", "out"]])),
    ):
        assert responses_codec.response_of_item(item_id) == response_id
    hexes = response_id.removeprefix("resp_")
    for other in ("msg_nope", "", "fc_" + hexes, "msg" + hexes + "o0", "msg_" + hexes.upper() + "o0"):
        assert responses_codec.response_of_item(other) is None


def test_references_parse_as_the_items_they_name_and_mark_what_the_thread_holds() -> None:
    req = _req(
        [
            {"role": "user", "content": "q"},
            {"type": "item_reference", "id": "msg_a"},
            {"type": "item_reference", "id": "fc_b"},
            {"type": "function_call_output", "call_id": "call_1", "output": "42"},
        ]
    )
    assert responses_input.item_references(req) == [(1, "msg_a"), (2, "fc_b")]
    referenced = {
        1: {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "let me look"}]},
        2: {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
    }
    parsed = responses_input.parse_input(req, referenced)
    assert parsed.items == (
        Message("user", "q"),
        Message("assistant", "let me look", (ToolCall("call_1", "f", "{}"),)),
        ToolResult("call_1", "42"),
    )
    assert parsed.held == 2
    assert responses_input.parse_input(_req([{"role": "user", "content": "q"}])).held == 0


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ({"type": "item_reference", "id": "msg_a"}, "Item with id 'msg_a' not found."),
        ({"type": "item_reference"}, None),
    ],
)
def test_an_unresolved_reference_names_its_id(reference: dict[str, Any], message: str | None) -> None:
    req = _req([{"role": "user", "content": "q"}, reference])
    with pytest.raises(InvalidRequestError) as info:
        responses_input.item_references(req) if message is None else responses_input.parse_input(req, {})
    assert info.value.param == "input[1].id"
    if message is not None:
        assert info.value.message == message
