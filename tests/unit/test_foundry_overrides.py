"""What the bridge leaves out of a Foundry v2 request, what it says about it, and the tool check."""

from __future__ import annotations

import pytest

from app.backends.foundry import overrides
from app.backends.foundry.definitions import parse
from app.core import input_items, notices, params
from app.core.turn import Message, ToolCall, ToolResult
from app.errors import InvalidRequestError
from app.wire.responses import ResponsesRequest


def test_strip_drops_every_refused_field_and_server_side_items() -> None:
    body = {
        "agent_reference": {"type": "agent_reference", "name": "a"},
        "input": [{"type": "reasoning", "id": "rs_1"}, {"role": "user", "content": "hi"}, {"type": "mcp_list_tools"}],
        "tools": [{"type": "function", "name": "f"}],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "temperature": 0.2,
        "top_p": None,
        "instructions": "be nice",
        "max_output_tokens": 50,
    }
    stripped = overrides.strip(body)
    assert stripped.body == {
        "agent_reference": body["agent_reference"],
        "input": [{"role": "user", "content": "hi"}],
        "max_output_tokens": 50,
    }
    assert stripped.tools == [{"type": "function", "name": "f"}]
    assert stripped.ignored == ("temperature", "instructions")  # defaults and nulls say nothing
    assert stripped.dropped_items == ("reasoning", "mcp_list_tools")
    # The fields are warned by the parameter table, one entry each; the items only the body shows.
    (items,) = overrides.warnings(stripped)
    assert items.startswith("input items dropped: 2 of type mcp_list_tools, reasoning")
    req = ResponsesRequest.model_validate({k: v for k, v in body.items() if k != "agent_reference"} | {"model": "m"})
    warned = params.unhonoured("responses", "foundry", req)
    assert [(w.param, w.status) for w in warned] == [("instructions", "dropped"), ("temperature", "dropped")]


def test_a_clean_body_has_nothing_to_say() -> None:
    stripped = overrides.strip({"input": "hi"})
    assert stripped.body == {"input": "hi"} and overrides.warnings(stripped) == []


def test_tools_are_checked_by_name_for_functions_and_by_type_otherwise() -> None:
    declared = parse(
        {"name": "a", "version": "3", "definition": {"tools": [{"type": "function", "name": "f"}, {"type": "mcp"}]}},
        "a",
    )
    assert declared.label == "agent 'a' version 3"
    ok = [{"type": "function", "name": "f"}, {"type": "function", "function": {"name": "f"}}, {"type": "mcp"}]
    overrides.check_declared(overrides.requested_tools(ok), declared.tools, declared.label)
    bad = [{"type": "function", "name": "g"}, {"type": "web_search"}]
    with pytest.raises(InvalidRequestError) as info:
        overrides.check_declared(overrides.requested_tools(bad), declared.tools, declared.label)
    assert info.value.code == "tool_not_declared" and info.value.param == "tools"
    assert "'g', 'web_search' are not declared by agent 'a' version 3" in info.value.message


def test_warnings_join_into_one_ascii_header_value() -> None:
    collected = notices.begin()
    notices.warn("Ignored temperature; really")
    notices.warn("Ignored temperature; really")
    notices.warn("second \u2013 one")
    assert notices.header_value(collected) == "Ignored temperature, really; second ? one"
    assert notices.header_value([]) is None


def test_input_items_render_and_page_like_openai() -> None:
    kept = input_items.compact(
        [
            Message("user", "q"),
            Message("assistant", "", (ToolCall("call_1", "f", "{}"),)),
            ToolResult("call_1", "42"),
        ]
    )
    items = input_items.render("resp_abc", kept)
    assert [i["type"] for i in items] == ["message", "function_call", "function_call_output"]
    assert items == input_items.render("resp_abc", kept)  # stable ids
    first = input_items.page(items, limit=2)
    assert [i["type"] for i in first["data"]] == ["function_call_output", "function_call"] and first["has_more"]
    rest = input_items.page(items, limit=2, after=first["last_id"])
    assert [i["type"] for i in rest["data"]] == ["message"] and not rest["has_more"]
    with pytest.raises(InvalidRequestError):
        input_items.page(items, order="sideways")
