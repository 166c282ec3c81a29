"""Background responses through the official `openai` client, on an Assistants route and a Foundry v2 route:
create answers at once, polling reaches the end, a cut stream resumes after N, cancel stops the run
upstream, another key sees nothing, and a tool round trip completes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis

from tests.support import seed
from tests.support.background import cut_and_resume, poll
from tests.support.bridge import Bridge, running_bridge
from tests.support.leftovers import active_runs, locks, wait_for
from tests.support.servers import ServerThread

A = "key-of-team-a-0123456789"
B = "key-of-team-b-0123456789"
KEYS = [{"name": "team-a", "key": A}, {"name": "team-b", "key": B}]
ROUTES = ["demo-assistant", "demo-agent"]
FLIGHTS = {"demo-assistant": "flights-assistant", "demo-agent": "flights-agent"}


@pytest.fixture
def keyed(emulator: ServerThread, redis_url: str, redis_prefix: str) -> Iterator[Bridge]:
    with running_bridge(
        emulator.url, redis_url, redis_prefix, keys=KEYS, threads={"janitor": False}, limits={"lock_wait": "0.2s"}
    ) as bridge:
        yield bridge


def upstream_status(bridge: Bridge, response_id: str) -> str:
    with bridge.emulator() as c:
        answer = c.get(f"/api/projects/demo/openai/v1/responses/{response_id}", headers={"Authorization": "Bearer t"})
        answer.raise_for_status()
        return str(answer.json()["status"])


@pytest.mark.parametrize("model", ROUTES)
def test_create_answers_at_once_and_polling_reaches_the_agents_text(keyed: Bridge, model: str) -> None:
    client = keyed.client(api_key=A)
    client.responses.create(model=model, input="warm")  # a first request also reads the agent and a token
    started = time.monotonic()
    created = client.responses.create(model=model, input="/sleep 2000\nhello there", background=True)
    assert time.monotonic() - started < 1.0  # while the agent works on for two seconds
    assert created.status in ("queued", "in_progress")
    assert created.background is True
    assert client.responses.retrieve(created.id).status in ("queued", "in_progress")
    final = poll(client, created.id)
    assert final.status == "completed"
    assert final.output_text == "Echo: hello there"
    assert final.background is True


@pytest.mark.parametrize("model", ROUTES)
def test_a_cut_stream_resumes_with_only_the_events_after_n(keyed: Bridge, model: str) -> None:
    client = keyed.client(api_key=A)
    resumed = cut_and_resume(client, model, "resume me please")
    cut, rest = resumed.cut, resumed.rest
    numbers = [e.sequence_number for e in rest]
    assert numbers == list(range(cut + 1, cut + 1 + len(rest)))
    assert rest[-1].type == "response.completed"
    assert rest[-1].response.output_text == "Echo: resume me please"
    assert "".join(e.delta for e in rest if e.type == "response.output_text.delta") == "Echo: resume me please"
    # The whole stream again, from the start, is the same stream.
    assert [e.sequence_number for e in resumed.whole][cut + 1 :] == numbers


@pytest.mark.parametrize("model", ROUTES)
def test_cancel_ends_a_running_response_and_its_run(keyed: Bridge, model: str) -> None:
    client = keyed.client(api_key=A)
    created = client.responses.create(model=model, input="/sleep 5000\nnever", background=True)
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(created.id).status == "cancelled"
    if model == "demo-assistant":
        wait_for(lambda: not active_runs(keyed.emulator_url), what="no active run upstream")
        wait_for(lambda: not locks(keyed.settings.redis_url or "", keyed.settings.redis_prefix), what="no lock")
    else:
        assert upstream_status(keyed, created.id) == "cancelled"
    # Cancelling again answers the cancelled response (idempotent); the stream ends without a terminal event.
    assert client.responses.cancel(created.id).status == "cancelled"
    events = list(client.responses.retrieve(created.id, stream=True))
    assert not [e for e in events if e.type in ("response.completed", "response.failed")]
    # One that completed cannot be cancelled.
    done = poll(client, client.responses.create(model=model, input="quick", background=True).id)
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(done.id)


@pytest.mark.parametrize("model", ROUTES)
def test_another_key_gets_404_on_retrieve_stream_and_cancel(keyed: Bridge, model: str) -> None:
    created = keyed.client(api_key=A).responses.create(model=model, input="/sleep 500\nmine", background=True)
    other = keyed.client(api_key=B)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        list(other.responses.retrieve(created.id, stream=True, starting_after=0))
    with pytest.raises(openai.NotFoundError):
        other.responses.cancel(created.id)
    assert poll(keyed.client(api_key=A), created.id).output_text == "Echo: mine"


@pytest.mark.parametrize("model", ROUTES)
def test_a_background_turn_with_a_tool_round_trip_completes(keyed: Bridge, model: str) -> None:
    client = keyed.client(api_key=A)
    route = FLIGHTS[model]
    response = poll(
        client,
        client.responses.create(model=route, input=seed.QUESTION, tools=seed.RESPONSES_TOOLS, background=True).id,
    )
    rounds = 0
    while calls := [item for item in response.output if item.type == "function_call"]:
        # Stopped for the client's outputs: completed, with function_call items (as OpenAI shows it).
        assert response.status == "completed"
        rounds += 1
        assert rounds <= 5
        outputs = [
            {"type": "function_call_output", "call_id": c.call_id, "output": seed.call(c.name, c.arguments)}
            for c in calls
        ]
        created = client.responses.create(
            model=route, previous_response_id=response.id, input=outputs, tools=seed.RESPONSES_TOOLS, background=True
        )
        response = poll(client, created.id)
    assert rounds == 2
    assert response.status == "completed"
    assert f"There are {seed.expected_flights()} flights" in response.output_text


def test_background_with_store_false_is_refused(keyed: Bridge) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        keyed.client(api_key=A).responses.create(model="demo-assistant", input="x", background=True, store=False)
    assert info.value.body["param"] == "store"  # type: ignore[index]


def test_the_thread_is_in_flight_until_the_background_turn_ends(keyed: Bridge) -> None:
    """The lock and the janitor see a background turn as in flight: a second turn on its thread is a 409,
    a sweep far in the future leaves the thread alone; once it ended, the conversation goes on."""
    client = keyed.client(api_key=A)
    first = client.responses.create(model="demo-assistant", input="first")
    running = client.responses.create(
        model="demo-assistant", input="/sleep 1500\nsecond", previous_response_id=first.id, background=True
    )
    with pytest.raises(openai.ConflictError):
        client.responses.create(model="demo-assistant", input="meanwhile", previous_response_id=first.id)
    record = keyed.server.call(keyed.state.store.get_response(first.id, "team-a"))
    swept = keyed.server.call(keyed.state.janitor.sweep(now=time.time() + 10**8))
    assert record.thread_id in swept.skipped and not swept.deleted
    assert poll(client, running.id).output_text == "Echo: second"
    after = client.responses.create(model="demo-assistant", input="third", previous_response_id=running.id)
    assert after.output_text == "Echo: third"


@pytest.mark.parametrize("redis_mode", ["standalone", "cluster"])
def test_any_replica_follows_and_cancels_a_response_another_runs(
    emulator: ServerThread, redis_prefix: str, redis_mode: str, request: pytest.FixtureRequest
) -> None:
    """Two replicas on one Redis (a server, a 3-master cluster): the one that did not start the response
    streams it live and cancels it (the run upstream too), while the one running it is alive."""
    redis_url = request.getfixturevalue("redis_url" if redis_mode == "standalone" else "redis_cluster_url")
    with (
        running_bridge(emulator.url, redis_url, redis_prefix, keys=KEYS, threads={"janitor": False}) as one,
        running_bridge(emulator.url, redis_url, redis_prefix, keys=KEYS, threads={"janitor": False}) as two,
    ):
        runner, other = one.client(api_key=A), two.client(api_key=A)
        live = runner.responses.create(model="demo-assistant", input="/sleep 600\nfollowed elsewhere", background=True)
        events = list(other.responses.retrieve(live.id, stream=True))
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert events[-1].type == "response.completed"
        assert events[-1].response.output_text == "Echo: followed elsewhere"

        slow = runner.responses.create(model="demo-assistant", input="/sleep 5000\nnever", background=True)
        assert other.responses.cancel(slow.id).status == "cancelled"
        assert runner.responses.retrieve(slow.id).status == "cancelled"
        wait_for(lambda: not active_runs(one.emulator_url), what="no active run upstream")
        if redis_mode == "standalone":
            wait_for(lambda: not locks(redis_url, redis_prefix), what="no lock")


@pytest.mark.parametrize("model", ROUTES)
def test_a_streamed_background_create_streams_it_live_and_a_foreground_response_cannot_be_streamed_again(
    keyed: Bridge, model: str
) -> None:
    client = keyed.client(api_key=A)
    events = list(client.responses.create(model=model, input="/sleep 300\nlive", background=True, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[0].response.background is True
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "Echo: live"
    foreground = client.responses.create(model=model, input="plain")
    with pytest.raises(openai.BadRequestError):
        list(client.responses.retrieve(foreground.id, stream=True))
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(foreground.id)


def test_the_event_log_is_bounded_and_expires(emulator: ServerThread, redis_url: str, redis_prefix: str) -> None:
    """Past `responses.background_max_events` only the end is kept; every key of it carries the TTL."""
    settings: dict[str, Any] = {"responses": {"background_max_events": 4, "background_ttl": "1h"}}
    with running_bridge(emulator.url, redis_url, redis_prefix, **settings) as bridge:
        client = bridge.client()
        created = client.responses.create(model="demo-assistant", input="a b c d e f g h", background=True)
        assert poll(client, created.id).output_text == "Echo: a b c d e f g h"
        events = list(client.responses.retrieve(created.id, stream=True))
        assert [e.sequence_number for e in events][:4] == [0, 1, 2, 3]
        assert len(events) == 5 and events[-1].type == "response.completed"
        keys = bridge.state.store.keys
        r = redis.Redis.from_url(redis_url)
        try:
            for key in (keys.background(created.id), keys.background_events(created.id)):
                assert 0 < r.pttl(key) <= 3_600_000, key
            assert r.xlen(keys.background_events(created.id)) == 6  # 5 events and the end mark
        finally:
            r.close()


def test_a_polled_foundry_background_responses_items_are_its_owners(keyed: Bridge) -> None:
    """Azure resolves an item_reference across the project: the items of a background response the owner
    only polled are refused to another key, as a foreground response's are."""
    a, b = keyed.client(api_key=A), keyed.client(api_key=B)
    done = poll(a, a.responses.create(model="demo-agent", input="A's secret", background=True).id)
    reference: Any = [{"type": "item_reference", "id": done.output[0].id}, {"role": "user", "content": "tell"}]
    with pytest.raises(openai.BadRequestError) as info:
        b.responses.create(model="demo-agent", input=reference)
    assert info.value.body["param"] == "input[0].id"  # type: ignore[index]
    assert a.responses.create(model="demo-agent", input=reference).output_text == "Echo: tell"


@pytest.mark.parametrize("model", ROUTES)
def test_deleting_a_running_background_response_stops_it(keyed: Bridge, model: str) -> None:
    client = keyed.client(api_key=A)
    created = client.responses.create(model=model, input="/sleep 5000\nnever", background=True)
    assert client.responses.delete(created.id) is None  # the SDK returns nothing for a delete
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    if model == "demo-assistant":
        wait_for(lambda: not active_runs(keyed.emulator_url), what="no active run upstream")
