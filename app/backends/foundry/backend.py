"""Chat turns on Foundry v2 agents: history as input items, only new items sent after the first turn.

The conversation's cursor is the id of its last response: a follow-up sends `previous_response_id`
and the new items only (one upstream request), and the client's tool results go as
`function_call_output` items to the response that made the calls. The upstream call is always
streamed, whether or not the client streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.backends.foundry import mapping, overrides
from app.backends.foundry.client import FoundryClient
from app.backends.foundry.definitions import AgentDefinitions
from app.backends.foundry.mapping import previous_response_gone
from app.core import notices
from app.core.background import BackgroundTasks
from app.core.events import TextDelta, ThreadBound, ToolCallsRequired, TurnCompleted, TurnEvent
from app.core.turn import ToolCall, ToolResult, TurnRequest
from app.errors import BridgeError, UpstreamError, UpstreamTimeoutError
from app.metrics import Metrics

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_CANCEL_WITHIN_S = 10.0


@dataclass
class _TurnState:
    """What one turn has started upstream, so that any ending can clean up after it."""

    response_id: str | None = None
    """The response being generated (None once it has ended)."""
    started: bool = False
    """Something was yielded: the turn can no longer be replayed."""
    calls: list[ToolCall] = field(default_factory=list)


class FoundryBackend:
    """Plays chat turns of Foundry v2 agents (name + version). One client per route; no registry needed."""

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

    def body(self, req: TurnRequest, *, previous_response_id: str | None) -> dict[str, Any]:
        """The create-response body of a turn: all items for a new chain, the new ones after a cursor;
        without what Azure refuses next to an agent (each dropped option is a warning)."""
        body: dict[str, Any] = {"agent_reference": mapping.agent_reference(req.route)}
        if previous_response_id:
            body["previous_response_id"] = previous_response_id
            body["input"] = mapping.input_items(req.new_items)
        else:
            body["input"] = mapping.input_items(req.items)
        body.update(mapping.lifecycle_params(req.route))
        if req.instructions:
            body["instructions"] = req.instructions
        if req.tools is not None:
            body["tools"] = [mapping.tool_param(t) for t in req.tools]
        body.update(mapping.option_params(req.options))
        stripped = overrides.strip(body)
        for warning in overrides.warnings(stripped, mapping.agent_reference(req.route)["name"]):
            notices.warn(warning)
        return stripped.body

    async def run_turn(self, req: TurnRequest) -> AsyncIterator[TurnEvent]:
        client = self.clients[req.model]
        state = _TurnState()
        tools = [mapping.tool_param(t) for t in req.tools or ()]
        await self.definitions.check_tools(req.model, mapping.agent_reference(req.route)["name"], client, tools)
        if self.metrics is not None and req.cursor and any(isinstance(i, ToolResult) for i in req.new_items):
            self.metrics.tool_rounds.labels("foundry").inc()
        try:
            async with asyncio.timeout_at(req.deadline):
                try:
                    async for event in self._play(client, req, state, previous_response_id=req.cursor):
                        yield event
                except BridgeError as exc:
                    if not req.cursor or state.started or not previous_response_gone(exc):
                        raise
                    # The chain is gone upstream: replay the whole conversation, once.
                    async for event in self._play(client, req, state, previous_response_id=None):
                        yield event
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away: cancel in a task of its own, outside this request's cancel scope.
            if state.response_id is not None:
                self.tasks.spawn(self._cancel(client, state.response_id), name=f"cancel-{state.response_id}")
            raise
        except TimeoutError as exc:
            await self._cancel(client, state.response_id)
            raise UpstreamTimeoutError(
                f"The agent did not finish within the route's timeout of {req.route.timeout:g} s."
            ) from exc
        except UpstreamTimeoutError:
            await self._cancel(client, state.response_id)
            raise

    async def _play(
        self, client: FoundryClient, req: TurnRequest, state: _TurnState, *, previous_response_id: str | None
    ) -> AsyncIterator[TurnEvent]:
        body = self.body(req, previous_response_id=previous_response_id)
        async with client.create_response_stream(body, req.deadline) as events:
            async for sse in events:
                if sse.data == "[DONE]":
                    break
                data = sse.json()
                kind = data.get("type") or sse.event
                if kind == "response.output_text.delta":
                    state.started = True
                    yield TextDelta(text=str(data.get("delta") or ""))
                elif kind == "response.created":
                    state.response_id = str(data["response"]["id"])
                    state.started = True
                    yield ThreadBound(thread_id=None, response_id=state.response_id)
                elif kind == "response.output_item.done":
                    item = data.get("item") or {}
                    if item.get("type") == "function_call":
                        state.calls.append(mapping.function_call(item))
                elif kind in _TERMINAL:
                    state.response_id = None
                    for event in self._finish(data["response"], state.calls):
                        yield event
                    return
                elif kind == "error":
                    raise UpstreamError(
                        f"Azure reported an error in the response stream: {data.get('message') or 'no message'}",
                        code=str(data.get("code") or "upstream_error"),
                    )
        raise UpstreamError("The response stream ended before the response did.", code="upstream_stream_ended")

    def _finish(self, response: dict[str, Any], streamed: list[ToolCall]) -> list[TurnEvent]:
        """The events that end a turn: the calls the client must answer, then the completion."""
        if self.metrics is not None:
            self.metrics.runs.labels("foundry", str(response.get("status"))).inc()
        reason = mapping.outcome(response)
        calls = mapping.function_calls(response) or tuple(streamed)
        if calls and reason == "stop":
            reason = "tool_calls"  # the final Response left its output out; the stream had the calls
        events: list[TurnEvent] = [ToolCallsRequired(calls=calls)] if calls else []
        events.append(TurnCompleted(finish_reason=reason, usage=mapping.usage_of(response), cursor=response["id"]))
        return events

    async def _cancel(self, client: FoundryClient, response_id: str | None) -> None:
        """Best effort: Azure cancels background responses only; closing the stream is the rest."""
        if response_id is None:
            return
        try:
            await client.cancel_response(response_id, time.monotonic() + _CANCEL_WITHIN_S)
        except BridgeError:
            pass
