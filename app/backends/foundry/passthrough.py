"""`/v1/responses` on Foundry v2 routes: the agent's own Responses, relayed whole.

Everything the agent returns is kept (every output item type, annotations, usage, ids); only `model`
is rewritten to the route name the client used, and the agent is the route's, whatever the body says.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from app.backends.foundry import mapping
from app.backends.foundry.client import FoundryClient
from app.errors import UpstreamError, UpstreamTimeoutError
from app.metrics import Metrics

_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


class FoundryPassthrough:
    def __init__(self, clients: Mapping[str, FoundryClient], metrics: Metrics | None = None) -> None:
        self.clients = clients
        self.metrics = metrics

    async def stream(
        self, body: dict[str, Any], *, model: str, deadline: float
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        client = self.clients[model]
        clean = mapping.sanitize_passthrough(body, client.route)
        if self.metrics is not None and any(
            isinstance(i, dict) and i.get("type") == "function_call_output" for i in body.get("input") or []
        ):
            self.metrics.tool_rounds.labels("foundry").inc()
        try:
            async with asyncio.timeout_at(deadline), client.create_response_stream(clean, deadline) as events:
                async for sse in events:
                    if sse.data == "[DONE]":
                        return
                    data = sse.json()
                    if isinstance(data.get("response"), dict):
                        data["response"]["model"] = model
                        if self.metrics is not None and data.get("type") in _TERMINAL:
                            self.metrics.runs.labels("foundry", str(data["response"].get("status"))).inc()
                    yield str(data.get("type") or sse.event), data
        except TimeoutError as exc:
            raise UpstreamTimeoutError(
                f"The agent did not finish within the route's timeout of {client.route.timeout:g} s."
            ) from exc

    async def get(self, response_id: str, model: str) -> dict[str, Any]:
        response = await self._client(model).get_response(response_id)
        response["model"] = model
        return response

    async def delete(self, response_id: str, model: str) -> dict[str, Any]:
        return await self._client(model).delete_response(response_id)

    def _client(self, model: str) -> FoundryClient:
        client = self.clients.get(model)
        if client is None:
            raise UpstreamError(f"The route '{model}' is no longer configured.")
        return client
