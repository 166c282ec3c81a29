"""Every Response shape and stream event the emulator's Foundry v2 surface emits matches OpenAI's schemas."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.servers import ServerThread
from tests.support.spec import validate

FLIGHTS = {"type": "agent_reference", "name": "flights-demo"}
DEMO = {"type": "agent_reference", "name": "demo-agent", "version": "1"}
TOOL_CALL = '/tool get_flights {"date_1": "2020-01-01", "date_2": "2021-04-04"}'
# input -> (agent, expected status)
CASES: dict[str, tuple[dict[str, str], str]] = {
    "hello schema world": (DEMO, "completed"),
    TOOL_CALL: (FLIGHTS, "completed"),
    "/fail server_error": (DEMO, "failed"),
    "/incomplete": (DEMO, "incomplete"),
}


@pytest.fixture
def client(emulator: ServerThread) -> Iterator[httpx.Client]:
    base = f"{emulator.url}/api/projects/demo/openai/v1"
    with httpx.Client(base_url=base, headers={"Authorization": "Bearer t"}) as c:
        yield c


def _events(client: httpx.Client, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Parse the SSE stream strictly: `event:` then one `data:` line, a blank line, no `[DONE]`."""
    events: list[tuple[str, dict[str, Any]]] = []
    with client.stream("POST", "/responses", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    for block in raw.split("\n\n"):
        if not block:
            continue
        lines = block.split("\n")
        assert len(lines) == 2, block
        assert lines[0].startswith("event: "), block
        assert lines[1].startswith("data: "), block
        assert lines[1] != "data: [DONE]"
        events.append((lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])))
    return events


@pytest.mark.parametrize("text", list(CASES))
def test_response_objects_validate(client: httpx.Client, text: str) -> None:
    agent, status = CASES[text]
    response = client.post("/responses", json={"input": text, "agent_reference": agent})
    assert response.status_code == 200, response.text
    body = response.json()
    validate(body, "Response")
    assert body["status"] == status
    assert body["agent"]["name"] == agent["name"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    if status == "failed":
        assert body["error"]["code"] == "server_error"
        assert body["output"] == []
    if status == "incomplete":
        assert body["incomplete_details"] == {"reason": "max_output_tokens"}
        assert body["output"][0]["status"] == "incomplete"
    if text == TOOL_CALL:
        [call] = body["output"]
        assert (call["type"], call["name"], call["status"]) == ("function_call", "get_flights", "completed")
        assert call["id"].startswith("fc_")
        assert call["call_id"].startswith("call_")
    stored = client.get(f"/responses/{body['id']}").json()
    assert stored == body


def test_stream_events_validate_and_cover_every_type(client: httpx.Client) -> None:
    seen: set[str] = set()
    for text, (agent, status) in CASES.items():
        events = _events(client, {"input": text, "agent_reference": agent})
        assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
        for name, data in events:
            assert name == data["type"]
            validate(data, "ResponseStreamEvent")
            seen.add(name)
        final = events[-1][1]["response"]
        assert final["status"] == status
        assert client.get(f"/responses/{final['id']}").json() == final
    assert seen == {
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.completed",
        "response.failed",
        "response.incomplete",
    }


def test_streamed_text_is_the_sum_of_its_deltas(client: httpx.Client, emulator: ServerThread) -> None:
    httpx.post(f"{emulator.url}/_emulator/config", json={"token_delay_ms": 40}).raise_for_status()
    started = time.monotonic()
    events = _events(client, {"input": "one two three four", "agent_reference": DEMO})
    assert time.monotonic() - started >= 4 * 0.04  # the delay spaces the five deltas
    deltas = [d["delta"] for name, d in events if name == "response.output_text.delta"]
    assert len(deltas) == 5  # "Echo: " + four words
    [done] = [d for name, d in events if name == "response.output_text.done"]
    assert "".join(deltas) == done["text"] == "Echo: one two three four"
    assert events[-1][1]["response"]["output"][0]["content"][0]["text"] == done["text"]


def test_items_lists_validate(client: httpx.Client) -> None:
    conversation = client.post("/conversations", json={"metadata": {"k": "v"}}).json()
    validate(conversation, "ConversationResource")
    response = client.post(
        "/responses",
        json={"input": TOOL_CALL, "agent_reference": FLIGHTS, "conversation": conversation["id"]},
    ).json()
    call = response["output"][0]
    answer = client.post(
        "/responses",
        json={
            "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "42"}],
            "agent_reference": FLIGHTS,
            "conversation": {"id": conversation["id"]},
        },
    ).json()
    assert answer["conversation"] == {"id": conversation["id"]}
    items = client.get(f"/conversations/{conversation['id']}/items", params={"order": "asc"}).json()
    validate(items, "ConversationItemList")
    assert [i["type"] for i in items["data"]] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    input_items = client.get(f"/responses/{response['id']}/input_items").json()
    validate(input_items, "ResponseItemList")
    assert input_items["data"][0]["content"] == [{"type": "input_text", "text": TOOL_CALL}]
