"""The Assistants surfaces: Azure OpenAI (`/openai`) and Foundry Agent Service classic (`/api/projects/{p}`).

Both need `?api-version=`; both share one in-memory store: a thread remembers the surface and project that
created it (classic `GET /threads` lists only its project's), yet any surface reaches it by id.
Runs play in the background (`assistants_runs`); `stream: true` relays their events as SSE.
Preloaded unless `options.empty`: `asst_demo` ("demo"), `asst_flights` ("flights-demo", the seed's tools)
and `asst_mcp` ("mcp-demo", an `mcp` tool with server_label "docs", approvals "always" by default).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.datastructures import MutableHeaders, QueryParams
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.emulator import assistants_bodies as bodies
from app.emulator.assistants_routes import RunsAPI
from app.emulator.assistants_runs import RunEngine
from app.emulator.assistants_state import AssistantsStore, Surface, Thread, assistant_object, message_object
from app.emulator.files import FileStore
from app.emulator.hooks import EmulatorContext
from app.emulator.http import EmulatorHTTPError, list_params, new_id, now, page, read_json

RATE_LIMIT_PER_MINUTE = 1000


class AzureSurface:
    """Around every Assistants route: `?api-version=` is required; answers carry Azure's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._window = 0
        self._count = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        minute = int(time.time() // 60)
        if minute != self._window:
            self._window, self._count = minute, 0
        self._count += 1
        extra = {
            "apim-request-id": str(uuid.uuid4()),
            "x-ratelimit-remaining-requests": str(max(0, RATE_LIMIT_PER_MINUTE - self._count)),
        }

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers.append(name, value)
            await send(message)

        if not QueryParams(scope.get("query_string", b"")).get("api-version"):
            response = EmulatorHTTPError(
                400,
                "Missing required query parameter 'api-version'.",
                param="api-version",
                code="missing_required_parameter",
            ).response()
            await response(scope, receive, send_with_headers)
            return
        try:
            await self.app(scope, receive, send_with_headers)
        except EmulatorHTTPError as exc:
            await exc.response()(scope, receive, send_with_headers)


def _deleted(object_id: str, kind: str) -> JSONResponse:
    return JSONResponse({"id": object_id, "object": f"{kind}.deleted", "deleted": True})


class AssistantsAPI:
    """Assistants, threads and messages of one surface."""

    def __init__(self, store: AssistantsStore, engine: RunEngine, surface: Surface) -> None:
        self.store = store
        self.engine = engine
        self.surface: Surface = surface

    def project(self, request: Request) -> str | None:
        return str(request.path_params["project"]) if self.surface == "classic" else None

    def thread(self, request: Request) -> Thread:
        thread = self.store.thread(request.path_params["thread_id"])
        self.engine.sweep(thread)
        return thread

    # ---- assistants ----

    @staticmethod
    def _apply_assistant(obj: dict[str, Any], body: dict[str, Any]) -> None:
        checks: dict[str, Callable[[Any], Any]] = {
            "model": lambda v: bodies.string(v, "model", optional=False),
            "name": lambda v: bodies.string(v, "name"),
            "description": lambda v: bodies.string(v, "description"),
            "instructions": lambda v: bodies.string(v, "instructions"),
            "tools": lambda v: bodies.tools(v) or [],
            "tool_resources": lambda v: bodies.tool_resources(v) or {},
            "metadata": lambda v: bodies.metadata(v) or {},
            "temperature": lambda v: bodies.number(v, "temperature", 0, 2),
            "top_p": lambda v: bodies.number(v, "top_p", 0, 1),
            "response_format": lambda v: bodies.response_format(v),
            "reasoning_effort": lambda v: bodies.string(v, "reasoning_effort"),
        }
        updates = {key: check(body[key]) for key, check in checks.items() if key in body}
        updates.pop("reasoning_effort", None)  # accepted, not part of the assistant object
        obj.update(updates)

    async def create_assistant(self, request: Request) -> Response:
        body = await read_json(request, allowed=bodies.ASSISTANT_FIELDS, required=("model",))
        obj = assistant_object(new_id("asst"), model=str(body["model"]))
        self._apply_assistant(obj, body)
        self.store.assistants[obj["id"]] = obj
        return JSONResponse(obj)

    async def list_assistants(self, request: Request) -> Response:
        return JSONResponse(page(list(self.store.assistants.values()), **list_params(request)))

    async def get_assistant(self, request: Request) -> Response:
        return JSONResponse(self.store.assistant(request.path_params["assistant_id"]))

    async def modify_assistant(self, request: Request) -> Response:
        obj = self.store.assistant(request.path_params["assistant_id"])
        body = await read_json(request, allowed=bodies.ASSISTANT_FIELDS, optional_body=True)
        updated = dict(obj)
        self._apply_assistant(updated, body)
        obj.update(updated)
        return JSONResponse(obj)

    async def delete_assistant(self, request: Request) -> Response:
        obj = self.store.assistant(request.path_params["assistant_id"])
        del self.store.assistants[obj["id"]]
        return _deleted(obj["id"], "assistant")

    # ---- threads ----

    def new_thread(self, request: Request, body: dict[str, Any], where: str = "") -> Thread:
        """A thread from a `{messages, tool_resources, metadata}` body (all validated before it is stored)."""
        messages = bodies.message_list(body.get("messages"), f"{where}messages")
        thread = Thread(
            id=new_id("thread"),
            surface=self.surface,
            project=self.project(request),
            created_at=now(),
            metadata=bodies.metadata(body.get("metadata"), f"{where}metadata") or {},
            tool_resources=bodies.tool_resources(body.get("tool_resources"), f"{where}tool_resources") or {},
        )
        for m in messages:
            thread.messages.append(message_object(new_id("msg"), thread.id, **m))
        self.store.threads[thread.id] = thread
        return thread

    async def create_thread(self, request: Request) -> Response:
        body = await read_json(request, allowed=bodies.THREAD_FIELDS, optional_body=True)
        return JSONResponse(self.new_thread(request, body).obj())

    async def list_threads(self, request: Request) -> Response:
        params = list_params(request)
        project = self.project(request)
        mine = [
            t.obj()
            for t in self.store.threads.values()
            if t.deleted_at is None and t.surface == self.surface and t.project == project
        ]
        return JSONResponse(page(mine, **params))

    async def get_thread(self, request: Request) -> Response:
        return JSONResponse(self.thread(request).obj())

    async def modify_thread(self, request: Request) -> Response:
        thread = self.thread(request)
        body = await read_json(request, allowed=bodies.THREAD_MODIFY_FIELDS, optional_body=True)
        metadata = bodies.metadata(body.get("metadata"))
        resources = bodies.tool_resources(body.get("tool_resources"))
        if metadata is not None:
            thread.metadata = metadata
        if resources is not None:
            thread.tool_resources = resources
        return JSONResponse(thread.obj())

    async def delete_thread(self, request: Request) -> Response:
        thread = self.thread(request)
        self.engine.forget(thread)
        thread.deleted_at = now()
        return _deleted(thread.id, "thread")

    # ---- messages ----

    async def create_message(self, request: Request) -> Response:
        thread = self.thread(request)
        body = await read_json(request, allowed=bodies.MESSAGE_FIELDS, required=("role", "content"))
        fields = bodies.message(body, "")
        active = thread.active_run()
        if active is not None:
            raise EmulatorHTTPError(400, f"Can't add messages to {thread.id} while a run {active.id} is active.")
        message = message_object(new_id("msg"), thread.id, **fields)
        thread.messages.append(message)
        return JSONResponse(message)

    async def list_messages(self, request: Request) -> Response:
        thread = self.thread(request)
        params = list_params(request)
        run_id = request.query_params.get("run_id")
        messages = [m for m in thread.messages if run_id is None or m["run_id"] == run_id]
        return JSONResponse(page(messages, **params))

    async def get_message(self, request: Request) -> Response:
        thread = self.thread(request)
        return JSONResponse(self.store.message(thread, request.path_params["message_id"]))

    async def modify_message(self, request: Request) -> Response:
        thread = self.thread(request)
        message = self.store.message(thread, request.path_params["message_id"])
        body = await read_json(request, allowed=bodies.METADATA_ONLY, optional_body=True)
        metadata = bodies.metadata(body.get("metadata"))
        if metadata is not None:
            message["metadata"] = metadata
        return JSONResponse(message)

    async def delete_message(self, request: Request) -> Response:
        thread = self.thread(request)
        message = self.store.message(thread, request.path_params["message_id"])
        thread.messages.remove(message)
        return _deleted(message["id"], "thread.message")


def _routes(api: AssistantsAPI, runs: RunsAPI, *, list_threads: bool) -> list[BaseRoute]:
    thread = "/threads/{thread_id}"
    run = f"{thread}/runs/{{run_id}}"
    routes: list[BaseRoute] = [
        Route("/assistants", api.create_assistant, methods=["POST"]),
        Route("/assistants", api.list_assistants, methods=["GET"]),
        Route("/assistants/{assistant_id}", api.get_assistant, methods=["GET"]),
        Route("/assistants/{assistant_id}", api.modify_assistant, methods=["POST"]),
        Route("/assistants/{assistant_id}", api.delete_assistant, methods=["DELETE"]),
        Route("/threads", api.create_thread, methods=["POST"]),
        # before `/threads/{thread_id}`, which would take "runs" for a thread id
        Route("/threads/runs", runs.create_thread_and_run, methods=["POST"]),
        Route(thread, api.get_thread, methods=["GET"]),
        Route(thread, api.modify_thread, methods=["POST"]),
        Route(thread, api.delete_thread, methods=["DELETE"]),
        Route(f"{thread}/messages", api.create_message, methods=["POST"]),
        Route(f"{thread}/messages", api.list_messages, methods=["GET"]),
        Route(f"{thread}/messages/{{message_id}}", api.get_message, methods=["GET"]),
        Route(f"{thread}/messages/{{message_id}}", api.modify_message, methods=["POST"]),
        Route(f"{thread}/messages/{{message_id}}", api.delete_message, methods=["DELETE"]),
        Route(f"{thread}/runs", runs.create_run, methods=["POST"]),
        Route(f"{thread}/runs", runs.list_runs, methods=["GET"]),
        Route(run, runs.get_run, methods=["GET"]),
        Route(run, runs.modify_run, methods=["POST"]),
        Route(f"{run}/cancel", runs.cancel_run, methods=["POST"]),
        Route(f"{run}/submit_tool_outputs", runs.submit_tool_outputs, methods=["POST"]),
        Route(f"{run}/steps", runs.list_steps, methods=["GET"]),
        Route(f"{run}/steps/{{step_id}}", runs.get_step, methods=["GET"]),
    ]
    if list_threads:  # Foundry classic only: Azure OpenAI has no way to list threads
        routes.insert(6, Route("/threads", api.list_threads, methods=["GET"]))
    return routes


def build(ctx: EmulatorContext) -> list[BaseRoute]:
    store = AssistantsStore()
    store.reset(seed=not ctx.options.empty)
    files = FileStore()
    engine = RunEngine(ctx, files)

    def reset() -> None:
        store.reset(seed=not ctx.options.empty)
        files.files.clear()

    def threads_view() -> list[dict[str, Any]]:
        for thread in store.threads.values():
            engine.sweep(thread)
        return store.view()

    ctx.resets.append(reset)
    ctx.threads_view = threads_view

    mounts: list[BaseRoute] = []
    surfaces: tuple[tuple[Surface, str], ...] = (("openai", "/openai"), ("classic", "/api/projects/{project}"))
    for surface, prefix in surfaces:
        api = AssistantsAPI(store, engine, surface)
        runs = RunsAPI(ctx, api)
        mounts.append(
            Mount(
                prefix,
                routes=[*_routes(api, runs, list_threads=surface == "classic"), *files.routes()],
                middleware=[Middleware(AzureSurface)],
            )
        )
    return mounts
