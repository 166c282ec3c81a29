"""The Assistants surfaces: Azure OpenAI under `/openai`, Foundry classic under `/api/projects/{project}`."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route

from app.emulator.aoai_runs import RunExecutor, check_expiry, run_object
from app.emulator.aoai_state import SEGMENT_END, AssistantsState, Run, Thread, assistant_object, message_object
from app.emulator.hooks import EmulatorContext
from app.emulator.http import EmulatorHTTPError, list_params, new_id, now, page, read_json, sse

ASSISTANT_FIELDS = (
    "model",
    "name",
    "description",
    "instructions",
    "tools",
    "tool_resources",
    "metadata",
    "temperature",
    "top_p",
    "response_format",
    "reasoning_effort",
)
THREAD_FIELDS = ("messages", "tool_resources", "metadata")
MESSAGE_FIELDS = ("role", "content", "attachments", "metadata")
RUN_FIELDS = (
    "assistant_id",
    "model",
    "instructions",
    "additional_instructions",
    "additional_messages",
    "tools",
    "tool_resources",
    "stream",
    "temperature",
    "top_p",
    "max_prompt_tokens",
    "max_completion_tokens",
    "truncation_strategy",
    "tool_choice",
    "response_format",
    "parallel_tool_calls",
    "metadata",
    "reasoning_effort",
)
THREAD_RUN_FIELDS = (*(f for f in RUN_FIELDS if not f.startswith("additional_")), "thread")

Handler = Callable[[Request], Awaitable[Response]]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise EmulatorHTTPError(400, "Invalid 'content': expected a string or an array of content parts.", param="content")


def _new_message(thread: Thread, raw: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = set(raw) - set(MESSAGE_FIELDS)
    if unknown:
        key = sorted(unknown)[0]
        raise EmulatorHTTPError(
            400, f"Unknown parameter: '{where}.{key}'.", param=f"{where}.{key}", code="unknown_parameter"
        )
    role = raw.get("role")
    if role not in ("user", "assistant"):
        raise EmulatorHTTPError(
            400, f"Invalid value: '{role}'. Supported values are: 'user' and 'assistant'.", param=f"{where}.role"
        )
    if raw.get("content") in (None, "", []):
        raise EmulatorHTTPError(400, "Message content must be non-empty.", param=f"{where}.content")
    return message_object(
        thread.id, role, _content_text(raw["content"]), metadata=raw.get("metadata"), attachments=raw.get("attachments")
    )


class AssistantsAPI:
    def __init__(self, ctx: EmulatorContext) -> None:
        self.ctx = ctx
        self.state = AssistantsState(empty=ctx.options.empty)
        self.executor = RunExecutor(ctx)
        ctx.resets.append(self.state.reset)
        ctx.threads_view = self.state.view

    # -- plumbing --------------------------------------------------------------------------------

    def _handler(self, fn: Callable[[Request], Awaitable[Response]]) -> Handler:
        async def wrapped(request: Request) -> Response:
            if "api-version" not in request.query_params:
                raise EmulatorHTTPError(
                    400,
                    "Missing required query parameter 'api-version'.",
                    param="api-version",
                    code="missing_api_version",
                )
            response = await fn(request)
            response.headers.setdefault("apim-request-id", new_id("req"))
            response.headers.setdefault("x-ratelimit-remaining-requests", "1000")
            return response

        return wrapped

    def _thread(self, request: Request) -> Thread:
        return self.state.thread(request.path_params["thread_id"])

    def _run(self, request: Request) -> Run:
        run = self.state.run(self._thread(request), request.path_params["run_id"])
        check_expiry(run)
        return run

    def _stream(self, run: Run, start: int, prefix: list[tuple[str, dict[str, Any]]] | None = None) -> Response:
        async def events() -> AsyncIterator[bytes]:
            for name, payload in prefix or []:
                yield sse(name, payload)
            index = start
            while True:
                await run.wait_beyond(index)
                name, payload = run.events[index]
                index += 1
                yield sse(name, payload)
                if name in SEGMENT_END:
                    break
            yield sse("done", "[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    # -- assistants ------------------------------------------------------------------------------

    async def create_assistant(self, request: Request) -> Response:
        body = await read_json(request, allowed=ASSISTANT_FIELDS, required=("model",))
        assistant = assistant_object(
            new_id("asst"),
            name=body.get("name"),
            model=body["model"],
            instructions=body.get("instructions"),
            tools=body.get("tools") or [],
            description=body.get("description"),
            metadata=body.get("metadata"),
        )
        self.state.assistants[assistant["id"]] = assistant
        return JSONResponse(assistant)

    async def list_assistants(self, request: Request) -> Response:
        items = sorted(self.state.assistants.values(), key=lambda a: (a["created_at"], a["id"]))
        return JSONResponse(page(items, **list_params(request)))

    async def get_assistant(self, request: Request) -> Response:
        return JSONResponse(self.state.assistant(request.path_params["assistant_id"]))

    async def modify_assistant(self, request: Request) -> Response:
        assistant = self.state.assistant(request.path_params["assistant_id"])
        body = await read_json(request, allowed=ASSISTANT_FIELDS)
        assistant.update({k: v for k, v in body.items() if k in assistant})
        return JSONResponse(assistant)

    async def delete_assistant(self, request: Request) -> Response:
        assistant_id = request.path_params["assistant_id"]
        self.state.assistant(assistant_id)
        del self.state.assistants[assistant_id]
        return JSONResponse({"id": assistant_id, "object": "assistant.deleted", "deleted": True})

    # -- threads ---------------------------------------------------------------------------------

    def _new_thread(self, request: Request, body: dict[str, Any]) -> Thread:
        project = request.path_params.get("project")
        thread = Thread(
            data={
                "id": new_id("thread"),
                "object": "thread",
                "created_at": now(),
                "tool_resources": {},
                "metadata": body.get("metadata") or {},
            },
            surface="classic" if project else "openai",
            project=project,
        )
        for i, raw in enumerate(body.get("messages") or []):
            thread.messages.append(_new_message(thread, raw, f"messages[{i}]"))
        self.state.threads[thread.id] = thread
        return thread

    async def create_thread(self, request: Request) -> Response:
        body = await read_json(request, allowed=THREAD_FIELDS, optional_body=True)
        return JSONResponse(self._new_thread(request, body).data)

    async def list_threads(self, request: Request) -> Response:
        project = request.path_params["project"]
        items = [
            t.data
            for t in self.state.threads.values()
            if t.deleted_at is None and t.surface == "classic" and t.project == project
        ]
        return JSONResponse(page(items, **list_params(request)))

    async def get_thread(self, request: Request) -> Response:
        return JSONResponse(self._thread(request).data)

    async def modify_thread(self, request: Request) -> Response:
        thread = self._thread(request)
        body = await read_json(request, allowed=("tool_resources", "metadata"))
        if "metadata" in body:
            thread.data["metadata"] = body["metadata"] or {}
        return JSONResponse(thread.data)

    async def delete_thread(self, request: Request) -> Response:
        thread = self._thread(request)
        thread.deleted_at = now()
        for run in thread.runs:
            if run.task is not None and not run.task.done():
                run.task.cancel()
        return JSONResponse({"id": thread.id, "object": "thread.deleted", "deleted": True})

    # -- messages --------------------------------------------------------------------------------

    def _refuse_if_busy(self, thread: Thread) -> None:
        active = thread.active_run()
        if active is not None:
            check_expiry(active)
            if active.status in ("queued", "in_progress", "requires_action", "cancelling"):
                raise EmulatorHTTPError(400, f"Can't add messages to {thread.id} while a run {active.id} is active.")

    async def create_message(self, request: Request) -> Response:
        thread = self._thread(request)
        body = await read_json(request, allowed=MESSAGE_FIELDS, required=("role", "content"))
        self._refuse_if_busy(thread)
        message = _new_message(thread, body, "message")
        thread.messages.append(message)
        return JSONResponse(message)

    async def list_messages(self, request: Request) -> Response:
        thread = self._thread(request)
        run_id = request.query_params.get("run_id")
        items = [m for m in thread.messages if run_id is None or m["run_id"] == run_id]
        return JSONResponse(page(items, **list_params(request)))

    def _message(self, request: Request) -> tuple[Thread, dict[str, Any]]:
        thread = self._thread(request)
        message_id = request.path_params["message_id"]
        for message in thread.messages:
            if message["id"] == message_id:
                return thread, message
        raise EmulatorHTTPError(404, f"No message found with id '{message_id}'.")

    async def get_message(self, request: Request) -> Response:
        return JSONResponse(self._message(request)[1])

    async def modify_message(self, request: Request) -> Response:
        _, message = self._message(request)
        body = await read_json(request, allowed=("metadata",))
        message["metadata"] = body.get("metadata") or {}
        return JSONResponse(message)

    async def delete_message(self, request: Request) -> Response:
        thread, message = self._message(request)
        thread.messages.remove(message)
        return JSONResponse({"id": message["id"], "object": "thread.message.deleted", "deleted": True})

    # -- runs ------------------------------------------------------------------------------------

    def _start_run(self, thread: Thread, body: dict[str, Any]) -> Run:
        assistant = self.state.assistant(str(body["assistant_id"]))
        active = thread.active_run()
        if active is not None:
            check_expiry(active)
            if active.status in ("queued", "in_progress", "requires_action", "cancelling"):
                raise EmulatorHTTPError(400, f"Thread {thread.id} already has an active run {active.id}.")
        for i, raw in enumerate(body.get("additional_messages") or []):
            thread.messages.append(_new_message(thread, raw, f"additional_messages[{i}]"))
        run = Run(
            data=run_object(thread, assistant, body, self.ctx.options.run_expiry_s),
            thread=thread,
            assistant_name=assistant.get("name"),
        )
        thread.runs.append(run)
        self.state.runs[run.id] = run
        run.emit("thread.run.created", copy.deepcopy(run.data))
        run.emit("thread.run.queued", copy.deepcopy(run.data))
        self.executor.start(run)
        return run

    async def create_run(self, request: Request) -> Response:
        thread = self._thread(request)
        body = await read_json(request, allowed=RUN_FIELDS, required=("assistant_id",))
        run = self._start_run(thread, body)
        if body.get("stream"):
            return self._stream(run, 0)
        return JSONResponse(run.events[0][1])

    async def create_thread_and_run(self, request: Request) -> Response:
        body = await read_json(request, allowed=THREAD_RUN_FIELDS, required=("assistant_id",))
        thread_body = body.get("thread") or {}
        unknown = set(thread_body) - set(THREAD_FIELDS)
        if unknown:
            key = sorted(unknown)[0]
            raise EmulatorHTTPError(
                400, f"Unknown parameter: 'thread.{key}'.", param=f"thread.{key}", code="unknown_parameter"
            )
        self.state.assistant(str(body["assistant_id"]))
        thread = self._new_thread(request, thread_body)
        run = self._start_run(thread, body)
        if body.get("stream"):
            return self._stream(run, 0, prefix=[("thread.created", thread.data)])
        return JSONResponse(run.events[0][1])

    async def list_runs(self, request: Request) -> Response:
        thread = self._thread(request)
        for run in thread.runs:
            check_expiry(run)
        return JSONResponse(page([r.data for r in thread.runs], **list_params(request)))

    async def get_run(self, request: Request) -> Response:
        return JSONResponse(self._run(request).data)

    async def modify_run(self, request: Request) -> Response:
        run = self._run(request)
        body = await read_json(request, allowed=("metadata",))
        run.data["metadata"] = body.get("metadata") or {}
        return JSONResponse(run.data)

    async def cancel_run(self, request: Request) -> Response:
        run = self._run(request)
        self.executor.cancel(run)
        return JSONResponse(
            copy.deepcopy(run.data) | {"status": "cancelling"} if run.status != "cancelled" else run.data
        )

    async def submit_tool_outputs(self, request: Request) -> Response:
        run = self._run(request)
        body = await read_json(request, allowed=("tool_outputs", "stream"), required=("tool_outputs",))
        if not isinstance(body["tool_outputs"], list):
            raise EmulatorHTTPError(400, "Invalid 'tool_outputs': expected an array.", param="tool_outputs")
        start = len(run.events)
        self.executor.submit(run, body["tool_outputs"])
        if body.get("stream"):
            return self._stream(run, start)
        return JSONResponse(copy.deepcopy(run.events[start + 1][1]))

    async def list_steps(self, request: Request) -> Response:
        return JSONResponse(page(self._run(request).steps, **list_params(request)))

    async def get_step(self, request: Request) -> Response:
        run = self._run(request)
        step_id = request.path_params["step_id"]
        for step in run.steps:
            if step["id"] == step_id:
                return JSONResponse(step)
        raise EmulatorHTTPError(404, f"No run step found with id '{step_id}'.")

    # -- routing ---------------------------------------------------------------------------------

    def routes(self, *, classic: bool) -> list[BaseRoute]:
        h = self._handler
        table: list[BaseRoute] = [
            Route("/assistants", h(self.create_assistant), methods=["POST"]),
            Route("/assistants", h(self.list_assistants), methods=["GET"]),
            Route("/assistants/{assistant_id}", h(self.get_assistant), methods=["GET"]),
            Route("/assistants/{assistant_id}", h(self.modify_assistant), methods=["POST"]),
            Route("/assistants/{assistant_id}", h(self.delete_assistant), methods=["DELETE"]),
            Route("/threads", h(self.create_thread), methods=["POST"]),
            Route("/threads/runs", h(self.create_thread_and_run), methods=["POST"]),
            Route("/threads/{thread_id}", h(self.get_thread), methods=["GET"]),
            Route("/threads/{thread_id}", h(self.modify_thread), methods=["POST"]),
            Route("/threads/{thread_id}", h(self.delete_thread), methods=["DELETE"]),
            Route("/threads/{thread_id}/messages", h(self.create_message), methods=["POST"]),
            Route("/threads/{thread_id}/messages", h(self.list_messages), methods=["GET"]),
            Route("/threads/{thread_id}/messages/{message_id}", h(self.get_message), methods=["GET"]),
            Route("/threads/{thread_id}/messages/{message_id}", h(self.modify_message), methods=["POST"]),
            Route("/threads/{thread_id}/messages/{message_id}", h(self.delete_message), methods=["DELETE"]),
            Route("/threads/{thread_id}/runs", h(self.create_run), methods=["POST"]),
            Route("/threads/{thread_id}/runs", h(self.list_runs), methods=["GET"]),
            Route("/threads/{thread_id}/runs/{run_id}", h(self.get_run), methods=["GET"]),
            Route("/threads/{thread_id}/runs/{run_id}", h(self.modify_run), methods=["POST"]),
            Route("/threads/{thread_id}/runs/{run_id}/cancel", h(self.cancel_run), methods=["POST"]),
            Route(
                "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", h(self.submit_tool_outputs), methods=["POST"]
            ),
            Route("/threads/{thread_id}/runs/{run_id}/steps", h(self.list_steps), methods=["GET"]),
            Route("/threads/{thread_id}/runs/{run_id}/steps/{step_id}", h(self.get_step), methods=["GET"]),
        ]
        if classic:
            table.insert(6, Route("/threads", h(self.list_threads), methods=["GET"]))
        return table


def build(ctx: EmulatorContext) -> list[BaseRoute]:
    api = AssistantsAPI(ctx)
    return [
        Mount("/openai", routes=api.routes(classic=False)),
        Mount("/api/projects/{project}", routes=api.routes(classic=True)),
    ]
