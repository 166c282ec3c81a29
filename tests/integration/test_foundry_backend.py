"""The Foundry v2 backend and pass-through against the emulator over real HTTP (no bridge app, no Redis)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.backends.azure_auth import AI_FOUNDRY_SCOPE, AuthProvider, build_auth
from app.backends.foundry.backend import FoundryBackend
from app.backends.foundry.client import FoundryClient
from app.backends.http_client import http_client
from app.backends.retry import RetryPolicy
from app.backends.upstream import UpstreamClient
from app.core.background import BackgroundTasks
from app.core.events import TextDelta, ThreadBound, ToolCallsRequired, TurnCompleted, TurnEvent
from app.core.lifetime import InFlight, Turn, Work
from app.core.response_works import final_response
from app.core.turn import FunctionTool, Item, Message, ToolResult, TurnRequest
from app.errors import InvalidRequestError, NotFoundError, RateLimitError, UpstreamTimeoutError
from app.settings import AuthSettings, RouteSettings
from tests.support import seed
from tests.support.bridge import managed_identity
from tests.support.servers import ServerThread

CREATE = "POST /api/projects/{project}/openai/v1/responses"
CANCEL = "POST /api/projects/{project}/openai/v1/responses/{response_id}/cancel"
DEMO_REF = {"type": "agent_reference", "name": "demo-agent", "version": "1"}
LOOKUP = FunctionTool("lookup", "looks things up", {"type": "object", "properties": {"q": {"type": "integer"}}})
# The flights agent's own tool, as a client declares it (Foundry v2 takes tools from the agent version).
GET_FLIGHTS = FunctionTool("get_flights", "returns the number of flights", seed.RESPONSES_TOOLS[0]["parameters"])
AGENT_VERSION = "GET /api/projects/{project}/agents/{agent_name}/versions/{version}"


def _route(emulator: ServerThread, agent: str, timeout: float = 30.0) -> RouteSettings:
    return RouteSettings.model_validate(
        {
            "endpoint": f"{emulator.url}/api/projects/demo",
            "agent": {"name": agent, "version": "1"},
            "auth": {"type": "entra"},
            "timeout": timeout,
        }
    )


class Foundry:
    """One backend and pass-through over two routes (`demo` and `flights`), plus the emulator's stats."""

    def __init__(self, emulator: ServerThread, http: httpx.AsyncClient, auth: AuthProvider) -> None:
        self.emulator = emulator
        self.http = http
        upstream = UpstreamClient(http, auth, RetryPolicy.testing())
        self.clients = {
            "demo": FoundryClient(upstream, _route(emulator, "demo-agent")),
            "flights": FoundryClient(upstream, _route(emulator, "flights-demo")),
        }
        self.tasks = BackgroundTasks()
        self.backend = FoundryBackend(self.clients, self.tasks)
        self.passthrough = self.backend
        self.inflight = InFlight()

    def turn(
        self,
        items: tuple[Item, ...],
        *,
        model: str = "demo",
        cursor: str | None = None,
        new_items: tuple[Item, ...] | None = None,
        tools: tuple[FunctionTool, ...] | None = None,
        instructions: str | None = None,
        within_s: float = 30.0,
    ) -> TurnRequest:
        return TurnRequest(
            owner="tester",
            model=model,
            route=self.clients[model].route,
            items=items,
            cursor=cursor,
            new_items=items if new_items is None else new_items,
            instructions=instructions,
            tools=tools,
            deadline=time.monotonic() + within_s,
        )

    def owned(self, work: Work[Any], deadline: float) -> Turn[Any]:
        """A backend's work as the services hand it to the routes: a turn with one owner of its end."""
        return Turn(
            work, deadline=deadline, timeout_s=deadline - time.monotonic(), tasks=self.tasks, inflight=self.inflight
        )

    async def run(self, req: TurnRequest) -> AsyncIterator[TurnEvent]:
        turn = self.owned(self.backend.turn(req), req.deadline)
        yield await turn.open()
        async for event in turn.events():
            yield event

    async def play(self, req: TurnRequest) -> list[TurnEvent]:
        return [event async for event in self.run(req)]

    async def relay(self, body: dict[str, Any], model: str, within_s: float = 30.0) -> list[tuple[str, Any]]:
        """The pass-through's events as (type, data), as the route gets them."""
        deadline = time.monotonic() + within_s
        turn = self.owned(self.backend.relay(body, model=model, deadline=deadline), deadline)
        await turn.open()
        return [(str(data["type"]), data) async for data in turn.events()]

    async def stats(self) -> dict[str, Any]:
        answer = (await self.http.get(f"{self.emulator.url}/_emulator/stats")).raise_for_status()
        stats: dict[str, Any] = answer.json()
        return stats

    async def reset_stats(self) -> None:
        (await self.http.post(f"{self.emulator.url}/_emulator/stats/reset")).raise_for_status()

    async def creates(self) -> list[dict[str, Any]]:
        """The bodies of the create-response requests since the last stats reset."""
        return [r["body"] for r in (await self.stats())["requests"] if r["operation"] == CREATE]


