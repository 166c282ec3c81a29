"""An MCP agent end to end in every approval mode, through the official openai client, on both backends:
no classic run is left in `requires_action` and no v2 response chain ends on an unanswered
`mcp_approval_request` upstream after any of them (the emulator's `asst_mcp` and `mcp-agent`,
driven by `/mcp NAME {json}`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.bridge import ENTRA, KEY, Bridge, routes_for, running_bridge
from tests.support.servers import ServerThread
from tests.support.spec import validate

ASK = '/mcp search {"q": "bridges"}'


@pytest.fixture
def mcp_bridge(emulator: ServerThread, redis_url: str, redis_prefix: str) -> Iterator[Bridge]:
    routes = routes_for(emulator.url)
    project = f"{emulator.url}/api/projects/demo"
    for name, mode in (("mcp-client", "client"), ("mcp-approve", "approve"), ("mcp-deny", "deny"), ("mcp-unset", None)):
        routes[name] = {"endpoint": emulator.url, "assistant_id": "asst_mcp", "auth": KEY}
        routes[f"v2-{name}"] = {"endpoint": project, "agent": {"name": "mcp-agent", "version": "1"}, "auth": ENTRA}
        if mode is not None:
            routes[name]["mcp_approval"] = mode
            routes[f"v2-{name}"]["mcp_approval"] = mode
    with running_bridge(emulator.url, redis_url, redis_prefix, routes=routes) as bridge:
        yield bridge


def _latest_v2(bridge: Bridge) -> dict[str, Any]:
    """The newest response the project stored for `mcp-agent`, read as a client of Azure would."""
    with httpx.Client(
        base_url=f"{bridge.emulator_url}/api/projects/demo/openai/v1", headers={"Authorization": "Bearer t"}
    ) as c:
        answer = c.get("/responses", params={"agent_name": "mcp-agent", "order": "desc", "limit": 1})
        answer.raise_for_status()
        [latest] = answer.json()["data"]
        return dict(latest)


def _no_run_waits(bridge: Bridge, model: str = "mcp-client") -> None:
    if model.startswith("v2-"):
        # v2 has no waiting state: a response asking for approval *completes*; the chain waits while
        # its newest response ends on an unanswered request.
        latest = _latest_v2(bridge)
        kinds = [i["type"] for i in latest["output"]]
        assert latest["status"] == "completed" and "mcp_approval_request" not in kinds, (latest["status"], kinds)
        return
    statuses = [r["status"] for t in bridge.emulator_threads() for r in t["runs"]]
    assert statuses and "requires_action" not in statuses, statuses


@pytest.mark.parametrize("model", ["mcp-client", "v2-mcp-client"])
@pytest.mark.parametrize("stream", [False, True])
def test_client_mode_surfaces_the_reserved_function_and_takes_its_answer(
    mcp_bridge: Bridge, model: str, stream: bool
) -> None:
    client = mcp_bridge.client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": ASK}]
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True))
        calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        call_id, name, arguments = calls[0].id, calls[0].function.name, calls[0].function.arguments
    else:
        completion = client.chat.completions.create(model=model, messages=messages)
        validate(completion.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionResponse")
        finish = [completion.choices[0].finish_reason]
        call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
        call_id, name, arguments = call.id, call.function.name, call.function.arguments  # type: ignore[union-attr]
    assert finish == ["tool_calls"] and name == "mcp_approval"
    assert json.loads(arguments or "{}")["server_label"] == "docs"
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": '{"approve": true}'},
    ]
    answer = client.chat.completions.create(model=model, messages=messages)
    assert "MCP search returned" in (answer.choices[0].message.content or "")
    assert answer.choices[0].finish_reason == "stop"
    _no_run_waits(mcp_bridge, model)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("mcp-approve", "MCP search returned"),
        ("mcp-deny", "was not approved"),
        ("v2-mcp-approve", "MCP search returned"),
        ("v2-mcp-deny", "was not approved"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_the_route_answers_for_the_client(mcp_bridge: Bridge, model: str, expected: str, stream: bool) -> None:
    client = mcp_bridge.client()
    messages = [{"role": "user", "content": ASK}]
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = client.chat.completions.create(model=model, messages=messages).choices[0].message.content or ""
    assert expected in text
    _no_run_waits(mcp_bridge, model)


@pytest.mark.parametrize("model", ["mcp-unset", "v2-mcp-unset"])
def test_no_setting_refuses_chat_names_the_setting_and_cancels_the_run(mcp_bridge: Bridge, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        mcp_bridge.client().chat.completions.create(model=model, messages=[{"role": "user", "content": ASK}])
    assert info.value.code == "mcp_approval_not_configured"
    assert f"routes.{model}.mcp_approval" in info.value.message
    if not model.startswith("v2-"):
        _no_run_waits(mcp_bridge, model)


@pytest.mark.parametrize("model", ["mcp-unset", "v2-mcp-unset"])
@pytest.mark.parametrize("stream", [False, True])
def test_responses_carry_approval_items_natively(mcp_bridge: Bridge, model: str, stream: bool) -> None:
    client = mcp_bridge.client()
    if stream:
        events = [
            e.model_dump(mode="json", exclude_unset=True)
            for e in client.responses.create(model=model, input=ASK, stream=True)
        ]
        for event in events:
            validate(event, "ResponseStreamEvent")
        first = events[-1]["response"]
    else:
        first = client.responses.create(model=model, input=ASK).model_dump(mode="json", exclude_unset=True)
    validate(first, "Response")
    request = first["output"][-1]
    assert request["type"] == "mcp_approval_request" and request["server_label"] == "docs"
    answer = client.responses.create(
        model=model,
        previous_response_id=first["id"],
        input=[{"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}],
    )
    assert "MCP search returned" in answer.output_text
    _no_run_waits(mcp_bridge, model)
