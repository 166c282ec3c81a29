"""The emulator's Foundry v2 surface is strict like Azure: bad bodies, unknown ids, missing versions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.servers import ServerThread

DEMO = {"type": "agent_reference", "name": "demo-agent"}


@pytest.fixture
def client(emulator: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{emulator.url}/api/projects/demo", headers={"Authorization": "Bearer t"}) as c:
        yield c


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    return error


def _create(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/openai/v1/responses", json=body)


def test_unknown_top_level_field_is_400(client: httpx.Client) -> None:
    error = _error(_create(client, input="hi", agent_reference=DEMO, temprature=0.2), 400)
    assert (error["code"], error["param"]) == ("unknown_parameter", "temprature")
    error = _error(_create(client, input="hi", agent_reference={**DEMO, "id": "x"}), 400)
    assert (error["code"], error["param"]) == ("unknown_parameter", "agent_reference.id")


def test_unknown_agent_or_version_is_404(client: httpx.Client) -> None:
    error = _error(_create(client, input="hi", agent_reference={"type": "agent_reference", "name": "nope"}), 404)
    assert "nope" in error["message"]
    _error(_create(client, input="hi", agent_reference={**DEMO, "version": "9"}), 404)
    assert _create(client, input="hi", agent_reference={**DEMO, "version": "1"}).status_code == 200


def test_legacy_agent_key_and_model_only_requests(client: httpx.Client) -> None:
    legacy = _create(client, input="old key", agent=DEMO, model="ignored-model")
    assert legacy.status_code == 200
    assert (legacy.json()["model"], legacy.json()["agent"]["name"]) == ("gpt-4o", "demo-agent")
    assert _create(client, input="plain").json()["error"]["param"] == "model"
    plain = _create(client, input="plain", model="gpt-4o-mini")
    assert plain.status_code == 200
    assert "agent" not in plain.json()
    error = _error(_create(client, input="x", agent=DEMO, agent_reference=DEMO), 400)
    assert error["code"] == "mutually_exclusive_parameters"
    listed = client.get("/openai/v1/responses", params={"agent_id": "demo-agent:1"}).json()
    assert [r["id"] for r in listed["data"]] == [legacy.json()["id"]]
    everything = client.get("/openai/v1/responses", params={"order": "asc"}).json()
    assert [r["id"] for r in everything["data"]] == [legacy.json()["id"], plain.json()["id"]]


def test_function_call_output_needs_a_known_call_id(client: httpx.Client) -> None:
    first = _create(client, input="hello", agent_reference=DEMO).json()
    output = {"type": "function_call_output", "call_id": "call_missing", "output": "x"}
    error = _error(_create(client, previous_response_id=first["id"], input=[output], agent_reference=DEMO), 400)
    assert error["message"] == "No tool call found for function call output with call_id call_missing."
    assert error["param"] == "input"
    # A function call replayed in the same input (store: false style) makes it valid. The tools come with a
    # model-only request: next to an agent they are refused (test_emulator_v2_refusals.py).
    call = {"type": "function_call", "call_id": "call_missing", "name": "f", "arguments": "{}"}
    replay = _create(
        client,
        input=[{"role": "user", "content": "/tool f {}"}, call, output],
        tools=[{"type": "function", "name": "f", "parameters": {}}],
        model="gpt-4o",
        store=False,
    )
    assert replay.json()["output"][0]["content"][0]["text"] == "Tool f returned: x"


def test_state_rules(client: httpx.Client) -> None:
    conversation = client.post("/openai/v1/conversations", json={}).json()
    first = _create(client, input="hi", agent_reference=DEMO).json()
    error = _error(
        _create(
            client,
            input="hi",
            agent_reference=DEMO,
            previous_response_id=first["id"],
            conversation=conversation["id"],
        ),
        400,
    )
    assert error["code"] == "mutually_exclusive_parameters"
    error = _error(_create(client, input="hi", agent_reference=DEMO, previous_response_id="resp_unknown"), 400)
    assert error["code"] == "previous_response_not_found"
    assert client.delete(f"/openai/v1/conversations/{conversation['id']}").json()["deleted"] is True
    _error(_create(client, input="hi", agent_reference=DEMO, conversation=conversation["id"]), 404)
    _error(client.get(f"/openai/v1/conversations/{conversation['id']}"), 404)


def test_store_false_is_not_retrievable(client: httpx.Client) -> None:
    body = _create(client, input="forget me", agent_reference=DEMO, store=False).json()
    assert body["store"] is False
    assert body["status"] == "completed"
    _error(client.get(f"/openai/v1/responses/{body['id']}"), 404)
    _error(_create(client, input="x", agent_reference=DEMO, previous_response_id=body["id"]), 400)


def test_delete_then_get_is_404(client: httpx.Client) -> None:
    body = _create(client, input="short-lived", agent_reference=DEMO).json()
    assert client.get(f"/openai/v1/responses/{body['id']}").status_code == 200
    deleted = client.delete(f"/openai/v1/responses/{body['id']}").json()
    assert deleted == {"id": body["id"], "object": "response", "deleted": True}
    _error(client.get(f"/openai/v1/responses/{body['id']}"), 404)
    _error(client.delete(f"/openai/v1/responses/{body['id']}"), 404)


def test_agents_need_an_api_version(client: httpx.Client) -> None:
    error = _error(client.get("/agents"), 400)
    assert error["param"] == "api-version"
    _error(client.get("/agents/demo-agent/versions"), 400)
    _error(client.get("/agents", params={"api-version": "2024-01-01"}), 400)
    listed = client.get("/agents", params={"api-version": "v1"}).json()
    assert {a["name"] for a in listed["data"]} == {"demo-agent", "flights-demo", "mcp-agent", "code-agent"}
    assert listed["data"][0]["versions"]["latest"]["object"] == "agent.version"


def test_agent_versions_lifecycle(client: httpx.Client) -> None:
    v1 = {"api-version": "v1"}
    nested = {"kind": "prompt", "model": "gpt-4o", "tools": [{"type": "function", "function": {"name": "f"}}]}
    error = _error(client.post("/agents/shape/versions", params=v1, json={"definition": nested}), 400)
    assert error["param"] == "definition.tools[0].function"
    _error(
        client.post("/agents/-bad-/versions", params=v1, json={"definition": {"kind": "prompt", "model": "m"}}),
        400,
    )
    made = client.post("/agents/tmp/versions", params=v1, json={"definition": {"kind": "prompt", "model": "m"}})
    assert made.json()["id"] == "tmp:1"
    deleted = client.delete("/agents/tmp/versions/1", params=v1).json()
    assert deleted == {"object": "agent.version.deleted", "name": "tmp", "version": "1", "deleted": True}
    _error(client.get("/agents/tmp", params=v1), 404)
    legacy = client.post("/agents", params=v1, json={"name": "old", "definition": {"kind": "prompt", "model": "m"}})
    assert legacy.json()["versions"]["latest"]["version"] == "1"


def test_item_reference_and_background_cancel(client: httpx.Client) -> None:
    first = _create(client, input="remember this", agent_reference=DEMO).json()
    message_id = first["output"][0]["id"]
    ref = _create(
        client,
        input=[{"type": "item_reference", "id": message_id}, {"role": "user", "content": "ok"}],
        agent_reference=DEMO,
    )
    assert ref.status_code == 200
    _error(_create(client, input=[{"type": "item_reference", "id": "msg_nope"}], agent_reference=DEMO), 400)

    slow = _create(client, input="/sleep 5000\nlater", agent_reference=DEMO, background=True).json()
    assert slow["status"] == "queued"
    cancelled = client.post(f"/openai/v1/responses/{slow['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    quick = _create(client, input="soon", agent_reference=DEMO, background=True).json()
    deadline = time.monotonic() + 5
    while client.get(f"/openai/v1/responses/{quick['id']}").json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    _error(client.post(f"/openai/v1/responses/{quick['id']}/cancel"), 400)
    _error(client.post(f"/openai/v1/responses/{first['id']}/cancel"), 400)