@pytest.fixture
async def foundry(emulator: ServerThread) -> AsyncIterator[Foundry]:
    """Project endpoints take Entra tokens: the backend's come from the emulator's managed identity."""
    with managed_identity(emulator.url):
        auth = build_auth(AuthSettings(type="entra"), AI_FOUNDRY_SCOPE)
        try:
            async with http_client() as http:
                built = Foundry(emulator, http, auth)
                await built.reset_stats()
                yield built
                await built.tasks.drain(within_s=5.0)
        finally:
            await auth.aclose()


def _text(events: list[TurnEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def _completed(events: list[TurnEvent]) -> TurnCompleted:
    last = events[-1]
    assert isinstance(last, TurnCompleted)
    return last


def _calls(events: list[TurnEvent]) -> ToolCallsRequired:
    found = [e for e in events if isinstance(e, ToolCallsRequired)]
    assert len(found) == 1
    return found[0]


# -- chat turns ----------------------------------------------------------------------------------


async def test_plain_echo(foundry: Foundry) -> None:
    events = await foundry.play(foundry.turn((Message("user", "hi"),), instructions="Be brief."))
    first = events[0]
    assert isinstance(first, ThreadBound) and first.thread_id is None
    assert first.response_id is not None and first.response_id.startswith("resp_")
    assert _text(events) == "Echo: hi"
    assert sum(isinstance(e, TextDelta) for e in events) >= 2  # streamed, not one lump
    done = _completed(events)
    assert done.finish_reason == "stop"
    assert done.cursor == first.response_id
    assert done.usage is not None and done.usage.prompt_tokens > 0 and done.usage.completion_tokens == 2
    assert not any(isinstance(e, ToolCallsRequired) for e in events)

    [body] = await foundry.creates()
    assert body["agent_reference"] == DEMO_REF
    assert body["stream"] is True and body["store"] is True
    assert body["input"] == [{"type": "message", "role": "user", "content": "hi"}]
    # Azure refuses instructions next to an agent: the agent version's own apply.
    assert not {"previous_response_id", "tools", "model", "instructions"} & set(body)


async def test_a_follow_up_sends_only_the_new_items_in_one_request(foundry: Foundry) -> None:
    first = _completed(await foundry.play(foundry.turn((Message("user", "hi"),))))
    await foundry.reset_stats()

    history = (Message("user", "hi"), Message("assistant", "Echo: hi"), Message("user", "again"))
    events = await foundry.play(foundry.turn(history, cursor=first.cursor, new_items=history[-1:]))
    assert _text(events) == "Echo: again"
    assert _completed(events).cursor not in (None, first.cursor)

    stats = await foundry.stats()
    assert stats["by_operation"] == {CREATE: 1}
    body = stats["requests"][-1]["body"]
    assert body["previous_response_id"] == first.cursor
    assert body["input"] == [{"type": "message", "role": "user", "content": "again"}]


async def test_tool_call_then_tool_round_with_the_cursor(foundry: Foundry) -> None:
    ask = Message("user", '/tool get_flights {"date_1": "2021-01-01", "date_2": "2021-01-03"}')
    events = await foundry.play(foundry.turn((ask,), model="flights", tools=(GET_FLIGHTS,)))
    required = _calls(events)
    assert events.index(required) == len(events) - 2  # the calls, then the completion
    [call] = required.calls
    assert call.name == "get_flights" and json.loads(call.arguments) == {"date_1": "2021-01-01", "date_2": "2021-01-03"}
    assert call.id.startswith("call_")
    done = _completed(events)
    assert done.finish_reason == "tool_calls"
    [body] = await foundry.creates()
    assert "tools" not in body  # declared by the agent version: checked, never sent
    assert (await foundry.stats())["by_operation"][AGENT_VERSION] == 1
    await foundry.reset_stats()

    result = ToolResult(call.id, "42")
    history = (ask, Message("assistant", "", required.calls), result)
    events = await foundry.play(
        foundry.turn(history, model="flights", cursor=done.cursor, new_items=(result,), tools=(GET_FLIGHTS,))
    )
    assert _text(events) == "Tool get_flights returned: 42"
    assert _completed(events).finish_reason == "stop"
    assert (await foundry.stats())["by_operation"] == {CREATE: 1}  # the definition was cached
    [body] = await foundry.creates()
    assert body["previous_response_id"] == done.cursor
    assert body["input"] == [{"type": "function_call_output", "call_id": call.id, "output": "42"}]


async def test_a_tool_the_agent_version_lacks_is_refused_before_any_create(foundry: Foundry) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await foundry.play(foundry.turn((Message("user", "/tool lookup {}"),), model="flights", tools=(LOOKUP,)))
    assert info.value.code == "tool_not_declared" and info.value.param == "tools"
    assert "'lookup'" in info.value.message and "agent 'flights-demo' version 1" in info.value.message
    assert "agent.version" in info.value.message  # says where to declare it
    assert await foundry.creates() == []


async def test_the_seed_scenario_on_the_flights_agent(foundry: Foundry) -> None:
    history: tuple[Item, ...] = (Message("user", seed.QUESTION),)
    req = foundry.turn(history, model="flights")
    called: list[str] = []
    for _ in range(5):
        events = await foundry.play(req)
        done = _completed(events)
        if done.finish_reason != "tool_calls":
            break
        calls = _calls(events).calls
        called += [c.name for c in calls]
        results = tuple(ToolResult(c.id, seed.call(c.name, c.arguments)) for c in calls)
        history = (*history, Message("assistant", _text(events), calls), *results)
        req = foundry.turn(history, model="flights", cursor=done.cursor, new_items=results)
    assert called == ["my_cat_born_date", "get_flights"]
    assert done.finish_reason == "stop"
    assert f"There are {seed.expected_flights()} flights" in _text(events)
    bodies = await foundry.creates()
    assert len(bodies) == 3  # one upstream request per step
    assert [b["agent_reference"]["name"] for b in bodies] == ["flights-demo"] * 3
    assert all(i["type"] == "function_call_output" for b in bodies[1:] for i in b["input"])


async def test_a_rate_limited_response_raises_429_with_its_code(foundry: Foundry) -> None:
    seen: list[TurnEvent] = []

    async def play() -> None:
        async for event in foundry.run(foundry.turn((Message("user", "/fail rate_limit_exceeded"),))):
            seen.append(event)

    with pytest.raises(RateLimitError) as info:
        await play()
    assert (info.value.status, info.value.code) == (429, "rate_limit_exceeded")
    assert [type(e) for e in seen] == [ThreadBound]


async def test_an_unknown_previous_response_replays_the_conversation_once(foundry: Foundry) -> None:
    history = (Message("user", "hi"), Message("assistant", "Echo: hi"), Message("user", "again"))
    events = await foundry.play(foundry.turn(history, cursor="resp_gone", new_items=history[-1:]))
    assert _text(events) == "Echo: again"
    first, second = await foundry.creates()
    assert first["previous_response_id"] == "resp_gone" and len(first["input"]) == 1
    assert "previous_response_id" not in second and len(second["input"]) == 3


async def test_the_deadline_gives_upstream_timeout_and_a_cancel(foundry: Foundry) -> None:
    with pytest.raises(UpstreamTimeoutError):
        await foundry.play(foundry.turn((Message("user", "/sleep 3000\nslow"),), within_s=0.5))
    assert (await foundry.stats())["by_operation"].get(CANCEL) == 1


async def test_a_client_disconnect_cancels_in_the_background(foundry: Foundry) -> None:
    req = foundry.turn((Message("user", "/sleep 3000\nslow"),))
    turn = foundry.owned(foundry.backend.turn(req), req.deadline)
    bound = await turn.open()
    assert isinstance(bound, ThreadBound) and bound.response_id is not None

    async def stream() -> None:
        async for _ in turn.events():
            pass

    reader = asyncio.get_running_loop().create_task(stream())
    await asyncio.sleep(0.05)
    reader.cancel()  # what Starlette does to a stream whose client hung up
    with pytest.raises(asyncio.CancelledError):
        await reader
    await foundry.tasks.drain(within_s=5.0)
    assert len(foundry.tasks) == 0
    assert (await foundry.stats())["by_operation"].get(CANCEL) == 1
    # A background response (the route's default) is cancelled upstream, not left running.
    upstream = await foundry.clients["demo"].get_response(bound.response_id)
    assert upstream["background"] is True and upstream["status"] == "cancelled"


async def test_a_foreground_route_sends_no_background_flag(foundry: Foundry) -> None:
    route = foundry.clients["demo"].route.model_copy(update={"background": False})
    await foundry.play(dataclasses.replace(foundry.turn((Message("user", "hi"),)), route=route))
    [body] = await foundry.creates()
    assert "background" not in body


# -- the /v1/responses pass-through ----------------------------------------------------------------


async def _create(foundry: Foundry, body: dict[str, Any], model: str = "demo") -> dict[str, Any]:
    """A plain create as the API does it: the streamed pass-through, then the terminal event's Response."""
    return final_response([data for _, data in await foundry.relay(body, model)])


def _strip_model(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "model"}


SELECTORS: list[dict[str, Any]] = [
    {"agent_reference": {"type": "agent_reference", "name": "flights-demo"}},
    {"agent": {"type": "agent_reference", "name": "flights-demo", "version": "1"}},
    {"model": "flights"},
    {"assistant_id": "asst_elsewhere", "agent_reference": {"type": "agent_reference", "name": "flights-demo"}},
]


@pytest.mark.parametrize("selector", SELECTORS)
async def test_passthrough_create_reaches_the_route_agent_whatever_the_body_says(
    foundry: Foundry, selector: dict[str, Any]
) -> None:
    response = await _create(foundry, {"input": seed.QUESTION, **selector})
    assert response["model"] == "demo"
    assert response["status"] == "completed"
    [item] = response["output"]
    assert item["type"] == "message"
    assert item["content"][0]["text"] == f"Echo: {seed.QUESTION}"  # demo-agent's echo, not the flights scenario
    [body] = await foundry.creates()
    assert body["agent_reference"] == DEMO_REF
    assert not {"agent", "assistant_id", "model"} & set(body)


async def test_passthrough_create_keeps_everything_but_model(foundry: Foundry) -> None:
    response = await _create(
        foundry,
        {"input": "/tool get_flights {}", "tools": [{"type": "function", "name": "get_flights"}], "stream": False},
        model="flights",
    )
    upstream = await foundry.clients["flights"].get_response(response["id"])
    assert upstream["model"] != "flights"
    assert _strip_model(response) == _strip_model(upstream)
    assert response["agent"]["name"] == "flights-demo"
    assert [i["type"] for i in response["output"]] == ["function_call"]
    assert response["usage"]["input_tokens"] > 0
    [body] = await foundry.creates()
    assert body["stream"] is True  # upstream is always streamed, whatever the client asked
    assert "tools" not in body


async def test_passthrough_refuses_an_undeclared_tool_and_drops_server_side_items(foundry: Foundry) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await _create(foundry, {"input": "hi", "tools": [{"type": "function", "name": "lookup"}]}, model="flights")
    assert info.value.code == "tool_not_declared"
    assert await foundry.creates() == []
    replayed = [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        {"role": "user", "content": "hello"},
    ]
    response = await _create(foundry, {"input": replayed, "temperature": 0.2, "instructions": "x"})
    assert response["output"][0]["content"][0]["text"] == "Echo: hello"
    [body] = await foundry.creates()
    assert body["input"] == [{"role": "user", "content": "hello"}]
    assert not {"temperature", "instructions"} & set(body)


async def test_passthrough_stream_relays_every_event_and_rewrites_only_model(foundry: Foundry) -> None:
    events = await foundry.relay({"input": "hi there", "model": "gpt-4o", "agent": {"name": "flights-demo"}}, "demo")
    names = [name for name, _ in events]
    assert names[0] == "response.created" and names[-1] == "response.completed"
    assert [name for name, data in events] == [data["type"] for _, data in events]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert "response.output_text.delta" in names and "response.content_part.done" in names
    assert all(data["response"]["model"] == "demo" for _, data in events if "response" in data)
    final = events[-1][1]["response"]
    text = "".join(data["delta"] for name, data in events if name == "response.output_text.delta")
    assert text == final["output"][0]["content"][0]["text"] == "Echo: hi there"
    assert final["output"][0]["content"][0]["annotations"] == []
    upstream = await foundry.clients["demo"].get_response(final["id"])
    assert _strip_model(final) == _strip_model(upstream)


async def test_passthrough_get_and_delete(foundry: Foundry) -> None:
    created = await _create(foundry, {"input": "keep me"})
    fetched = await foundry.passthrough.get(created["id"], "demo")
    assert fetched == created
    deleted = await foundry.passthrough.delete(created["id"], "demo")
    assert deleted == {"id": created["id"], "object": "response", "deleted": True}
    with pytest.raises(NotFoundError):
        await foundry.passthrough.get(created["id"], "demo")
