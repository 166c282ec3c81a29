"""`/v1/responses` on Foundry v2 routes: the agent's own Responses, relayed whole.

Everything the agent returns is kept (every output item type, annotations, usage, ids, sequence
numbers); only `model` is rewritten to the route name the client used, and the agent is the
route's, whatever the body says.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from app.backends.foundry import mapping, overrides
from app.backends.foundry.client import FoundryClient
from app.backends.foundry.definitions import AgentDefinitions
from app.core import notices
from app.errors import BridgeError, ModelNotFoundError, UpstreamTimeoutError
from app.metrics import Metrics

_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


class FoundryPassthrough:
    """Forwards sanitized Responses requests to the route's project, with the route's agent_reference."""

    def __init__(
        self,
        clients: Mapping[str, FoundryClient],
        metrics: Metrics | None = None,
        definitions: AgentDefinitions | None = None,
    ) -> None:
        self.clients = clients
        self.metrics = metrics
        self.definitions = definitions or AgentDefinitions()

    async def stream(
        self, body: dict[str, Any], *, model: str, deadline: float
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Each upstream event as (type, data), in order; only `response.model` is rewritten."""
        client = self._client(model)
        clean = await self._clean(body, model, client)
        self._count_tool_round(body)
        try:
            async with asyncio.timeout_at(deadline), client.create_response_stream(clean, deadline) as events:
                async for sse in events:
                    if sse.data == "[DONE]":
                        return
                    data = sse.json()
                    if not isinstance(data, dict):
                        continue
                    kind = str(data.get("type") or sse.event)
                    response = data.get("response")
                    if isinstance(response, dict):
                        response["model"] = model
                        if kind in _TERMINAL:
                            self._count_run(response)
                    yield kind, data
        except TimeoutError as exc:
            raise self._timeout(client) from exc
        except BridgeError as exc:
            if "previous_response_id" in clean and mapping.previous_response_gone(exc):
                # Azure forgot a response the bridge still knows: the same error as for an unknown id.
                raise mapping.previous_response_not_found(clean["previous_response_id"]) from exc
            raise

    async def _clean(self, body: dict[str, Any], model: str, client: FoundryClient) -> dict[str, Any]:
        """The body Azure accepts: the route's agent, the tools checked against it, no overrides."""
        clean = mapping.sanitize_passthrough(body, client.route)
        agent = clean["agent_reference"]["name"]
        stripped = overrides.strip(clean)
        await self.definitions.check_tools(model, agent, client, stripped.tools)
        for warning in overrides.warnings(stripped, agent):
            notices.warn(warning)
        return stripped.body

    async def get(self, response_id: str, model: str) -> dict[str, Any]:
        response = await self._client(model).get_response(response_id)
        response["model"] = model
        return response

    async def delete(self, response_id: str, model: str) -> dict[str, Any]:
        return await self._client(model).delete_response(response_id)

    async def input_items(self, response_id: str, model: str, params: dict[str, str]) -> dict[str, Any]:
        return await self._client(model).get_input_items(response_id, params)

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
