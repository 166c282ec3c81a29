"""HTTP calls of a Foundry project's Responses API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import quote

from app.backends.upstream import SSEEvent, UpstreamClient
from app.core.ids import segment
from app.settings import RouteSettings


class FoundryClient:
    """One route's view of `{project}/openai/v1/responses` (no api-version: the v1 surface takes none)."""

    def __init__(self, upstream: UpstreamClient, route: RouteSettings) -> None:
        self.upstream = upstream
        self.route = route
        self.project = route.endpoint.rstrip("/")
        self.base = self.project + "/openai/v1"
        agent = route.agent
        # An agent's own endpoint (route `agent.endpoint_scoped`) serves the Responses protocol at a path
        # of its own (docs/reference/agent-endpoints.md); everything else is the project's v1 surface.
        self.responses_url = (
            f"{self.project}/agents/{quote(agent.name, safe='')}/endpoint/protocols/openai/responses"
            if agent is not None and agent.endpoint_scoped
            else self._url("/responses")
        )

    def _url(self, path: str) -> str:
        return self.base + path

    def create_response_stream(
        self, body: dict[str, Any], deadline: float
    ) -> AbstractAsyncContextManager[AsyncIterator[SSEEvent]]:
        return self.upstream.stream(
            "POST",
            self.responses_url,
            json={**body, "stream": True},
            deadline=deadline,
            idempotent=False,
            operation="create_response",
        )

    def stream_response(self, response_id: str, after: int) -> AbstractAsyncContextManager[AsyncIterator[SSEEvent]]:
        """A background response's events after sequence number `after`, live until it ends."""
        params = {"stream": "true"}
        if after >= 0:
            params["starting_after"] = str(after)
        return self.upstream.stream(
            "GET", self._url(f"/responses/{response_id}"), params=params, idempotent=True, operation="stream_response"
        )

    async def get_response(self, response_id: str, deadline: float | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.upstream.request(
            "GET", self._url(f"/responses/{segment(response_id)}"), deadline=deadline, operation="get_response"
        )
        return result

    async def delete_response(self, response_id: str, deadline: float | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.upstream.request(
            "DELETE", self._url(f"/responses/{segment(response_id)}"), deadline=deadline, operation="delete_response"
        )
        return result

    async def get_input_items(self, response_id: str, params: dict[str, str]) -> dict[str, Any]:
        result: dict[str, Any] = await self.upstream.request(
            "GET",
            self._url(f"/responses/{segment(response_id)}/input_items"),
            params=params,
            operation="list_input_items",
        )
        return result

    async def conversation_request(
        self,
        method: str,
        conversation_id: str | None,
        suffix: str = "",
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """`/openai/v1/conversations[/{id}{suffix}]` on the route's project, the id one encoded segment."""
        path = "" if conversation_id is None else f"/{segment(conversation_id)}{suffix}"
        result: dict[str, Any] = await self.upstream.request(
            method,
            self._url(f"/conversations{path}"),
            json=json,
            params=params or None,
            idempotent=method != "POST",
            operation=f"{method.lower()}_conversation"
            + ("_item" if "/items/" in path else "_items" if path.endswith("/items") else ""),
        )
        return result

    async def cancel_response(self, response_id: str, deadline: float | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.upstream.request(
            "POST",
            self._url(f"/responses/{segment(response_id)}/cancel"),
            deadline=deadline,
            operation="cancel_response",
        )
        return result

    async def file_content(self, file_id: str, container_id: str | None = None) -> tuple[AsyncIterator[bytes], str]:
        """A file's bytes: a code-interpreter container's file, or a project file."""
        file = segment(file_id)
        path = f"/containers/{segment(container_id)}/files/{file}/content" if container_id else f"/files/{file}/content"
        return await self.upstream.content(self._url(path), operation="file_content")

    async def get_agent_definition(self, deadline: float | None = None) -> dict[str, Any]:
        """The route's agent version (`agent.version` object with its `definition`): the configured
        version, or the agent's latest when the route names none (project API, `api-version=v1`)."""
        agent = self.route.agent
        assert agent is not None
        path = f"{self.project}/agents/{quote(agent.name, safe='')}"
        if agent.version:
            path += f"/versions/{quote(agent.version, safe='')}"
        result: dict[str, Any] = await self.upstream.request(
            "GET", path, params={"api-version": "v1"}, deadline=deadline, operation="get_agent_version"
        )
        if not agent.version:
            latest = (result.get("versions") or {}).get("latest") if isinstance(result, dict) else None
            return latest if isinstance(latest, dict) else {}
        return result
