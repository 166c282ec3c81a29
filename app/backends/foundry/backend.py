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

from app.backends.foundry import mapping
from app.backends.foundry.client import FoundryClient
from app.core import approvals, failures
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
from app.core.turn import ToolCall, ToolResult, TurnRequest
from app.errors import BridgeError, InvalidRequestError, NotFoundError, UpstreamError, UpstreamTimeoutError
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
    approvals: list[ApprovalRequest] = field(default_factory=list)
    response_id_done: str | None = None
    answered: dict[str, bool] | None = None
    """Approvals the route answered itself: the next request of this turn carries them."""


def previous_response_gone(exc: BridgeError) -> bool:
    """Whether Azure refused a request because its `previous_response_id` is unknown (expired, deleted)."""
    if not isinstance(exc, NotFoundError | InvalidRequestError):
        return False
    text = f"{exc.code} {exc.message}".lower()
    return exc.param == "previous_response_id" or "previous_response" in text or "previous response" in text


class FoundryBackend:
    """Plays chat turns of Foundry v2 agents (name + version). One client per route; no registry needed."""

    def __init__(
        self, clients: Mapping[str, FoundryClient], tasks: BackgroundTasks, metrics: Metrics | None = None
    ) -> None:
        self.clients = clients
        self.tasks = tasks
        self.metrics = metrics

    def body(
        self, req: TurnRequest, *, previous_response_id: str | None, answered: dict[str, bool] | None = None
    ) -> dict[str, Any]:
        """The create-response body of a turn: all items for a new chain, the new ones after a cursor."""
        body: dict[str, Any] = {"agent_reference": mapping.agent_reference(req.route)}
        if answered is not None and previous_response_id:
            body["previous_response_id"] = previous_response_id
            body["input"] = [
                {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": ok}
                for request_id, ok in answered.items()
            ]
        elif previous_response_id:
            body["previous_response_id"] = previous_response_id
            body["input"] = mapping.input_items(req.new_items)
        else:
            body["input"] = mapping.input_items(req.items)
        body["stream"] = True
        body["store"] = True
        if req.instructions:
            body["instructions"] = req.instructions
        tools = approvals.without_reserved(req.tools)
        if tools is not None:
            body["tools"] = [mapping.tool_param(t) for t in tools]
        body.update(mapping.option_params(req.options))
        return body

    async def run_turn(self, req: TurnRequest) -> AsyncIterator[TurnEvent]:
        client = self.clients[req.model]
        state = _TurnState()
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
        while True:
            async for event in self._one_response(client, req, state, previous_response_id):
                yield event
            if state.answered is None:
                return
            previous_response_id = state.response_id_done

    async def _one_response(
        self, client: FoundryClient, req: TurnRequest, state: _TurnState, previous_response_id: str | None
    ) -> AsyncIterator[TurnEvent]:
        answered, state.answered = state.answered, None
        body = self.body(req, previous_response_id=previous_response_id, answered=answered)
        state.calls, state.approvals = [], []
        async with client.create_response_stream(body, req.deadline) as events:
            async for sse in events:
                if sse.data == "[DONE]":
                    break
                data = sse.json()
                kind = data.get("type") or sse.event
                if kind == "response.output_text.delta":
                    state.started = True
                    yield TextDelta(text=str(data.get("delta") or ""))
                elif kind == "response.output_text.annotation.added":
                    annotation = mapping.annotation_of(data.get("annotation"))
                    if annotation is not None:
                        yield Cited((annotation,))
                elif kind == "response.created":
                    state.response_id = str(data["response"]["id"])
                    if not state.started:
                        state.started = True
                        yield ThreadBound(thread_id=None, response_id=state.response_id)
                elif kind == "response.output_item.done":
                    item = data.get("item") or {}
                    if item.get("type") == "function_call":
                        state.calls.append(mapping.function_call(item))
                    elif item.get("type") == "mcp_approval_request":
                        state.approvals.append(mapping.approval_request(item))
                elif kind in _TERMINAL:
                    state.response_id = None
                    for event in self._finish(req, state, data["response"]):
                        yield event
                    return
                elif kind == "error":
                    raise failures.stream_error(
                        None if data.get("code") is None else str(data["code"]), str(data.get("message") or "")
                    )
        raise UpstreamError("The response stream ended before the response did.", code="upstream_stream_ended")

    def _finish(self, req: TurnRequest, state: _TurnState, response: dict[str, Any]) -> list[TurnEvent]:
        """The events that end a turn: the calls the client must answer, then the completion."""
        if self.metrics is not None:
            self.metrics.runs.labels("foundry", str(response.get("status"))).inc()
        reason = mapping.outcome(response)
        calls = mapping.function_calls(response) or tuple(state.calls)
        requests = mapping.approval_requests(response) or tuple(state.approvals)
        if (calls or requests) and reason == "stop":
            reason = "tool_calls"  # the final Response left its output out; the stream had the calls
        if requests and not calls:
            if req.approvals in ("approve", "deny"):
                # The route answers: the turn goes on with one more response on the same chain.
                state.answered = {r.id: req.approvals == "approve" for r in requests}
                state.response_id_done = str(response["id"])
                return []
            if req.approvals == "refuse":
                raise approvals.refused(req.model, requests)
            return [
                ApprovalRequired(requests=requests),
                TurnCompleted(finish_reason=reason, usage=mapping.usage_of(response), cursor=response["id"]),
            ]
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
