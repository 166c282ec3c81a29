"""Chat turns on Foundry v2 agents: history as input items, only new items sent after the first turn.

The conversation's cursor is the id of its last response: a follow-up sends `previous_response_id`
and the new items only (one upstream request), and the client's tool results go as
`function_call_output` items to the response that made the calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from app.backends.foundry import mapping
from app.backends.foundry.client import FoundryClient
from app.core.background import BackgroundTasks
from app.core.events import TextDelta, ThreadBound, ToolCallsRequired, TurnCompleted, TurnEvent
from app.core.turn import ToolResult, TurnRequest
from app.errors import BridgeError, InvalidRequestError, NotFoundError, UpstreamError, UpstreamTimeoutError
from app.metrics import Metrics

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class FoundryBackend:
    def __init__(
        self, clients: Mapping[str, FoundryClient], tasks: BackgroundTasks, metrics: Metrics | None = None
    ) -> None:
        self.clients = clients
        self.tasks = tasks
        self.metrics = metrics

    def _body(self, req: TurnRequest, *, continue_from: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"agent_reference": mapping.agent_reference(req.route), "store": True}
        if continue_from:
            body["previous_response_id"] = continue_from
            body["input"] = mapping.input_items(req.new_items)
        else:
            body["input"] = mapping.input_items(req.items)
        if req.instructions:
            body["instructions"] = req.instructions
        if req.tools is not None:
            body["tools"] = [mapping.tool_param(t) for t in req.tools]
        body.update(mapping.option_params(req.options))
        return body

    async def run_turn(self, req: TurnRequest) -> AsyncIterator[TurnEvent]:
        client = self.clients[req.model]
        live: dict[str, str] = {}
        if self.metrics is not None and req.cursor and any(isinstance(i, ToolResult) for i in req.new_items):
            self.metrics.tool_rounds.labels("foundry").inc()
        try:
            async with asyncio.timeout_at(req.deadline):
                try:
                    async for event in self._play(client, req, live, continue_from=req.cursor):
                        yield event
                except (NotFoundError, InvalidRequestError) as exc:
                    if not req.cursor or live or "previous" not in f"{exc.code} {exc.message}".lower():
                        raise
                    # The stored response is gone upstream: replay the whole conversation once.
                    async for event in self._play(client, req, live, continue_from=None):
                        yield event
        except (asyncio.CancelledError, GeneratorExit):
            if "response_id" in live:
                self.tasks.spawn(self._cancel(client, live["response_id"]))
            raise
        except TimeoutError as exc:
            if "response_id" in live:
                await self._cancel(client, live["response_id"])
            raise UpstreamTimeoutError(
                f"The agent did not finish within the route's timeout of {req.route.timeout:g} s."
            ) from exc

    async def _play(
        self, client: FoundryClient, req: TurnRequest, live: dict[str, str], *, continue_from: str | None
    ) -> AsyncIterator[TurnEvent]:
        async with client.create_response_stream(self._body(req, continue_from=continue_from), req.deadline) as events:
            async for sse in events:
                if sse.data == "[DONE]":
                    break
                data = sse.json()
                kind = data.get("type") or sse.event
                if kind == "response.output_text.delta":
                    yield TextDelta(text=data.get("delta") or "")
                elif kind == "response.created":
                    live["response_id"] = data["response"]["id"]
                    yield ThreadBound(thread_id=None, response_id=live["response_id"])
                elif kind in _TERMINAL:
                    live.pop("response_id", None)
                    response = data["response"]
                    if self.metrics is not None:
                        self.metrics.runs.labels("foundry", str(response.get("status"))).inc()
                    reason = mapping.finish_reason(response)
                    calls = mapping.function_calls(response)
                    if calls:
                        yield ToolCallsRequired(calls=calls)
                    yield TurnCompleted(
                        finish_reason=reason,
                        usage=mapping.usage_of(response),
                        cursor=response["id"],
                    )
                    return
                elif kind == "error":
                    raise UpstreamError(f"Azure reported an error in the response stream: {data.get('message')}")
        raise UpstreamError("The response stream ended before the response did.", code="upstream_stream_ended")

    async def _cancel(self, client: FoundryClient, response_id: str) -> None:
        try:
            await client.cancel_response(response_id, time.monotonic() + 10)
        except BridgeError:
            pass  # only background responses can be cancelled; closing the stream is all we can do
