"""Foundry v2 turns, chat and pass-through, around one event reader of the Responses stream.

Chat: the conversation's cursor is the id of its last response: a follow-up sends
`previous_response_id` and the new items only (one upstream request), and the client's tool results
go as `function_call_output` items to the response that made the calls. Pass-through
(`/v1/responses`): the client's body, sanitized, with the route's `agent_reference`; every event
relayed whole, only `model` rewritten to the route name. The upstream
call is always streamed. Neither sends what Azure refuses next to an agent (`overrides`): the
request's tools are checked against the agent version's own (`definitions`), before the first event.

Both are `Work` for `app.core.lifetime.Turn`: `open` sends the create and reads up to
`response.created` (so a throttled start is a real 429), `events` reads on, `close` closes the
stream and cancels a response left unfinished (hang-up, deadline, shutdown). Azure cancels only
background responses, so responses are created with `background: true` (route setting `background`,
default true) unless the client asked for `store: false` (Azure refuses an unstored background
response): a foreground response runs on upstream to its end, and the bridge does not try to cancel it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from typing import Any

from app.backends.foundry import mapping, overrides
from app.backends.foundry.client import FoundryClient
from app.backends.foundry.definitions import AgentDefinitions
from app.backends.foundry.mapping import previous_response_gone
from app.backends.upstream import SSEEvent
from app.core import approvals, failures, notices
from app.core.background import BackgroundTasks
from app.core.events import (
    ApprovalRequest,
    ApprovalRequired,
    Cited,
    TextDelta,
    ThreadBound,
    ToolCallsRequired,
    TurnCompleted,
    TurnEvent,
)
from app.core.held_conversations import conversation_id_of, not_found
from app.core.migration import is_conversation
from app.core.responses_codec import failed_events
from app.core.turn import ToolCall, ToolResult, TurnRequest
from app.errors import BridgeError, ModelNotFoundError, NotFoundError, UpstreamError
from app.metrics import Metrics

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_CANCEL_WITHIN_S = 10.0
StreamEvent = dict[str, Any]


class ResponseReader:
    """One create-response stream: opened up to `response.created`, read to its end, cancelled if left unfinished."""

    def __init__(self, client: FoundryClient, metrics: Metrics | None) -> None:
        self.client = client
        self.metrics = metrics
        self.response_id: str | None = None
        """The response being generated (None before it is created and once it has ended)."""
        self.cancellable = False
        """Created in background mode: the only responses Azure cancels."""
        self._live = AsyncExitStack()
        self._events: AsyncIterator[SSEEvent] | None = None

    async def open(self, body: dict[str, Any], deadline: float) -> StreamEvent:
        """Send the create; the `response.created` event (errors before it are plain HTTP errors)."""
        self.cancellable = body.get("background") is True
        self._events = await self._live.enter_async_context(self.client.create_response_stream(body, deadline))
        async for kind, data in self.read():
            if kind == "response.created":
                return data
            if kind == "error":
                raise _stream_error(data)
        raise UpstreamError("The response stream ended before the response began.", code="upstream_stream_ended")

    async def read(self) -> AsyncIterator[tuple[str, StreamEvent]]:
        """Each event as (type, data) until the stream ends; the terminal event is the last one."""
        assert self._events is not None
        async for sse in self._events:
            if sse.data == "[DONE]":
                return
            data = sse.json()
            if not isinstance(data, dict):
                continue
            kind = str(data.get("type") or sse.event)
            if kind == "response.created":
                self.response_id = str(data["response"]["id"])
            elif kind in _TERMINAL:
                self.response_id = None
                if self.metrics is not None:
                    self.metrics.runs.labels("foundry", str(data["response"].get("status"))).inc()
            yield kind, data

    async def close(self) -> None:
        await self._live.aclose()
        response_id, self.response_id = self.response_id, None
        if response_id is not None and self.cancellable:
            try:
                await self.client.cancel_response(response_id, time.monotonic() + _CANCEL_WITHIN_S)
            except BridgeError:
                pass


class FoundryChatTurn:
    """One chat turn of a Foundry v2 agent."""

    def __init__(self, backend: FoundryBackend, req: TurnRequest) -> None:
        self.b = backend
        self.req = req
        self.client = backend.client(req.model)
        self.reader = ResponseReader(self.client, backend.metrics)
        self.calls: list[ToolCall] = []
        self.approvals: list[ApprovalRequest] = []
        self.answered: dict[str, bool] | None = None
        """Approvals the route answered itself: the turn goes on with one more response carrying them."""
        self.answered_for: str | None = None
        self.made: list[str] = []
        """Output item ids of every response of the turn (one more per approvals the route answered)."""

    async def open(self) -> ThreadBound:
        req = self.req
        tools = [mapping.tool_param(t) for t in req.tools or ()]
        await self.b.definitions.check_tools(req.model, mapping.agent_reference(req.route)["name"], self.client, tools)
        if self.b.metrics is not None and req.cursor and any(isinstance(i, ToolResult) for i in req.new_items):
            self.b.metrics.tool_rounds.labels("foundry").inc()
        try:
            created = await self.reader.open(self.b.body(req, previous_response_id=req.cursor), req.deadline)
        except BridgeError as exc:
            if req.conversation is not None and isinstance(exc, NotFoundError) and "onversation" in exc.message:
                raise not_found(req.conversation, "conversation") from exc
            if not req.cursor or is_conversation(req.cursor) or not previous_response_gone(exc):
                raise
            # The chain is gone upstream: replay the whole conversation, once.
            await self.reader.close()
            self.reader = ResponseReader(self.client, self.b.metrics)
            created = await self.reader.open(self.b.body(req, previous_response_id=None), req.deadline)
        return ThreadBound(thread_id=None, response_id=str(created["response"]["id"]))

    async def events(self) -> AsyncIterator[TurnEvent]:
        while True:
            async for event in self._read():
                yield event
            if self.answered is None:
                return
            # The route answered the agent's approval requests: one more response on the same chain.
            await self.reader.close()
            self.reader = ResponseReader(self.client, self.b.metrics)
            body = self.b.body(self.req, previous_response_id=self.answered_for, answered=self.answered)
            self.answered, self.calls, self.approvals = None, [], []
            await self.reader.open(body, self.req.deadline)

    async def _read(self) -> AsyncIterator[TurnEvent]:
        # Azure may send an `error` event and then the terminal `response.failed` (azure-as-it-is.md 3):
        # the terminal event says more (its code, innererror), so the error waits for it.
        pending: BridgeError | None = None
        async for kind, data in self.reader.read():
            if kind == "response.output_text.delta":
                yield TextDelta(text=str(data.get("delta") or ""))
            elif kind == "response.output_text.annotation.added":
                annotation = mapping.annotation_of(data.get("annotation"))
                if annotation is not None:
                    yield Cited((annotation,))
            elif kind == "response.output_item.done":
                item = data.get("item") or {}
                if item.get("type") == "function_call":
                    self.calls.append(mapping.function_call(item))
                elif item.get("type") == "mcp_approval_request":
                    self.approvals.append(mapping.approval_request(item))
            elif kind in _TERMINAL:
                for event in self._finish(data["response"]):
                    yield event
                return
            elif kind == "error":
                pending = _stream_error(data)
        if pending is not None:
            raise pending
        raise UpstreamError("The response stream ended before the response did.", code="upstream_stream_ended")

    def _finish(self, response: dict[str, Any]) -> list[TurnEvent]:
        """The events that end a turn: the calls the client must answer, then the completion."""
        reason = mapping.outcome(response)
        calls = mapping.function_calls(response) or tuple(self.calls)
        requests = mapping.approval_requests(response) or tuple(self.approvals)
        if (calls or requests) and reason == "stop":
            reason = "tool_calls"  # the final Response left its output out; the stream had the calls
        usage = mapping.usage_of(response)
        self.made += mapping.output_item_ids(response)
        items = tuple(self.made)
        if requests and not calls:
            mode = self.req.approvals
            if mode in ("approve", "deny"):
                self.answered = {r.id: mode == "approve" for r in requests}
                self.answered_for = str(response["id"])
                return []
            if mode == "refuse":
                raise approvals.refused(self.req.model, requests)
            cursor = str(self.req.cursor) if is_conversation(self.req.cursor) else str(response["id"])
            return [ApprovalRequired(requests=requests), TurnCompleted(reason, usage, cursor, items)]
        events: list[TurnEvent] = [ToolCallsRequired(calls=calls)] if calls else []
        # A carried conversation stays the cursor: its turns run with `conversation` from then on.
        cursor = str(self.req.cursor) if is_conversation(self.req.cursor) else str(response["id"])
        events.append(TurnCompleted(reason, usage, cursor, items))
        return events

    async def close(self, ending: BaseException | None) -> None:
        await self.reader.close()


class FoundryRelayTurn:
    """One `/v1/responses` request on a Foundry v2 route, relayed whole."""

    def __init__(self, backend: FoundryBackend, body: dict[str, Any], *, model: str, deadline: float) -> None:
        self.b = backend
        self.model = model
        self.deadline = deadline
        self.client = backend.client(model)
        self.request = body
        self.reader = ResponseReader(self.client, backend.metrics)
        self.created: StreamEvent | None = None
        items = body.get("input")
        if (
            backend.metrics is not None
            and isinstance(items, list)
            and any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items)
        ):
            backend.metrics.tool_rounds.labels("foundry").inc()

    async def _clean(self) -> dict[str, Any]:
        """The body Azure accepts: the route's agent, the tools checked against it, no overrides,
        in background mode (so that it can be cancelled) unless the client asked not to store it."""
        route = self.client.route
        clean = mapping.sanitize_passthrough(self.request, route)
        agent = clean["agent_reference"]["name"]
        stripped = overrides.strip(clean)
        await self.b.definitions.check_tools(self.model, agent, self.client, stripped.tools)
        for warning in overrides.warnings(stripped):
            notices.warn(warning)
        body = stripped.body
        if route.backend == "endpoint":
            # The endpoint's path names the agent, and it keeps nothing (`app.backends.foundry.endpoint`).
            body.pop("agent_reference", None)
            body.pop("background", None)
            body["store"] = False
        elif route.background and body.get("store") is not False:
            body["background"] = True
        return body

    async def open(self) -> ThreadBound:
        body = await self._clean()
        try:
            self.created = await self.reader.open(body, self.deadline)
        except BridgeError as exc:
            if "previous_response_id" in body and previous_response_gone(exc):
                # Azure forgot a response the bridge still knows: the same error as for an unknown id.
                raise mapping.previous_response_not_found(body["previous_response_id"]) from exc
            conversation = body.get("conversation")
            if isinstance(exc, NotFoundError) and conversation is not None and "onversation" in exc.message:
                # The body the bridge gives for an unknown conversation on every route kind.
                raise not_found(conversation_id_of(conversation), "conversation") from exc
            raise
        self._relabel(self.created["response"])
        return ThreadBound(thread_id=None, response_id=str(self.created["response"]["id"]))

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Relayed whole; a stream that breaks or reports only an `error` still ends with
        `response.failed` (SDKs wait for a terminal event)."""
        assert self.created is not None
        yield self.created
        last: dict[str, Any] = self.created["response"]
        sequence = int(self.created.get("sequence_number") or 0)
        error: tuple[str | None, str] = ("server_error", "The agent's response stream ended before the response did.")
        try:
            async for kind, data in self.reader.read():
                if isinstance(data.get("sequence_number"), int):
                    sequence = data["sequence_number"]
                response = data.get("response")
                if isinstance(response, dict):
                    self._relabel(response)
                    last = response
                if kind == "error":
                    code = data.get("code")
                    error = (None if code is None else str(code), str(data.get("message") or "no message"))
                yield data
                if kind in _TERMINAL:
                    return
        except BridgeError as exc:
            error = (exc.code, exc.message)
        for event in failed_events(last, error[0], error[1], sequence + 1):
            yield event

    def _relabel(self, response: dict[str, Any]) -> None:
        self.b.relabel(response, self.model)

    def response(self) -> dict[str, Any]:
        """The Response as Azure created it (once `open` returned)."""
        assert self.created is not None
        response: dict[str, Any] = self.created["response"]
        return response

    def detach(self) -> dict[str, Any]:
        """A background response goes on upstream: its stream closes, the response is not cancelled."""
        assert self.created is not None
        self.reader.cancellable = False
        response: dict[str, Any] = self.created["response"]
        return response

    async def close(self, ending: BaseException | None) -> None:
        await self.reader.close()


