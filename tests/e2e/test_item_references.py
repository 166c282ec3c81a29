"""`item_reference` inputs (the Vercel AI SDK resends earlier output so when `store` is on), through the
official `openai` client: on Assistants routes they continue the response they name, as
previous_response_id does; on Foundry v2 routes Azure resolves them."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.e2e.test_isolation import KEYS, A, B
from tests.e2e.test_matrix import BACKENDS, respond
from tests.support import seed
from tests.support.bridge import Bridge, running_bridge
from tests.support.servers import ServerThread


def _refs(response: Any) -> list[dict[str, Any]]:
    return [{"type": "item_reference", "id": item.id} for item in response.output]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("backend", ["assistants", "foundry"])
def test_the_seed_tool_rounds_by_item_reference(bridge: Bridge, backend: str, stream: bool) -> None:
    """Each round resends the whole input: the question, references to the calls, every output so far."""
    flights = BACKENDS[backend][1]
    client = bridge.client()
    history: list[dict[str, Any]] = [{"role": "user", "content": seed.QUESTION}]
    response = respond(client, stream=stream, model=flights, input=history, tools=seed.RESPONSES_TOOLS)
    rounds = 0
    while calls := [item for item in response.output if item.type == "function_call"]:
        rounds += 1
        assert rounds <= 5
        history += _refs(response)
        history += [
            {"type": "function_call_output", "call_id": c.call_id, "output": seed.call(c.name, c.arguments)}
            for c in calls
        ]
        response = respond(client, stream=stream, model=flights, input=history, tools=seed.RESPONSES_TOOLS)
    assert rounds == 2
    assert f"There are {seed.expected_flights()} flights" in response.output_text
    if backend == "assistants":
        # Every round answered the run that waited on the first thread: no thread was seeded again.
        (thread,) = bridge.emulator_threads()
        assert [m["text"] for m in thread["messages"] if m["role"] == "user"] == [seed.QUESTION]


@pytest.mark.parametrize("backend", ["assistants", "foundry"])
def test_a_referenced_reply_continues_its_conversation(bridge: Bridge, backend: str) -> None:
    demo = BACKENDS[backend][0]
    client = bridge.client()
    first = client.responses.create(model=demo, input="first")
    bridge.reset_stats()
    follow = [{"role": "user", "content": "first"}, *_refs(first), {"role": "user", "content": "second"}]
    second = client.responses.create(model=demo, input=follow)  # type: ignore[arg-type]
    assert second.output_text == "Echo: second"
    listed = client.responses.input_items.list(second.id, order="asc").data
    assert [item.type for item in listed] == ["message", "message", "message"]
    if backend == "assistants":
        # The reference named the first response's thread: one run added the new message only.
        assert bridge.emulator_stats() == {"POST /openai/threads/{thread_id}/runs": 1}
        (thread,) = bridge.emulator_threads()
        assert [m["text"] for m in thread["messages"]] == ["first", "Echo: first", "second", "Echo: second"]
        # An item the input listing shows is known too, and names the same response.
        third = client.responses.create(
            model=demo,
            input=[{"type": "item_reference", "id": listed[1].id}, {"role": "user", "content": "third"}],
        )
        assert third.output_text == "Echo: third"
        assert len(bridge.emulator_threads()) == 1


def _unknown(client: openai.OpenAI, model: str, reference: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=model, input=[{"role": "user", "content": "x"}, reference])  # type: ignore[list-item]
    body = info.value.body
    assert isinstance(body, dict)
    return body


def test_references_the_bridge_does_not_know_are_400s_naming_the_input(bridge: Bridge) -> None:
    client = bridge.client()
    kept = client.responses.create(model="demo-assistant", input="kept")
    unkept = client.responses.create(model="demo-assistant", input="not stored", store=False)
    foreign = client.responses.create(model="flights-assistant", input="another route")
    made_up = kept.output[0].id[:-2] + "o9"  # a well-formed id of ours that the response never had
    for item_id in ("msg_nope", made_up, unkept.output[0].id, foreign.output[0].id):
        body = _unknown(client, "demo-assistant", {"type": "item_reference", "id": item_id})
        assert body["param"] == "input[1].id", body
        assert body["message"] == f"Item with id '{item_id}' not found."
    assert _unknown(client, "demo-assistant", {"type": "item_reference"})["param"] == "input[1].id"
    # Azure refuses an item it does not know in the same words.
    body = _unknown(client, "demo-agent", {"type": "item_reference", "id": "msg_nope"})
    assert body["message"] == "Item with id 'msg_nope' not found."
    assert body["param"] == "input[1].id"


@pytest.fixture
def keyed(emulator: ServerThread, redis_url: str, redis_prefix: str) -> Any:
    with running_bridge(emulator.url, redis_url, redis_prefix, keys=KEYS, threads={"janitor": False}) as bridge:
        yield bridge


def test_items_of_another_key_are_unknown(keyed: Bridge) -> None:
    a, b = keyed.client(api_key=A), keyed.client(api_key=B)
    created = a.responses.create(model="demo-assistant", input="for A only")
    body = _unknown(b, "demo-assistant", {"type": "item_reference", "id": created.output[0].id})
    assert body["param"] == "input[1].id"
    assert len(keyed.emulator_threads()) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_foundry_items_of_another_key_are_unknown_though_azure_would_resolve_them(keyed: Bridge, stream: bool) -> None:
    """Azure resolves an item_reference across the whole project; the bridge refuses another key's."""
    a, b = keyed.client(api_key=A), keyed.client(api_key=B)
    secret = respond(a, stream=stream, model="demo-agent", input="A's secret")
    item_id = secret.output[0].id
    keyed.reset_stats()
    body = _unknown(b, "demo-agent", {"type": "item_reference", "id": item_id})
    assert body == {**body, "param": "input[1].id", "message": f"Item with id '{item_id}' not found."}
    assert keyed.emulator_stats() == {}  # refused before Azure saw it
    # Its owner references it as before; a reference the bridge never relayed is left to Azure.
    own = a.responses.create(
        model="demo-agent", input=[{"type": "item_reference", "id": item_id}, {"role": "user", "content": "again"}]
    )  # type: ignore[list-item]
    assert own.output_text == "Echo: again"
    assert _unknown(b, "demo-agent", {"type": "item_reference", "id": "msg_nope"})["message"] == (
        "Item with id 'msg_nope' not found."
    )
