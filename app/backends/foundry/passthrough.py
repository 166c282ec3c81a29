"""`/v1/responses` on Foundry v2 routes: the agent's own Responses, relayed whole.

Everything the agent returns is kept (every output item type, annotations, usage, ids, sequence
numbers); only `model` is rewritten to the route name the client used, and the agent is the
route's, whatever the body says.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from app.backends.foundry import mapping
from app.backends.foundry.client import FoundryClient
from app.core import failures
from app.core.responses_codec import failed_events
from app.errors import BridgeError, ModelNotFoundError, UpstreamTimeoutError
from app.metrics import Metrics

_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


class FoundryPassthrough:
    """Forwards sanitized Responses requests to the route's project, with the route's agent_reference."""

    def __init__(self, clients: Mapping[str, FoundryClient], metrics: Metrics | None = None) -> None:
        self.clients = clients
        self.metrics = metrics

    async def stream(
        self, body: dict[str, Any], *, model: str, deadline: float
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Each upstream event as (type, data), in order; only `response.model` is rewritten.

        A stream that breaks, or reports only an `error` event, after the response began still ends
        with `response.failed` (SDKs wait for a terminal event); before it began, the error is raised.
        """
        client = self._client(model)
        clean = mapping.sanitize_passthrough(body, client.route)
        self._count_tool_round(body)
        last: dict[str, Any] | None = None
        sequence = -1
        error: tuple[str | None, str] | None = None
        try:
            async with asyncio.timeout_at(deadline), client.create_response_stream(clean, deadline) as events:
                async for sse in events:
                    if sse.data == "[DONE]":
                        break
                    data = sse.json()
                    if not isinstance(data, dict):
                        continue
                    kind = str(data.get("type") or sse.event)
                    if isinstance(data.get("sequence_number"), int):
                        sequence = data["sequence_number"]
                    response = data.get("response")
                    if isinstance(response, dict):
                        response["model"] = model
                        last = response
                        if kind in _TERMINAL:
                            self._count_run(response)
                            yield kind, data
                            return
                    if kind == "error":
                        code, message = data.get("code"), str(data.get("message") or "no message")
                        if last is None:
                            raise failures.stream_error(None if code is None else str(code), message)
                        error = (None if code is None else str(code), message)
                    yield kind, data
        except TimeoutError as exc:
            if last is None:
                raise self._timeout(client) from exc
            error = ("timeout", self._timeout(client).message)
        except BridgeError as exc:
            if last is None:
                raise
            error = (exc.code, exc.message)
        if last is not None:
            code, message = error or ("server_error", "The agent's response stream ended before the response did.")
            for event in failed_events(last, code, message, sequence + 1):
                yield str(event["type"]), event

    async def get(self, response_id: str, model: str) -> dict[str, Any]:
        response = await self._client(model).get_response(response_id)
        response["model"] = model
        return response

    async def delete(self, response_id: str, model: str) -> dict[str, Any]:
        return await self._client(model).delete_response(response_id)

    def _client(self, model: str) -> FoundryClient:
        client = self.clients.get(model)
        if client is None:
            raise ModelNotFoundError(
                f"The model '{model}' does not exist or you do not have access to it.", param="model"
            )
        return client

    @staticmethod
    def _timeout(client: FoundryClient) -> UpstreamTimeoutError:
        return UpstreamTimeoutError(
            f"The agent did not finish within the route's timeout of {client.route.timeout:g} s."
        )

    def _count_tool_round(self, body: dict[str, Any]) -> None:
        items = body.get("input")
        if not isinstance(items, list) or self.metrics is None:
            return
        if any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items):
            self.metrics.tool_rounds.labels("foundry").inc()

    def _count_run(self, response: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.runs.labels("foundry", str(response.get("status"))).inc()
