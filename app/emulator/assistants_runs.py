"""The run executor: plays each run in a background task, event by event, and relays the events as SSE."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse

from app.emulator import script
from app.emulator.assistants_state import (
    SEGMENT_END,
    Run,
    Thread,
    message_object,
    message_text,
)
from app.emulator.assistants_tools import Made, hosted_steps
from app.emulator.files import FileStore
from app.emulator.hooks import EmulatorContext
from app.emulator.http import EmulatorHTTPError, new_id, now, sse

log = logging.getLogger(__name__)


def annotation(citation: script.Citation) -> dict[str, Any]:
    """A message text annotation for a citation marker: openai-openapi
    `MessageContentTextAnnotationsFileCitationObject` (`file_citation.file_id`), or Azure.AI.Agents'
    `MessageTextUrlCitationAnnotation` (`url_citation.url`, `.title`; Bing grounding and web search)."""
    where = {"text": citation.marker, "start_index": citation.start, "end_index": citation.end}
    if citation.file_id:
        return {"type": "file_citation", **where, "file_citation": {"file_id": citation.file_id}}
    return {"type": "url_citation", **where, "url_citation": {"url": citation.url, "title": citation.title}}


def _halves(text: str) -> list[str]:
    """Function arguments arrive in two deltas (as a model streams them), or one if short."""
    if len(text) < 2:
        return [text]
    middle = len(text) // 2
    return [text[:middle], text[middle:]]


class RunEngine:
    """Starts, continues, cancels and expires runs; every state change is also an event in the run's log."""

    def __init__(self, ctx: EmulatorContext, files: FileStore) -> None:
        self.ctx = ctx
        self.files = files
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- lifecycle entry points (called by the route handlers) ----

    def begin(self, run: Run) -> None:
        """A new run: `thread.run.created` and `thread.run.queued`, then the work in the background."""
        run.log.emit("thread.run.created", run.obj)
        run.log.emit("thread.run.queued", run.obj)
        self._spawn(run)

    def submit(self, run: Run, outputs: list[dict[str, str]]) -> None:
        """Tool outputs for every pending call: the run is queued again and continues in the background."""
        self._check_answers(run, "submit_tool_outputs", [o["tool_call_id"] for o in outputs])
        by_id = {o["tool_call_id"]: o["output"] for o in outputs}
        step = run.steps[-1]
        for call in step["step_details"]["tool_calls"]:
            call["function"]["output"] = by_id.get(call["id"])
        for call in run.pending:
            run.tool_items.append(script.Item(kind="tool_output", text=by_id[call["id"]], call_id=call["id"]))
        self._requeue(run)

    def approve(self, run: Run, approvals: list[dict[str, Any]]) -> None:
        """`tool_approvals` for every call of a `submit_tool_approval` action: approved calls run on the
        (fake) MCP server and their step holds the output; the run is queued again. Like tool outputs, the
        approvals must answer every pending call exactly once (the same 400 as `submit`; its wording for
        approvals is not published, so it names them)."""
        self._check_answers(run, "submit_tool_approval", [a["tool_call_id"] for a in approvals])
        verdict = {a["tool_call_id"]: a["approve"] for a in approvals}
        for call in run.steps[-1]["step_details"]["tool_calls"]:
            if verdict.get(call["id"]):
                call["output"] = script.mcp_output(call["name"], call["arguments"])
            text = "true" if verdict.get(call["id"]) else "false"
            run.tool_items.append(script.Item(kind="mcp_approval", text=text, call_id=call["id"]))
        self._requeue(run)

    def _check_answers(self, run: Run, action: str, got: list[str]) -> None:
        """The 400s of an answer to `requires_action`: the run must be waiting, for this kind of answer
        (`submit_tool_outputs` takes outputs, `submit_tool_approval` approvals), and `got` must name every
        pending call exactly once."""
        answers, other = ("outputs", "approvals") if action == "submit_tool_outputs" else ("approvals", "outputs")
        self.sweep(run.thread)
        if run.status != "requires_action":
            raise EmulatorHTTPError(400, f'Runs in status "{run.status}" do not accept tool {answers}.')
        if run.obj["required_action"]["type"] != action:
            raise EmulatorHTTPError(
                400, f"This run is waiting for tool {other}: answer it with 'tool_{other}'.", param=f"tool_{other}"
            )
        expected = [call["id"] for call in run.pending]
        if sorted(set(got)) != sorted(expected) or len(got) != len(set(got)):
            raise EmulatorHTTPError(400, f"Expected tool {answers} for call_ids {expected!r}, got {got!r}")

    def _requeue(self, run: Run) -> None:
        """Every pending call answered: the run is queued again and goes on in the background."""
        run.pending = []
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        run.obj.update(status="queued", required_action=None)
        run.log.emit("thread.run.queued", run.obj)
        self._spawn(run)

    def cancel(self, run: Run) -> None:
        self.sweep(run.thread)
        if run.status not in ("queued", "in_progress", "requires_action"):
            raise EmulatorHTTPError(400, f"Cannot cancel run with status '{run.status}'.")
        run.obj["status"] = "cancelling"
        run.log.emit("thread.run.cancelling", run.obj)
        task = run.task
        if task is not None and not task.done():
            task.cancel()
        self._background(self._finish_cancel(run, task))

    def sweep(self, thread: Thread) -> None:
        """Expire, lazily, every run of the thread whose wait for tool outputs has passed `expires_at`."""
        for run in thread.runs:
            if run.status == "requires_action" and time.time() >= run.deadline:
                self.expire(run)

    def expire(self, run: Run) -> None:
        if run.status != "requires_action":
            return
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        for step in run.steps:
            if step["status"] == "in_progress":
                step.update(status="expired", expired_at=now())
                run.log.emit("thread.run.step.expired", step)
        run.pending = []
        run.obj.update(status="expired", required_action=None)
        run.log.emit("thread.run.expired", run.obj)

    def forget(self, thread: Thread) -> None:
        """The thread is deleted: its background work stops and an active run ends `cancelled`."""
        for run in thread.runs:
            run.stop_background()
            if run.status in ("queued", "in_progress", "requires_action", "cancelling"):
                run.obj.update(status="cancelled", cancelled_at=now(), required_action=None)
                run.log.emit("thread.run.cancelled", run.obj)

    # ---- the stream relayed to a client ----

    def stream(self, run: Run, start: int) -> StreamingResponse:
        return StreamingResponse(
            self._relay(run, start), media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    @staticmethod
    async def _relay(run: Run, start: int) -> AsyncIterator[bytes]:
        """The run's events from `start` up to the end of this segment, then `done`. The client going
        away stops only this relay, never the run."""
        index = start
        while True:
            if index < len(run.log.events):
                name, data = run.log.events[index]
                index += 1
                yield sse(name, data)
                if name in SEGMENT_END:
                    yield sse("done", "[DONE]")
                    return
                continue
            if run.log.closed:
                return
            await run.log.changed()

    # ---- the background work ----

    def _spawn(self, run: Run) -> None:
        run.task = self._background(self._execute(run))

    def _background(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # a strong reference, else the loop may drop a running task
        task.add_done_callback(self._tasks.discard)
        return task

    async def _execute(self, run: Run) -> None:
        try:
            await asyncio.sleep(0)
            run.obj["status"] = "in_progress"
            if run.obj["started_at"] is None:
                run.obj["started_at"] = now()
            run.log.emit("thread.run.in_progress", run.obj)
            self._complete_tool_step(run)
            plan = script.plan_turn(run.assistant_name, self._items(run), run.tool_names, run.mcp)
            if plan.sleep_ms > 0:
                await asyncio.sleep(plan.sleep_ms / 1000)
            if plan.kind == "tool_calls":
                self._tool_calls(run, plan)
            elif plan.kind == "mcp_approval":
                self._mcp_approvals(run, plan)
            elif plan.kind == "fail":
                self._fail(run, plan.error_code, plan.error_message, plan.usage)
            else:
                self._mcp_done(run, plan)
                await self._message(run, plan, hosted_steps(run, plan, self.files))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave the run active forever
            log.exception("run %s failed in the emulator", run.id)
            self._fail(run, "server_error", f"The emulator failed: {exc!r}", None)

    @staticmethod
    def _items(run: Run) -> list[script.Item]:
        items = [
            script.Item(kind="user" if m["role"] == "user" else "assistant", text=message_text(m))
            for m in run.thread.messages
        ]
        return items + run.tool_items

    @staticmethod
    def _complete_tool_step(run: Run) -> None:
        """The step that asked for tool outputs (or approvals) completes when they arrive, and only then
        carries its usage: a step's `usage` "will be `null` while the run step's status is `in_progress`"
        (openai-openapi `RunStepCompletionUsage`; Azure.AI.Agents `RunStep.usage` says the same)."""
        if run.steps and run.steps[-1]["type"] == "tool_calls" and run.steps[-1]["status"] == "in_progress":
            step = run.steps[-1]
            step.update(status="completed", completed_at=now(), usage=run.step_usage.get(step["id"]))
            run.log.emit("thread.run.step.completed", step)

    @staticmethod
    def _waiting_step(run: Run, plan: script.Plan) -> dict[str, Any]:
        """The `tool_calls` step a run waiting on the client opens, `in_progress`, its calls added after;
        the plan's usage is kept for the step until the client's answer completes it."""
        step = run.start_step({"type": "tool_calls", "tool_calls": []})
        run.step_usage[step["id"]] = run.add_usage(plan.usage)
        return step

    def _require_action(self, run: Run, action: str, calls: list[dict[str, Any]]) -> None:
        """`requires_action` with `required_action: {type: <action>, <action>: {tool_calls}}`, and the
        timer that expires the run if the client never answers."""
        run.pending = calls
        run.obj.update(status="requires_action", required_action={"type": action, action: {"tool_calls": calls}})
        run.log.emit("thread.run.requires_action", run.obj)
        delay = max(0.0, run.deadline - time.time())
        run.timer = asyncio.get_running_loop().call_later(delay, self.expire, run)

    def _tool_calls(self, run: Run, plan: script.Plan) -> None:
        """Function calls: a `tool_calls` step left `in_progress`, then `requires_action`. The run waiting
        has `usage: null` ("`null` if the run is not in a terminal state", openai-openapi
        `RunCompletionUsage`, Azure.AI.Agents `ThreadRun.usage`; openai-dotnet's `RunStatus.IsTerminal`
        leaves `requires_action` out) and so has the waiting step: the model's tokens for these calls
        show on the step once the outputs complete it, and in the run's cumulative usage at its end."""
        step = self._waiting_step(run, plan)
        calls = []
        for index, planned in enumerate(plan.tool_calls):
            call_id = new_id("call")
            function = {"name": planned.name, "arguments": planned.arguments}
            call = {"id": call_id, "type": "function", "function": function}
            calls.append(call)
            step["step_details"]["tool_calls"].append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": planned.name, "arguments": planned.arguments, "output": None},
                }
            )
            first = {
                "index": index,
                "id": call_id,
                "type": "function",
                "function": {"name": planned.name, "arguments": "", "output": None},
            }
            run.log.emit("thread.run.step.delta", self._step_delta(step, first))
            for piece in _halves(planned.arguments):
                more = {"index": index, "type": "function", "function": {"arguments": piece}}
                run.log.emit("thread.run.step.delta", self._step_delta(step, more))
            run.tool_items.append(
                script.Item(kind="tool_call", name=planned.name, arguments=planned.arguments, call_id=call_id)
            )
        self._require_action(run, "submit_tool_outputs", calls)

    def _mcp_approvals(self, run: Run, plan: script.Plan) -> None:
        """MCP calls that need approval: a `tool_calls` step with `mcp` calls (azure-ai-agents
        `RunStepMcpToolCall`: `id`, `type: "mcp"`, `name`, `arguments`, `server_label`, `output`), then
        `requires_action` with `required_action: {type: "submit_tool_approval", submit_tool_approval:
        {tool_calls: [{id, type: "mcp", name, arguments, server_label}]}}` (Azure/azure-rest-api-specs
        `specification/ai/Azure.AI.Agents/runs/models.tsp` `SubmitToolApprovalAction`,
        `RequiredMcpToolCall`). It expires like a run waiting for tool outputs."""
        step = self._waiting_step(run, plan)
        calls = []
        for index, planned in enumerate(plan.mcp_calls):
            call_id = new_id("call")
            required = {
                "id": call_id,
                "type": "mcp",
                "name": planned.name,
                "arguments": planned.arguments,
                "server_label": planned.server_label,
            }
            calls.append(required)
            step["step_details"]["tool_calls"].append({**required, "output": None})
            run.log.emit("thread.run.step.delta", self._step_delta(step, {"index": index, **required}))
            run.tool_items.append(
                script.Item(kind="mcp_request", name=planned.name, arguments=planned.arguments, call_id=call_id)
            )
        self._require_action(run, "submit_tool_approval", calls)

    def _mcp_done(self, run: Run, plan: script.Plan) -> None:
        """MCP calls made without asking (`require_approval: "never"`): one completed `mcp` step."""
        made = [c for c in plan.mcp_calls if c.approval == "never"]
        if not made:
            return
        calls = [
            {
                "id": new_id("call"),
                "type": "mcp",
                "name": c.name,
                "arguments": c.arguments,
                "server_label": c.server_label,
                "output": c.output,
            }
            for c in made
        ]
        step = run.start_step({"type": "tool_calls", "tool_calls": calls})
        for index, call in enumerate(calls):
            run.log.emit("thread.run.step.delta", self._step_delta(step, {"index": index, **call}))
        usage = run.add_usage(script.call_usage(plan.usage.prompt_tokens, calls))
        step.update(status="completed", completed_at=now(), usage=usage)
        run.log.emit("thread.run.step.completed", step)

    @staticmethod
    def _step_delta(step: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": step["id"],
            "object": "thread.run.step.delta",
            "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}},
        }

    async def _message(self, run: Run, plan: script.Plan, made: Made) -> None:
        thread = run.thread
        message = message_object(
            new_id("msg"),
            thread.id,
            "assistant",
            [],
            assistant_id=run.obj["assistant_id"],
            run_id=run.id,
            status="in_progress",
        )
        step = run.start_step({"type": "message_creation", "message_creation": {"message_id": message["id"]}})
        thread.messages.append(message)
        run.log.emit("thread.message.created", message)
        run.log.emit("thread.message.in_progress", message)
        text = ""
        annotations: list[dict[str, Any]] = []
        lead = made.parts  # code interpreter's images come before the text (content index 0, 1, ...)
        for index, lead_part in enumerate(lead):
            message["content"] = list(lead[: index + 1])
            delta_part = {"index": index, **lead_part}
            run.log.emit(
                "thread.message.delta",
                {"id": message["id"], "object": "thread.message.delta", "delta": {"content": [delta_part]}},
            )
        pieces = plan.deltas or (plan.text,)
        for n, delta in enumerate(pieces):
            delay = self.ctx.options.token_delay_ms
            if n and delay > 0:
                await asyncio.sleep(delay / 1000)
            start = len(text)
            text += delta
            added = [annotation(c) for c in plan.citations if c.start == start and c.marker == delta]
            if n == len(pieces) - 1:
                added.extend(made.annotations)  # a file_path link: whole once the text is
            annotations.extend(added)
            body = {"type": "text", "text": {"value": text, "annotations": list(annotations)}}
            message["content"] = [*lead, body]
            part: dict[str, Any] = {"index": len(lead), "type": "text", "text": {"value": delta}}
            if n == 0 or added:
                first = len(annotations) - len(added)
                part["text"]["annotations"] = [{"index": first + i, **a} for i, a in enumerate(added)]
            run.log.emit(
                "thread.message.delta",
                {"id": message["id"], "object": "thread.message.delta", "delta": {"content": [part]}},
            )
        usage = run.add_usage(plan.usage)
        at = now()
        if plan.kind == "incomplete":
            reason = "content_filter" if plan.incomplete_reason == "content_filter" else "max_tokens"
            message.update(status="incomplete", incomplete_at=at, incomplete_details={"reason": reason})
            run.log.emit("thread.message.incomplete", message)
        else:
            message.update(status="completed", completed_at=at)
            run.log.emit("thread.message.completed", message)
        step.update(status="completed", completed_at=at, usage=usage)
        run.log.emit("thread.run.step.completed", step)
        if plan.kind == "incomplete":
            run.obj.update(
                status="incomplete", incomplete_details={"reason": plan.incomplete_reason}, usage=run.usage()
            )
            run.log.emit("thread.run.incomplete", run.obj)
        else:
            run.obj.update(status="completed", completed_at=at, usage=run.usage())
            run.log.emit("thread.run.completed", run.obj)

    def _fail(self, run: Run, code: str, message: str, usage: script.Usage | None) -> None:
        if usage is not None:
            run.add_usage(usage)
        at = now()
        for step in run.steps:
            if step["status"] == "in_progress":
                error = {"code": "server_error", "message": message}
                step.update(status="failed", failed_at=at, last_error=error)
                run.log.emit("thread.run.step.failed", step)
        for msg in run.thread.messages:
            if msg["run_id"] == run.id and msg["status"] == "in_progress":
                msg.update(status="incomplete", incomplete_at=at, incomplete_details={"reason": "run_failed"})
                run.log.emit("thread.message.incomplete", msg)
        run.obj.update(
            status="failed",
            failed_at=at,
            last_error={"code": code, "message": message},
            required_action=None,
            usage=run.usage(),
        )
        run.log.emit("thread.run.failed", run.obj)

    async def _finish_cancel(self, run: Run, task: asyncio.Task[None] | None) -> None:
        if task is not None and not task.done():
            await asyncio.wait([task])
        if run.status != "cancelling":
            return
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        at = now()
        for step in run.steps:
            if step["status"] == "in_progress":
                step.update(status="cancelled", cancelled_at=at)
                run.log.emit("thread.run.step.cancelled", step)
        for msg in run.thread.messages:
            if msg["run_id"] == run.id and msg["status"] == "in_progress":
                reason = {"reason": "run_cancelled"}
                msg.update(status="incomplete", incomplete_at=at, incomplete_details=reason)
                run.log.emit("thread.message.incomplete", msg)
        run.pending = []
        run.obj.update(status="cancelled", cancelled_at=at, required_action=None)
        run.log.emit("thread.run.cancelled", run.obj)
