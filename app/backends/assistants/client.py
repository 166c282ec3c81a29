"""HTTP calls of the Assistants API, on Azure OpenAI (`/openai/...`) or a Foundry project (classic paths)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

from app.backends.upstream import SSEEvent, UpstreamClient
from app.settings import RouteSettings

AOAI_DEFAULT_API_VERSION = "2024-05-01-preview"
FOUNDRY_CLASSIC_DEFAULT_API_VERSION = "v1"


class AssistantsClient:
    """One route's view of the Assistants API: the right base path, api-version and credentials."""

    def __init__(self, upstream: UpstreamClient, route: RouteSettings) -> None:
        self.upstream = upstream
        endpoint = route.endpoint.rstrip("/")
        if route.is_project:
            self.base = endpoint
            version = route.api_version or FOUNDRY_CLASSIC_DEFAULT_API_VERSION
        else:
            self.base = endpoint + "/openai"
            version = route.api_version or AOAI_DEFAULT_API_VERSION
        self.params = {"api-version": version}
        self.lists_threads = route.is_project

    def _url(self, path: str) -> str:
        return self.base + path

    # -- streamed operations (the default: no polling, text and tool calls as they happen) --------

    def create_thread_and_run_stream(
        self, body: dict[str, Any], deadline: float
    ) -> AbstractAsyncContextManager[AsyncIterator[SSEEvent]]:
        return self.upstream.stream(
            "POST",
            self._url("/threads/runs"),
            json=body,
            params=self.params,
            deadline=deadline,
            operation="create_thread_and_run",
        )

    def create_run_stream(
        self, thread_id: str, body: dict[str, Any], deadline: float
    ) -> AbstractAsyncContextManager[AsyncIterator[SSEEvent]]:
        return self.upstream.stream(
            "POST",
            self._url(f"/threads/{thread_id}/runs"),
            json=body,
            params=self.params,
            deadline=deadline,
            operation="create_run",
        )

    def submit_tool_outputs_stream(
        self, thread_id: str, run_id: str, answers: dict[str, Any], deadline: float
    ) -> AbstractAsyncContextManager[AsyncIterator[SSEEvent]]:
        """`answers` is `{"tool_outputs": [...]}` or, for MCP approvals, `{"tool_approvals": [...]}`."""
        return self.upstream.stream(
            "POST",
            self._url(f"/threads/{thread_id}/runs/{run_id}/submit_tool_outputs"),
            json={**answers, "stream": True},
            params=self.params,
            deadline=deadline,
            operation="submit_tool_outputs",
        )

    # -- plain operations -------------------------------------------------------------------------

    async def create_thread_and_run(self, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        result: dict[str, Any] = await self.upstream.request(
            "POST",
            self._url("/threads/runs"),
            json=body,
            params=self.params,
            deadline=deadline,
            idempotent=False,
            operation="create_thread_and_run",
        )
        return result

    async def create_run(self, thread_id: str, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        result: dict[str, Any] = await self.upstream.request(
            "POST",
            self._url(f"/threads/{thread_id}/runs"),
            json=body,
            params=self.params,
            deadline=deadline,
            idempotent=False,
            operation="create_run",
        )
        return result

    async def submit_tool_outputs(
        self, thread_id: str, run_id: str, answers: dict[str, Any], deadline: float
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.upstream.request(
            "POST",
            self._url(f"/threads/{thread_id}/runs/{run_id}/submit_tool_outputs"),
            json=answers,
            params=self.params,
            deadline=deadline,
            idempotent=False,
            operation="submit_tool_outputs",
        )
        return result

    async def get_run(self, thread_id: str, run_id: str, deadline: float | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.upstream.request(
            "GET",
            self._url(f"/threads/{thread_id}/runs/{run_id}"),
            params=self.params,
            deadline=deadline,
            operation="get_run",
        )
        return result

    async def cancel_run(self, thread_id: str, run_id: str, deadline: float | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.upstream.request(
            "POST",
            self._url(f"/threads/{thread_id}/runs/{run_id}/cancel"),
            params=self.params,
            deadline=deadline,
            operation="cancel_run",
        )
        return result

    async def run_messages(self, thread_id: str, run_id: str, deadline: float | None = None) -> list[dict[str, Any]]:
        params = {**self.params, "run_id": run_id, "order": "asc", "limit": "100"}
        result = await self.upstream.request(
            "GET",
            self._url(f"/threads/{thread_id}/messages"),
            params=params,
            deadline=deadline,
            operation="list_messages",
        )
        data: list[dict[str, Any]] = result.get("data") or []
        return data

    async def run_steps(self, thread_id: str, run_id: str, deadline: float | None = None) -> list[dict[str, Any]]:
        """Every step of a run, oldest first, all pages (`GET .../runs/{run_id}/steps`)."""
        steps: list[dict[str, Any]] = []
        params = {**self.params, "order": "asc", "limit": "100"}
        while True:
            page = await self.upstream.request(
                "GET",
                self._url(f"/threads/{thread_id}/runs/{run_id}/steps"),
                params=params,
                deadline=deadline,
                operation="list_run_steps",
            )
            data: list[dict[str, Any]] = page.get("data") or []
            steps += data
            if not data or not page.get("has_more"):
                return steps
            params = {**params, "after": data[-1]["id"]}

    async def delete_thread(self, thread_id: str, deadline: float | None = None) -> None:
        await self.upstream.request(
            "DELETE",
            self._url(f"/threads/{thread_id}"),
            params=self.params,
            deadline=deadline,
            operation="delete_thread",
        )

    async def list_threads(self) -> list[dict[str, Any]]:
        """Every thread of the project, all pages (Foundry classic only: Azure OpenAI cannot list threads)."""
        threads: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params = {**self.params, "limit": "100", "order": "asc"}
            if after is not None:
                params["after"] = after
            page = await self.upstream.request("GET", self._url("/threads"), params=params, operation="list_threads")
            data: list[dict[str, Any]] = page.get("data") or []
            threads += data
            if not data or not page.get("has_more"):
                return threads
            after = data[-1]["id"]

    async def file_content(self, file_id: str, container_id: str | None = None) -> tuple[bytes, str]:
        """A file's bytes (`GET /files/{id}/content`): code-interpreter outputs, cited documents."""
        return await self.upstream.content(
            self._url(f"/files/{file_id}/content"), params=self.params, operation="file_content"
        )

    async def get_assistant(self, assistant_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.upstream.request(
            "GET", self._url(f"/assistants/{assistant_id}"), params=self.params, operation="get_assistant"
        )
        return result
