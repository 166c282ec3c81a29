"""Foundry v2 refuses what Azure refuses next to an agent, with Azure's status and body (raw HTTP).

Sources, per rule, in `app/emulator/foundry_v2_rules.py` and `foundry_v2_background.py`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.emulator.foundry_v2_rules import AGENT_OVERRIDES, SERVER_SIDE_ITEMS
from tests.support.servers import ServerThread

DEMO = {"type": "agent_reference", "name": "demo-agent", "version": "1"}
VALUES: dict[str, Any] = {
    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "temperature": 0.2,
    "top_p": 0.5,
    "instructions": "Be brief.",
    "text": {"format": {"type": "text"}},
    "reasoning": {"effort": "low"},
}


@pytest.fixture
def client(emulator: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{emulator.url}/api/projects/demo", headers={"Authorization": "Bearer t"}) as c:
        yield c


def _create(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/openai/v1/responses", json=body)


def _refusal(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert (error["code"], error["type"]) == ("invalid_payload", "invalid_request_error")
    assert error["additionalInfo"]["request_id"]
    return error


@pytest.mark.parametrize("name", AGENT_OVERRIDES)
def test_one_override_is_refused_at_the_top_level(client: httpx.Client, name: str) -> None:
    """One refused parameter: `message` "Not allowed when agent is specified.", `param` the parameter,
    `details: []` (microsoft/agent-framework#5130 for `tools`; the others by the same rule, see
    foundry_v2_rules)."""
    error = _refusal(_create(client, input="hi", agent_reference=DEMO, **{name: VALUES[name]}))
    assert (error["message"], error["param"], error["details"]) == ("Not allowed when agent is specified.", name, [])


def test_several_overrides_are_listed_in_details(client: httpx.Client) -> None:
    """Several: "Invalid payload", `param: null`, one `details[]` entry each (microsoft/agent-framework#2573)."""
    error = _refusal(_create(client, input="hi", agent_reference=DEMO, temperature=0.2, top_p=0.9))
    assert (error["message"], error["param"]) == ("Invalid payload", None)
    assert error["details"] == [
        {"code": "ValidationError", "message": "Not allowed when agent is specified.", "param": p, "type": "error"}
        for p in ("temperature", "top_p")
    ]
    every = _refusal(_create(client, input="hi", agent=DEMO, **VALUES))  # the legacy key too
    assert [d["param"] for d in every["details"]] == list(AGENT_OVERRIDES)


def test_nothing_is_stored_and_model_only_requests_keep_their_overrides(client: httpx.Client) -> None:
    _refusal(_create(client, input="hi", agent_reference=DEMO, tools=VALUES["tools"]))
    assert client.get("/openai/v1/responses").json()["data"] == []
    # Nulls are absent values, and a model-only request may set what an agent may not.
    assert _create(client, input="hi", agent_reference=DEMO, temperature=None, tools=None).status_code == 200
    plain = _create(client, input="hi", model="gpt-4o", temperature=0.2, instructions="Be brief.")
    assert (plain.status_code, plain.json()["temperature"], plain.json()["instructions"]) == (200, 0.2, "Be brief.")


def test_the_agent_versions_own_settings_apply(client: httpx.Client) -> None:
    body = _create(client, input="hi", agent_reference={"type": "agent_reference", "name": "flights-demo"}).json()
    assert body["instructions"].startswith("You answer questions about flights")
    assert sorted(t["name"] for t in body["tools"]) == ["get_flights", "my_cat_born_date"]
    assert body["agent"] == {"type": "agent_id", "name": "flights-demo", "version": "1"}


@pytest.mark.parametrize("kind", sorted(SERVER_SIDE_ITEMS))
def test_server_side_items_resent_as_input_are_refused(client: httpx.Client, kind: str) -> None:
    """microsoft/agent-framework#5338: "The provided data does not match the expected schema", `param: "/"`."""
    item = {"type": kind, "id": "x_1", "status": "completed"}
    error = _refusal(_create(client, input=[{"role": "user", "content": "hi"}, item], agent_reference=DEMO))
    assert (error["message"], error["param"], error["details"]) == (
        "The provided data does not match the expected schema",
        "/",
        [],
    )


def test_agent_reference_without_version_uses_the_active_version(client: httpx.Client) -> None:
    """learn.microsoft.com "configure-agent": `version` may be left out for the agent's active version."""
    definition = {"kind": "prompt", "model": "gpt-4o-mini", "instructions": "v2 instructions"}
    created = client.post("/agents/demo-agent/versions", params={"api-version": "v1"}, json={"definition": definition})
    assert created.json()["version"] == "2"
    body = _create(client, input="hi", agent_reference={"type": "agent_reference", "name": "demo-agent"}).json()
    assert (body["agent"]["version"], body["model"], body["instructions"]) == ("2", "gpt-4o-mini", "v2 instructions")
    assert _create(client, input="hi", agent_reference=DEMO).json()["model"] == "gpt-4o"


def test_agent_definitions_are_served_with_their_tools(client: httpx.Client) -> None:
    v1 = {"api-version": "v1"}
    agent = client.get("/agents/flights-demo", params=v1).json()
    latest = agent["versions"]["latest"]
    assert (agent["object"], latest["object"], latest["id"]) == ("agent", "agent.version", "flights-demo:1")
    assert latest["definition"]["kind"] == "prompt"
    names = [t["name"] for t in latest["definition"]["tools"]]
    assert sorted(names) == ["get_flights", "my_cat_born_date"]
    assert client.get("/agents/flights-demo/versions/1", params=v1).json()["definition"] == latest["definition"]
    listed = client.get("/agents/flights-demo/versions", params=v1).json()
    assert [v["version"] for v in listed["data"]] == ["1"]
    assert client.get("/agents/demo-agent", params=v1).json()["versions"]["latest"]["definition"]["tools"] == []


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def test_only_background_responses_can_be_cancelled(client: httpx.Client) -> None:
    foreground = _create(client, input="hi", agent_reference=DEMO).json()
    error = client.post(f"/openai/v1/responses/{foreground['id']}/cancel").json()["error"]
    assert error["message"] == "Only responses created with background=true can be cancelled."
    assert error["type"] == "invalid_request_error" and error["code"]
    waiting = _create(client, input="/sleep 5000\nslow", agent_reference=DEMO, background=True).json()
    assert (waiting["status"], waiting["background"]) == ("queued", True)
    cancelled = client.post(f"/openai/v1/responses/{waiting['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert client.get(f"/openai/v1/responses/{waiting['id']}").json()["status"] == "cancelled"
    assert client.post(f"/openai/v1/responses/{waiting['id']}/cancel").json()["status"] == "cancelled"
    done = _create(client, input="quick", agent_reference=DEMO, background=True).json()
    deadline = time.monotonic() + 5
    while client.get(f"/openai/v1/responses/{done['id']}").json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    late = client.post(f"/openai/v1/responses/{done['id']}/cancel")
    assert late.status_code == 400 and "completed" in late.json()["error"]["message"]


def test_a_background_response_streams_resumes_and_survives_its_client(client: httpx.Client) -> None:
    with client.stream(
        "POST",
        "/openai/v1/responses",
        json={"input": "hello you", "agent_reference": DEMO, "background": True, "stream": True},
    ) as response:
        first = _events(response)
    assert first[0]["type"] == "response.created" and first[0]["response"]["status"] == "queued"
    assert first[-1]["type"] == "response.completed"
    response_id = first[0]["response"]["id"]
    with client.stream(
        "GET", f"/openai/v1/responses/{response_id}", params={"stream": "true", "starting_after": 2}
    ) as r:
        resumed = _events(r)
    assert [e["sequence_number"] for e in resumed] == [e["sequence_number"] for e in first[3:]]
    foreground = _create(client, input="hi", agent_reference=DEMO).json()
    assert client.get(f"/openai/v1/responses/{foreground['id']}", params={"stream": "true"}).status_code == 400
    # A client that leaves a background stream early leaves the work running; cancel stops it mid-stream.
    body = {"input": "/sleep 5000\nslow", "agent_reference": DEMO, "background": True, "stream": True}
    with client.stream("POST", "/openai/v1/responses", json=body) as response:
        lines = response.iter_lines()
        created = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
    slow_id = created["response"]["id"]
    assert client.get(f"/openai/v1/responses/{slow_id}").json()["status"] == "in_progress"
    with client.stream("GET", f"/openai/v1/responses/{slow_id}", params={"stream": "true"}) as r:
        assert client.post(f"/openai/v1/responses/{slow_id}/cancel").json()["status"] == "cancelled"
        replayed = _events(r)  # ends once cancelled, without a terminal event
    assert [e["type"] for e in replayed] == ["response.created", "response.in_progress"]