class FoundryBackend:
    """Starts turns of Foundry v2 agents (name + version). One client per route; no registry needed."""

    def __init__(
        self,
        clients: Mapping[str, FoundryClient],
        tasks: BackgroundTasks,
        metrics: Metrics | None = None,
        definitions: AgentDefinitions | None = None,
    ) -> None:
        self.clients = clients
        self.tasks = tasks
        self.metrics = metrics
        self.definitions = definitions or AgentDefinitions()

    def client(self, model: str) -> FoundryClient:
        client = self.clients.get(model)
        if client is None:
            raise ModelNotFoundError(
                f"The model '{model}' does not exist or you do not have access to it.", param="model"
            )
        return client

    def turn(self, req: TurnRequest) -> FoundryChatTurn:
        return FoundryChatTurn(self, req)

    def relay(self, body: dict[str, Any], *, model: str, deadline: float) -> FoundryRelayTurn:
        return FoundryRelayTurn(self, body, model=model, deadline=deadline)

    async def get(self, response_id: str, model: str) -> dict[str, Any]:
        response = await self.client(model).get_response(response_id)
        self.relabel(response, model)
        return response

    async def stream(self, response_id: str, model: str, after: int) -> AsyncIterator[StreamEvent]:
        """A background response's events after sequence number `after`, as Azure keeps them, to its end."""
        async with self.client(model).stream_response(response_id, after) as events:
            async for sse in events:
                if sse.data == "[DONE]":
                    return
                data = sse.json()
                if not isinstance(data, dict):
                    continue
                response = data.get("response")
                if isinstance(response, dict):
                    self.relabel(response, model)
                yield data

    async def cancel(self, response_id: str, model: str) -> dict[str, Any]:
        response = await self.client(model).cancel_response(response_id)
        self.relabel(response, model)
        return response

    @staticmethod
    def relabel(response: dict[str, Any], model: str) -> None:
        """A relayed Response under the route's name (the one field the bridge rewrites)."""
        response["model"] = model

    async def delete(self, response_id: str, model: str) -> dict[str, Any]:
        return await self.client(model).delete_response(response_id)

    async def input_items(self, response_id: str, model: str, params: dict[str, str]) -> dict[str, Any]:
        return await self.client(model).get_input_items(response_id, params)

    def body(
        self, req: TurnRequest, *, previous_response_id: str | None, answered: dict[str, bool] | None = None
    ) -> dict[str, Any]:
        """The create-response body of a turn: all items for a new chain, the new ones after a cursor
        (or the answers to its MCP approval requests); without what Azure refuses next to an agent
        (each dropped option is a warning)."""
        body: dict[str, Any] = {"agent_reference": mapping.agent_reference(req.route)}
        if answered is not None and previous_response_id:
            body["previous_response_id"] = previous_response_id
            body["input"] = [
                {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": ok}
                for request_id, ok in answered.items()
            ]
        elif is_conversation(previous_response_id):
            body["conversation"] = previous_response_id  # a thread carried to v2 (`app.core.migration`)
            body["input"] = mapping.input_items(req.new_items)
        elif previous_response_id:
            body["previous_response_id"] = previous_response_id
            body["input"] = mapping.input_items(req.new_items)
        elif req.conversation is not None:
            body["conversation"] = req.conversation
            body["input"] = mapping.input_items(req.new_items)
        else:
            body["input"] = mapping.input_items(req.items)
        body.update(mapping.lifecycle_params(req.route))
        if req.instructions:
            body["instructions"] = req.instructions
        tools = approvals.without_reserved(req.tools)
        if tools is not None:
            body["tools"] = [mapping.tool_param(t) for t in tools]
        body.update(mapping.option_params(req.options))
        stripped = overrides.strip(body)
        for warning in overrides.warnings(stripped):
            notices.warn(warning)
        if req.instructions:
            notices.warn(overrides.instructions_warning())
        return stripped.body


def _stream_error(data: StreamEvent) -> BridgeError:
    """An in-stream `error` event, by the failure table (a rate limit is a 429 before the first byte)."""
    code = data.get("code")
    return failures.stream_error(None if code is None else str(code), str(data.get("message") or ""))
