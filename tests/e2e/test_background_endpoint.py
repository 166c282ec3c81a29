"""Background responses on an agent-endpoint route through the official `openai` client: the endpoint has no
background mode and keeps nothing, so the bridge runs the turn itself (as on Assistants routes) and keeps
the history; create answers at once, polling, resuming, cancelling, another key's 404, a tool round trip,
`previous_response_id` from a background response, and a run whose replica stopped (it cannot be followed:
it ends `failed`, or `cancelled` when that is asked)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from app.backends.foundry.endpoint_takeover import LOST
from tests.support import seed
from tests.support.agent_endpoint import KEYS, A, B, endpoint_routes
from tests.support.background import cut_and_resume, poll
from tests.support.bridge import Bridge, running_bridge
from tests.support.servers import ServerThread

ENDPOINT = "POST /api/projects/{project}/agents/{agent_name}/endpoint/protocols/openai/responses"
MODEL = "endpoint-agent"


@pytest.fixture
def keyed(emulator: ServerThread, redis_url: str, redis_prefix: str) -> Iterator[Bridge]:
    with running_bridge(
        emulator.url,
        redis_url,
        redis_prefix,
        routes=endpoint_routes(emulator.url),
        keys=KEYS,
        threads={"janitor": False},
    ) as bridge:
        yield bridge


def _sent(bridge: Bridge) -> list[dict[str, Any]]:
    return [r["body"] for r in bridge.emulator_requests() if r["operation"] == ENDPOINT]


def _responses(events: list[Any]) -> list[Any]:
    return [e.response for e in events if getattr(e, "response", None) is not None]


def test_create_answers_at_once_and_polling_reaches_the_agents_text(keyed: Bridge) -> None:
    client = keyed.client(api_key=A)
    client.responses.create(model=MODEL, input="warm")  # a first request also reads a token
    started = time.monotonic()
    created = client.responses.create(model=MODEL, input="/sleep 2000\nhello there", background=True)
    assert time.monotonic() - started < 1.0  # while the agent works on for two seconds
    assert created.status in ("queued", "in_progress")
    assert (created.background, created.store) == (True, True)
    assert client.responses.retrieve(created.id).status in ("queued", "in_progress")
    final = poll(client, created.id)
    assert (final.status, final.output_text, final.background) == ("completed", "Echo: hello there", True)
    # The endpoint was sent a plain stateless turn: it refuses background and keeps nothing.
    assert all(s["store"] is False and "background" not in s for s in _sent(keyed))


def test_a_cut_stream_resumes_with_only_the_events_after_n(keyed: Bridge) -> None:
    client = keyed.client(api_key=A)
    resumed = cut_and_resume(client, MODEL, "resume me please")
    cut, rest, whole = resumed.cut, resumed.rest, resumed.whole
    numbers = [e.sequence_number for e in rest]
    assert numbers == list(range(cut + 1, cut + 1 + len(rest)))
    assert rest[-1].type == "response.completed"
    assert rest[-1].response.output_text == "Echo: resume me please"
    assert "".join(e.delta for e in rest if e.type == "response.output_text.delta") == "Echo: resume me please"
    assert [e.sequence_number for e in whole][cut + 1 :] == numbers
    assert whole[0].type == "response.created"
    assert {r.background for r in _responses(whole)} == {True}  # every Response the events carry says so


def test_cancel_ends_a_running_response(keyed: Bridge) -> None:
    client = keyed.client(api_key=A)
    created = client.responses.create(model=MODEL, input="/sleep 5000\nnever", background=True)
    cancelled = client.responses.cancel(created.id)
    assert (cancelled.status, cancelled.background) == ("cancelled", True)
    assert client.responses.retrieve(created.id).status == "cancelled"
    assert client.responses.cancel(created.id).status == "cancelled"  # again: the same answer
    events = list(client.responses.retrieve(created.id, stream=True))
    assert events and not [e for e in events if e.type in ("response.completed", "response.failed")]
    # A cancelled turn left nothing in the history to continue from: a clear 400, not a 500.
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="/recall", previous_response_id=created.id)
    assert info.value.param == "previous_response_id" and "'cancelled'" in info.value.message
    # One that completed cannot be cancelled.
    done = poll(client, client.responses.create(model=MODEL, input="quick", background=True).id)
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(done.id)


def test_another_key_gets_404_on_retrieve_stream_and_cancel(keyed: Bridge) -> None:
    created = keyed.client(api_key=A).responses.create(model=MODEL, input="/sleep 500\nmine", background=True)
    other = keyed.client(api_key=B)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        list(other.responses.retrieve(created.id, stream=True, starting_after=0))
    with pytest.raises(openai.NotFoundError):
        other.responses.cancel(created.id)
    assert poll(keyed.client(api_key=A), created.id).output_text == "Echo: mine"
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model=MODEL, input="steal", previous_response_id=created.id)


def test_a_background_turn_with_a_tool_round_trip_completes(keyed: Bridge) -> None:
    """The outputs go with previous_response_id, in the background once, then in the foreground."""
    client = keyed.client(api_key=A)
    tools: Any = seed.RESPONSES_TOOLS
    response = poll(
        client, client.responses.create(model="endpoint-flights", input=seed.QUESTION, tools=tools, background=True).id
    )
    rounds = 0
    while calls := [item for item in response.output if item.type == "function_call"]:
        assert response.status == "completed"  # stopped for the client's outputs, as OpenAI shows it
        rounds += 1
        assert rounds <= 5
        outputs: Any = [
            {"type": "function_call_output", "call_id": c.call_id, "output": seed.call(c.name, c.arguments)}
            for c in calls
        ]
        background = rounds == 1
        response = client.responses.create(
            model="endpoint-flights",
            previous_response_id=response.id,
            input=outputs,
            tools=tools,
            background=background,
        )
        if background:
            response = poll(client, response.id)
    assert rounds == 2
    assert response.status == "completed"
    assert f"There are {seed.expected_flights()} flights" in response.output_text


def test_previous_response_id_from_a_background_response_continues_its_history(keyed: Bridge) -> None:
    client = keyed.client(api_key=A)
    first = poll(client, client.responses.create(model=MODEL, input="alpha", background=True).id)
    assert [i.content[0].text for i in client.responses.input_items.list(first.id).data] == ["alpha"]  # type: ignore[union-attr]
    second = client.responses.create(model=MODEL, input="/recall", previous_response_id=first.id)
    assert second.output_text == "Recall: alpha"
    third = client.responses.create(model=MODEL, input="/recall", previous_response_id=second.id, background=True)
    assert third.previous_response_id == second.id
    assert poll(client, third.id).output_text == "Recall: alpha | /recall"
    # One still running cannot be continued yet: a clear 400.
    running = client.responses.create(model=MODEL, input="/sleep 1500\nbeta", background=True)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="/recall", previous_response_id=running.id)
    assert info.value.param == "previous_response_id" and "'in_progress'" in info.value.message
    assert poll(client, running.id).output_text == "Echo: beta"


def test_a_run_whose_replica_stopped_ends_failed_or_cancelled_on_another(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    """Two replicas on one Redis. The runner hands its runs over (as at SIGTERM): the endpoint keeps nothing
    to follow them with, so the replica that next looks ends one `failed` with an error saying so, and another
    `cancelled` when the first look is a cancel. A cancel of a run another replica still runs stops it there."""
    settings: dict[str, Any] = {"keys": KEYS, "threads": {"janitor": False}, "limits": {"lock_lease": "1s"}}
    routes = endpoint_routes(emulator.url)
    with (
        running_bridge(emulator.url, redis_url, redis_prefix, routes=routes, **settings) as one,
        running_bridge(emulator.url, redis_url, redis_prefix, routes=routes, **settings) as two,
    ):
        runner, other = one.client(api_key=A), two.client(api_key=A)
        live = runner.responses.create(model=MODEL, input="/sleep 5000\nstopped elsewhere", background=True)
        assert other.responses.cancel(live.id).status == "cancelled"  # the runner sees the mark within its lease
        assert runner.responses.retrieve(live.id).status == "cancelled"

        lost = runner.responses.create(model=MODEL, input="/sleep 5000\nlost", background=True)
        dropped = runner.responses.create(model=MODEL, input="/sleep 5000\ndropped", background=True)
        one.server.call(one.state.background.runs.hand_over())
        events = list(other.responses.retrieve(lost.id, stream=True))
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert events[-1].type == "response.failed"
        failed = poll(other, lost.id)
        assert (failed.status, failed.background) == ("failed", True)
        assert failed.error is not None and (failed.error.code, failed.error.message) == ("server_error", LOST)
        assert runner.responses.retrieve(lost.id).status == "failed"
        assert other.responses.cancel(dropped.id).status == "cancelled"
        assert runner.responses.retrieve(dropped.id).status == "cancelled"
