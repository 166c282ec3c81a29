"""HTTP calls of the Assistants API, on Azure OpenAI (`/openai/...`) or a Foundry project (classic paths)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

from app.backends.upstream import SSEEvent, UpstreamClient, query_string
from app.core.ids import segment
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
        # The api-version in the URL itself: URLs given as strings are parsed once (yarl caches them),
        # where `params` are encoded and merged on every request.
        self._query = "?" + query_string(self.params)
        self.lists_threads = route.is_project

    def _url(self, path: str) -> str:
        return self.base + path

    def _stream(
        self, path: str, body: dict[str, Any], deadline: float, operation: str
    ) -> AbstractAsyncContextManager[AsyncIterator[SSEEvent]]:
        url = self.base + path + self._query
        return self.upstream.stream("POST", url, json=body, deadline=deadline, operation=operation)

    async def _call(
        self, method: str, path: str, operation: str, *, body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None, deadline: float | None = None, idempotent: bool = True,
    ) -> dict[str, Any]:  # fmt: skip
        url = self.base + path if params else self.base + path + self._query
        result: dict[str, Any] = await self.upstream.request(
            method, url, json=body, params=params or None, deadline=deadline, idempotent=idempotent, operation=operation
        )
        return result

    async def _pages(
        self, path: str, operation: str, params: dict[str, str], deadline: float | None = None
    ) -> list[dict[str, Any]]:
        """Every item of a listing, all pages: each next page starts `after` the last id of the one before."""
        items: list[dict[str, Any]] = []
        while True:
            page = await self._call("GET", path, operation, params=params, deadline=deadline)
            data: list[dict[str, Any]] = page.get("data") or []
            items += data
            if not data or not page.get("has_more"):
                return items
            params = {**params, "after": data[-1]["id"]}

    # -- streamed operations (the default: no polling, text and tool calls as they happen) --------

    def create_thread_and_run_stream(
        self, body: dict[str, Any], deadline: float
    ) -> AbstractAsyncContextManager[AsyncIterator[SSEEvent]]:
        return self._stream("/threads/runs", body, deadline, "create_thread_and_run")

    def create_run_stream(
        self, thread_id: str, body: dict[str, Any], deadline: float
    ) -> AbstractAsyncContextManager[AsyncIterator[SSEEvent]]:
        return self._stream(f"/threads/{segment(thread_id)}/runs", body, deadline, "create_run")

    def submit_tool_outputs_stream(
        self, thread_id: str, run_id: str, answers: dict[str, Any], deadline: float
    ) -> AbstractAsyncContextManager[AsyncIterator[SSEEvent]]:
        """`answers` is `{"tool_outputs": [...]}` or, for MCP approvals, `{"tool_approvals": [...]}`."""
        path = f"/threads/{segment(thread_id)}/runs/{segment(run_id)}/submit_tool_outputs"
        return self._stream(path, {**answers, "stream": True}, deadline, "submit_tool_outputs")

    # -- plain operations (a POST that starts or feeds a run is never retried: it would run twice) --

    async def create_thread_and_run(self, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        return await self._call(
            "POST", "/threads/runs", "create_thread_and_run", body=body, deadline=deadline, idempotent=False
        )

    async def create_run(self, thread_id: str, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        path = f"/threads/{segment(thread_id)}/runs"
        return await self._call("POST", path, "create_run", body=body, deadline=deadline, idempotent=False)

    async def submit_tool_outputs(
        self, thread_id: str, run_id: str, answers: dict[str, Any], deadline: float
    ) -> dict[str, Any]:
        path = f"/threads/{segment(thread_id)}/runs/{segment(run_id)}/submit_tool_outputs"
        return await self._call("POST", path, "submit_tool_outputs", body=answers, deadline=deadline, idempotent=False)

    async def get_run(self, thread_id: str, run_id: str, deadline: float | None = None) -> dict[str, Any]:
        path = f"/threads/{segment(thread_id)}/runs/{segment(run_id)}"
        return await self._call("GET", path, "get_run", deadline=deadline)

    async def cancel_run(self, thread_id: str, run_id: str, deadline: float | None = None) -> dict[str, Any]:
        path = f"/threads/{segment(thread_id)}/runs/{segment(run_id)}/cancel"
        return await self._call("POST", path, "cancel_run", deadline=deadline)

    async def run_messages(self, thread_id: str, run_id: str, deadline: float | None = None) -> list[dict[str, Any]]:
        params = {**self.params, "run_id": run_id, "order": "asc", "limit": "100"}
        result = await self._call(
            "GET", f"/threads/{segment(thread_id)}/messages", "list_messages", params=params, deadline=deadline
        )
        data: list[dict[str, Any]] = result.get("data") or []
        return data

    async def run_steps(self, thread_id: str, run_id: str, deadline: float | None = None) -> list[dict[str, Any]]:
        """Every step of a run, oldest first, all pages (`GET .../runs/{run_id}/steps`)."""
        params = {**self.params, "order": "asc", "limit": "100"}
        path = f"/threads/{segment(thread_id)}/runs/{segment(run_id)}/steps"
        return await self._pages(path, "list_run_steps", params, deadline)

    async def thread_messages(self, thread_id: str, deadline: float | None = None) -> list[dict[str, Any]]:
        """Every message of a thread, oldest first, all pages."""
        params = {**self.params, "order": "asc", "limit": "100"}
        return await self._pages(f"/threads/{segment(thread_id)}/messages", "list_messages", params, deadline)

    async def thread_runs(self, thread_id: str, deadline: float | None = None) -> list[dict[str, Any]]:
        """Every run of a thread, oldest first, all pages."""
        params = {**self.params, "order": "asc", "limit": "100"}
        return await self._pages(f"/threads/{segment(thread_id)}/runs", "list_runs", params, deadline)

    # -- a thread as a conversation (`app.backends.assistants.conversations`) ---------------------

    async def create_thread(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/threads", "create_thread", body=body, idempotent=False)

    async def list_messages(self, thread_id: str, params: dict[str, str]) -> dict[str, Any]:
        return await self._call(
            "GET", f"/threads/{segment(thread_id)}/messages", "list_messages", params={**self.params, **params}
        )

    async def create_message(self, thread_id: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"/threads/{segment(thread_id)}/messages"
        return await self._call("POST", path, "create_message", body=body, idempotent=False)

    async def get_message(self, thread_id: str, message_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/threads/{segment(thread_id)}/messages/{segment(message_id)}", "get_message")

    async def delete_message(self, thread_id: str, message_id: str) -> dict[str, Any]:
        return await self._call(
            "DELETE", f"/threads/{segment(thread_id)}/messages/{segment(message_id)}", "delete_message"
        )

    async def delete_thread(self, thread_id: str, deadline: float | None = None) -> None:
        await self._call("DELETE", f"/threads/{segment(thread_id)}", "delete_thread", deadline=deadline)

    async def list_threads(self) -> list[dict[str, Any]]:
        """Every thread of the project, all pages (Foundry classic only: Azure OpenAI cannot list threads)."""
        return await self._pages("/threads", "list_threads", {**self.params, "limit": "100", "order": "asc"})

    async def file_content(self, file_id: str, container_id: str | None = None) -> tuple[AsyncIterator[bytes], str]:
        """A file's bytes (`GET /files/{id}/content`): code-interpreter outputs, cited documents."""
        return await self.upstream.content(
            self._url(f"/files/{segment(file_id)}/content"), params=self.params, operation="file_content"
        )

    async def get_assistant(self, assistant_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/assistants/{segment(assistant_id)}", "get_assistant")
