"""Foundry v2 mapping (pure): items to Responses input, options, the agent a request reaches, outcomes."""

from __future__ import annotations

from typing import Any

import pytest

from app.backends.foundry import mapping
from app.core import params
from app.core.turn import FunctionTool, Message, ToolCall, ToolResult, TurnOptions, Usage
from app.errors import AgentFailedError, RateLimitError, RunFailedError, UpstreamError
from app.settings import RouteSettings

ROUTE = RouteSettings.model_validate(
    {
        "endpoint": "https://res.services.ai.azure.com/api/projects/p",
        "agent": {"name": "demo-agent", "version": "1"},
        "auth": {"type": "api_key", "api_key": "k"},
    }
)
DEMO_REF = {"type": "agent_reference", "name": "demo-agent", "version": "1"}


def _response(status: str, output: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "status": status, "output": output or [], **extra}


def _fc(call_id: str, name: str = "f", arguments: str = "{}") -> dict[str, Any]:
    return {"type": "function_call", "id": "fc_1", "call_id": call_id, "name": name, "arguments": arguments}


MESSAGE_ITEM = {
    "type": "message",
    "id": "msg_1",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "x", "annotations": []}],
}


# -- items -> input -----------------------------------------------------------------------------


def test_messages_become_message_items() -> None:
    items = (Message("user", "hi"), Message("assistant", "Echo: hi"), Message("user", "again"))
    assert mapping.input_items(items) == [
        {"type": "message", "role": "user", "content": "hi"},
        {"type": "message", "role": "assistant", "content": "Echo: hi"},
        {"type": "message", "role": "user", "content": "again"},
    ]


def test_assistant_tool_calls_follow_their_message_and_results_become_outputs() -> None:
    calls = (ToolCall("call_a", "f", '{"x": 1}'), ToolCall("call_b", "g", "{}"))
    items = (
        Message("user", "go"),
        Message("assistant", "Let me look.", calls),
        ToolResult("call_a", "1"),
        ToolResult("call_b", "2"),
    )
    assert mapping.input_items(items) == [
        {"type": "message", "role": "user", "content": "go"},
        {"type": "message", "role": "assistant", "content": "Let me look."},
        {"type": "function_call", "call_id": "call_a", "name": "f", "arguments": '{"x": 1}'},
        {"type": "function_call", "call_id": "call_b", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_a", "output": "1"},
        {"type": "function_call_output", "call_id": "call_b", "output": "2"},
    ]


def test_an_assistant_message_with_only_tool_calls_adds_no_empty_message() -> None:
    items = (Message("assistant", "", (ToolCall("call_a", "f", "{}"),)),)
    assert mapping.input_items(items) == [
        {"type": "function_call", "call_id": "call_a", "name": "f", "arguments": "{}"}
    ]


def test_an_empty_user_message_is_still_sent() -> None:
    assert mapping.input_items((Message("user", ""),)) == [{"type": "message", "role": "user", "content": ""}]


def test_text_parts_stay_parts_in_the_role_s_part_type() -> None:
    items = (Message("user", "a\nb", parts=("a", "b")), Message("assistant", "c\nd", parts=("c", "d")))
    assert mapping.input_items(items) == [
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "c"}, {"type": "output_text", "text": "d"}],
        },
    ]


# -- tools and options --------------------------------------------------------------------------


def test_function_tools_are_flat() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    assert mapping.tool_param(FunctionTool("f", "does f", schema, True)) == {
        "type": "function",
        "name": "f",
        "description": "does f",
        "parameters": schema,
        "strict": True,
    }
    # Chat tools are not strict unless they say so (Responses would default to strict).
    assert mapping.tool_param(FunctionTool("g")) == {
        "type": "function",
        "name": "g",
        "parameters": {"type": "object", "properties": {}},
        "strict": False,
    }


def test_options_become_body_keys_and_v2_refusals_are_never_sent() -> None:
    options = TurnOptions(
        temperature=0.2, top_p=0.9, max_output_tokens=50, tool_choice="required", parallel_tool_calls=False
    )
    assert mapping.option_params(options) == {"max_output_tokens": 50}
    assert mapping.option_params(TurnOptions()) == {}


def test_sanitize_drops_what_foundry_v2_refuses_next_to_an_agent() -> None:
    body = {"input": "x", "temperature": 0.2, "top_p": 0.5, "tool_choice": "auto", "parallel_tool_calls": True}
    clean = mapping.sanitize_passthrough(body, ROUTE)
    assert not set(params.V2_REFUSED) & set(clean)
    assert clean["input"] == "x" and "agent_reference" in clean


def test_response_format_becomes_text_format() -> None:
    schema_format = {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}, "strict": True}}
    assert mapping.option_params(TurnOptions(response_format=schema_format)) == {
        "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}, "strict": True}}
    }
    assert mapping.text_param({"type": "json_object"}) == {"format": {"type": "json_object"}}


# -- the agent comes from config only -----------------------------------------------------------


def test_agent_reference_of_the_route() -> None:
    assert mapping.agent_reference(ROUTE) == DEMO_REF
    unversioned = RouteSettings.model_validate(
        {"endpoint": ROUTE.endpoint, "agent": {"name": "demo-agent"}, "auth": {"type": "api_key", "api_key": "k"}}
    )
    assert mapping.agent_reference(unversioned) == {"type": "agent_reference", "name": "demo-agent"}


