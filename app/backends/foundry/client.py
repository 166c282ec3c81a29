"""HTTP calls of a Foundry project's Responses API (`{project}/openai/v1/responses`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

from app.backends.upstream import SSEEvent, UpstreamClient
from app.settings import RouteSettings


class FoundryClient:
    def __init__(self, upstream: UpstreamClient, route: RouteSettings) -> None:
        self.upstream = upstream
        self.route = route
        self.base = route.endpoint.rstrip("/") + "/openai/v1"

    def create_response_stream(
        self, body: dict[str, Any], deadline: float
    ) -> AbstractAsyncContextManager[AsyncIterator[SSEEvent]]:
        return self.upstream.stream(
            "POST",
            f"{self.base}/responses",
            json={**body, "stream": True},
            deadline=deadline,
            operation="create_response",
        )

    async def create_response(self, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        result: dict[str, Any] = await self.upstream.request(
            "POST",
            f"{self.base}/responses",
            json=body,
            deadline=deadline,
            idempotent=False,
            operation="create_response",
        )
        return result

    async def get_response(self, response_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.upstream.request(
            "GET", f"{self.base}/responses/{response_id}", operation="get_response"
        )
        return result

    async def delete_response(self, response_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.upstream.request(
            "DELETE", f"{self.base}/responses/{response_id}", operation="delete_response"
        )
        return result

    async def cancel_response(self, response_id: str, deadline: float | None = None) -> None:
        await self.upstream.request(
            "POST", f"{self.base}/responses/{response_id}/cancel", deadline=deadline, operation="cancel_response"
        )
