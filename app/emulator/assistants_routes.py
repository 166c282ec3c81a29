"""Run routes of the Assistants surfaces: create (plain or streamed), thread-and-run, get, list, tool outputs,
cancel, steps."""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.emulator import assistants_bodies as bodies
from app.emulator import script
from app.emulator.assistants_state import Run, Thread, mcp_server, message_object, message_text
from app.emulator.filters import prompt_refused
from app.emulator.hooks import EmulatorContext
from app.emulator.http import EmulatorHTTPError, list_params, new_id, page, read_json

if TYPE_CHECKING:
    from app.emulator.assistants import AssistantsAPI


def _refuse_filtered_prompt(messages: list[dict[str, Any]]) -> None:
    """Azure's prompt filter runs before the model: a filtered last user message is a 400 at run creation
    (`filters.prompt_refused`), and no run is made."""
    users = [m for m in messages if m["role"] == "user"]
    if users and script.prompt_filtered(message_text(users[-1])):
        raise prompt_refused()


class RunsAPI:
    def __init__(self, ctx: EmulatorContext, api: AssistantsAPI) -> None:
        self.ctx = ctx
        self.api = api
        self.store = api.store
        self.engine = api.engine

    def _run(self, request: Request) -> tuple[Thread, Run]:
        thread = self.api.thread(request)
        return thread, self.store.run(thread, request.path_params["run_id"])

    def _options(self, body: dict[str, Any], assistant: dict[str, Any]) -> dict[str, Any]:
        """Validate the run options shared by create-run and create-thread-and-run (nothing is stored yet)."""
        tools = bodies.tools(body.get("tools"))
        instructions = bodies.string(body.get("instructions"), "instructions")
        if instructions is None:
            instructions = assistant.get("instructions") or ""
        extra = bodies.string(body.get("additional_instructions"), "additional_instructions")
        if extra:
            instructions = f"{instructions}\n\n{extra}" if instructions else extra
        temperature = bodies.number(body.get("temperature"), "temperature", 0, 2)
        top_p = bodies.number(body.get("top_p"), "top_p", 0, 1)
        parallel = bodies.boolean(body.get("parallel_tool_calls"), "parallel_tool_calls")
        response_format = bodies.response_format(body.get("response_format"))
        bodies.string(body.get("reasoning_effort"), "reasoning_effort")
        return {
            "model": bodies.string(body.get("model"), "model") or assistant["model"],
            "instructions": instructions,
            "tools": tools if tools is not None else copy.deepcopy(assistant["tools"]),
            "tool_resources": bodies.tool_resources(body.get("tool_resources")) or {},
            "metadata": bodies.metadata(body.get("metadata")) or {},
            "temperature": temperature if temperature is not None else assistant.get("temperature", 1.0),
            "top_p": top_p if top_p is not None else assistant.get("top_p", 1.0),
            "max_prompt_tokens": bodies.integer(body.get("max_prompt_tokens"), "max_prompt_tokens"),
            "max_completion_tokens": bodies.integer(body.get("max_completion_tokens"), "max_completion_tokens"),
            "truncation_strategy": bodies.truncation_strategy(body.get("truncation_strategy"))
            or {"type": "auto", "last_messages": None},
            "tool_choice": bodies.tool_choice(body.get("tool_choice")) or "auto",
            "parallel_tool_calls": True if parallel is None else parallel,
            "response_format": response_format or assistant.get("response_format") or "auto",
        }

    def _new_run(self, thread: Thread, assistant: dict[str, Any], options: dict[str, Any]) -> Run:
        started = time.time()
        deadline = started + self.ctx.options.run_expiry_s
        obj = {
            "id": new_id("run"),
            "object": "thread.run",
            "created_at": int(started),
            "assistant_id": assistant["id"],
            "thread_id": thread.id,
            "status": "queued",
            "started_at": None,
            "expires_at": int(deadline),
            "cancelled_at": None,
            "failed_at": None,
            "completed_at": None,
            "required_action": None,
            "last_error": None,
            "incomplete_details": None,
            "usage": None,
            **options,
        }
        run = Run(
            obj=obj,
            thread=thread,
            assistant_name=assistant.get("name"),
            tool_names=bodies.function_names(options["tools"]),
            deadline=deadline,
            mcp=mcp_server(options["tools"], options["tool_resources"] or thread.tool_resources),
        )
        thread.runs.append(run)
        return run

    async def create_run(self, request: Request) -> Response:
        thread = self.api.thread(request)
        body = await read_json(request, allowed=bodies.RUN_FIELDS, required=("assistant_id",))
        assistant = self.store.assistant(str(bodies.string(body["assistant_id"], "assistant_id")))
        stream = bodies.boolean(body.get("stream"), "stream")
        options = self._options(body, assistant)
        additional = bodies.message_list(body.get("additional_messages"), "additional_messages")
        active = thread.active_run()
        if active is not None:
            raise EmulatorHTTPError(400, f"Thread {thread.id} already has an active run {active.id}.")
        _refuse_filtered_prompt([*thread.messages, *additional])
        for m in additional:
            thread.messages.append(message_object(new_id("msg"), thread.id, **m))
        run = self._new_run(thread, assistant, options)
        self.engine.begin(run)
        if stream:
            return self.engine.stream(run, 0)
        return JSONResponse(run.log.events[0][1])

    async def create_thread_and_run(self, request: Request) -> Response:
        body = await read_json(request, allowed=bodies.THREAD_RUN_FIELDS, required=("assistant_id",))
        assistant = self.store.assistant(str(bodies.string(body["assistant_id"], "assistant_id")))
        stream = bodies.boolean(body.get("stream"), "stream")
        options = self._options(body, assistant)
        spec = body.get("thread") or {}
        if not isinstance(spec, dict):
            raise EmulatorHTTPError(
                400, "Invalid type for 'thread': expected an object.", param="thread", code="invalid_type"
            )
        bodies.check_keys(spec, bodies.THREAD_FIELDS, "thread")
        _refuse_filtered_prompt(bodies.message_list(spec.get("messages"), "thread.messages"))
        thread = self.api.new_thread(request, spec, "thread.")
        run = self._new_run(thread, assistant, options)
        run.log.emit("thread.created", thread.obj())
        self.engine.begin(run)
        if stream:
            return self.engine.stream(run, 0)
        return JSONResponse(run.log.events[1][1])

    async def list_runs(self, request: Request) -> Response:
        thread = self.api.thread(request)
        return JSONResponse(page([r.obj for r in thread.runs], **list_params(request)))

    async def get_run(self, request: Request) -> Response:
        _, run = self._run(request)
        return JSONResponse(run.obj)

    async def modify_run(self, request: Request) -> Response:
        _, run = self._run(request)
        body = await read_json(request, allowed=bodies.METADATA_ONLY, optional_body=True)
        metadata = bodies.metadata(body.get("metadata"))
        if metadata is not None:
            run.obj["metadata"] = metadata
        return JSONResponse(run.obj)

    async def cancel_run(self, request: Request) -> Response:
        _, run = self._run(request)
        self.engine.cancel(run)
        return JSONResponse(run.obj)

    async def submit_tool_outputs(self, request: Request) -> Response:
        _, run = self._run(request)
        body = await read_json(request, allowed=bodies.SUBMIT_FIELDS)
        stream = bodies.boolean(body.get("stream"), "stream")
        start = len(run.log.events)
        if body.get("tool_approvals") is not None:
            self.engine.approve(run, bodies.tool_approvals(body["tool_approvals"]))
        else:
            self.engine.submit(run, bodies.tool_outputs(body.get("tool_outputs")))
        if stream:
            return self.engine.stream(run, start)
        return JSONResponse(run.log.events[start][1])

    async def list_steps(self, request: Request) -> Response:
        _, run = self._run(request)
        return JSONResponse(page(run.steps, **list_params(request)))

    async def get_step(self, request: Request) -> Response:
        _, run = self._run(request)
        return JSONResponse(self.store.step(run, request.path_params["step_id"]))