@pytest.mark.parametrize(
    "selector",
    [
        {"agent_reference": {"type": "agent_reference", "name": "flights-demo"}},
        {"agent": {"type": "agent_reference", "name": "flights-demo", "version": "1"}},
        {"assistant_id": "asst_other"},
        {"model": "gpt-4o"},
        # What `extra_body={...}` puts in the body: all of them at the top level at once.
        {
            "model": "other-route",
            "agent_reference": {"type": "agent_reference", "name": "flights-demo"},
            "agent": {"name": "flights-demo"},
            "assistant_id": "asst_x",
        },
    ],
)
def test_sanitize_removes_every_agent_selector_and_injects_the_route(selector: dict[str, Any]) -> None:
    body = {"input": "hi", "stream": True, "metadata": {"k": "v"}, **selector}
    clean = mapping.sanitize_passthrough(body, ROUTE)
    assert clean == {"input": "hi", "stream": True, "metadata": {"k": "v"}, "agent_reference": DEMO_REF}
    assert "flights-demo" not in str(clean)
    assert body["input"] == "hi" and all(k in body for k in selector)  # the caller's dict is left alone


def test_sanitize_cleans_a_literal_extra_body_too() -> None:
    body = {"input": "hi", "extra_body": {"agent_reference": {"name": "flights-demo"}, "model": "m", "x": 1}}
    clean = mapping.sanitize_passthrough(body, ROUTE)
    assert clean["extra_body"] == {"x": 1}
    assert clean["agent_reference"] == DEMO_REF


def test_sanitize_keeps_everything_else() -> None:
    body = {
        "input": [{"type": "function_call_output", "call_id": "call_1", "output": "42"}],
        "previous_response_id": "resp_0",
        "tools": [{"type": "function", "name": "f"}],
        "include": ["message.output_text.logprobs"],
        "text": {"format": {"type": "text"}},
        "store": False,
    }
    assert mapping.sanitize_passthrough(body, ROUTE) == {**body, "agent_reference": DEMO_REF}


# -- usage, outcomes, function calls ------------------------------------------------------------


def test_usage_maps_input_and_output_tokens() -> None:
    response = _response("completed", usage={"input_tokens": 7, "output_tokens": 3, "total_tokens": 10})
    assert mapping.usage_of(response) == Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10)
    assert mapping.usage_of(_response("completed", usage={"input_tokens": 2, "output_tokens": 1})) == Usage(2, 1, 3)
    assert mapping.usage_of(_response("completed")) is None


def test_outcome_of_each_final_status() -> None:
    assert mapping.outcome(_response("completed", [MESSAGE_ITEM])) == "stop"
    assert mapping.outcome(_response("completed", [MESSAGE_ITEM, _fc("call_1")])) == "tool_calls"
    assert mapping.outcome(_response("incomplete", [MESSAGE_ITEM])) == "length"


def test_a_failed_response_raises_the_error_of_its_kind() -> None:
    limited = _response("failed", error={"code": "rate_limit_exceeded", "message": "Try again in 7 seconds."})
    with pytest.raises(RateLimitError) as info:
        mapping.outcome(limited)
    assert (info.value.status, info.value.code, info.value.headers["Retry-After"]) == (429, "rate_limit_exceeded", "7")
    assert "Try again in 7 seconds." in info.value.message
    with pytest.raises(RunFailedError) as transient:
        mapping.outcome(_response("failed", error={"code": "server_error", "message": "oops"}))
    assert transient.value.status == 502
    with pytest.raises(AgentFailedError) as bare:
        mapping.outcome(_response("failed"))
    assert (bare.value.status, bare.value.code) == (422, "run_failed")


def test_a_filtered_answer_is_content_filter_and_only_a_token_limit_is_length() -> None:
    assert mapping.outcome(_response("failed", error={"code": "content_filter", "message": "x"})) == "content_filter"
    filtered = {**_response("incomplete", [MESSAGE_ITEM]), "incomplete_details": {"reason": "content_filter"}}
    assert mapping.outcome(filtered) == "content_filter"
    limited = {**_response("incomplete", [MESSAGE_ITEM]), "incomplete_details": {"reason": "max_output_tokens"}}
    assert mapping.outcome(limited) == "length"


@pytest.mark.parametrize("status", ["cancelled", "in_progress", "queued", None])
def test_other_statuses_are_upstream_errors(status: str | None) -> None:
    with pytest.raises(UpstreamError):
        mapping.outcome({"id": "resp_1", "status": status, "output": []})


def test_function_calls_use_the_call_id() -> None:
    response = _response(
        "completed",
        [MESSAGE_ITEM, _fc("call_a", "get_flights", '{"date_1": "x"}'), {**_fc("call_b", "g"), "arguments": ""}],
    )
    assert mapping.function_calls(response) == (
        ToolCall(id="call_a", name="get_flights", arguments='{"date_1": "x"}'),
        ToolCall(id="call_b", name="g", arguments=""),
    )
    assert mapping.function_calls(_response("completed", [MESSAGE_ITEM])) == ()
