"""The run executor: plays a run in the background, event by event, as Azure's Assistants service does."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from app.emulator import script
from app.emulator.aoai_state import ACTIVE, Run, Thread, message_object, message_text
from app.emulator.hooks import EmulatorContext
from app.emulator.http import EmulatorHTTPError, new_id, now


def run_object(thread: Thread, assistant: dict[str, Any], body: dict[str, Any], expiry_s: float) -> dict[str, Any]:
    created = now()
    instructions = body.get("instructions")
    if instructions is None:
        instructions = assistant.get("instructions") or ""
    if body.get("additional_instructions"):
        instructions = (
            f"{instructions}\n\n{body['additional_instructions']}" if instructions else body["additional_instructions"]
        )
    return {
        "id": new_id("run"),
        "object": "thread.run",
        "created_at": created,
        "assistant_id": assistant["id"],
        "thread_id": thread.id,
        "status": "queued",
        "started_at": None,
        "expires_at": created + int(expiry_s),
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "required_action": None,
        "last_error": None,
        "model": body.get("model") or assistant["model"],
        "instructions": instructions,
        "tools": body["tools"] if body.get("tools") is not None else copy.deepcopy(assistant["tools"]),
        "tool_resources": {},
        "metadata": body.get("metadata") or {},
        "temperature": body.get("temperature") if body.get("temperature") is not None else 1.0,
        "top_p": body.get("top_p") if body.get("top_p") is not None else 1.0,
        "max_completion_tokens": body.get("max_completion_tokens"),
        "max_prompt_tokens": body.get("max_prompt_tokens"),
        "truncation_strategy": body.get("truncation_strategy") or {"type": "auto", "last_messages": None},
        "incomplete_details": None,
        "usage": None,
        "response_format": body.get("response_format") or "auto",
        "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
    }


def _snapshot(run: Run) -> dict[str, Any]:
    return copy.deepcopy(run.data)


def _step(run: Run, kind: str, details: dict[str, Any]) -> dict[str, Any]:
    step = {
        "id": new_id("step"),
        "object": "thread.run.step",
        "created_at": now(),
        "assistant_id": run.data["assistant_id"],
        "thread_id": run.thread.id,
        "run_id": run.id,
        "type": kind,
        "status": "in_progress",
        "step_details": details,
        "last_error": None,
        "expired_at": None,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "metadata": {},
        "usage": None,
    }
    run.steps.append(step)
    return step


def _set_status(run: Run, status: str) -> None:
    run.data["status"] = status
    run.emit(f"thread.run.{status}", _snapshot(run))


def _add_usage(run: Run, usage: script.Usage) -> dict[str, int]:
    current = run.data.get("usage") or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    total = {
        "prompt_tokens": current["prompt_tokens"] + usage.prompt_tokens,
        "completion_tokens": current["completion_tokens"] + usage.completion_tokens,
        "total_tokens": current["total_tokens"] + usage.total_tokens,
    }
    run.data["usage"] = total
    return total


def _items(run: Run) -> list[script.Item]:
    items: list[script.Item] = []
    for message in run.thread.messages:
        if message["role"] in ("user", "assistant") and message["status"] == "completed":
            items.append(script.Item(kind=message["role"], text=message_text(message)))
    for call_id, name, arguments, output in run.tool_items:
        items.append(script.Item(kind="tool_call", name=name, arguments=arguments, call_id=call_id))
        if output is not None:
            items.append(script.Item(kind="tool_output", text=output, call_id=call_id))
    return items


class Cancelled(Exception):
    """The run was cancelled while it was working."""


class RunExecutor:
    def __init__(self, ctx: EmulatorContext) -> None:
        self.ctx = ctx

    def start(self, run: Run) -> None:
        run.task = asyncio.get_running_loop().create_task(self._play(run))

    async def _pause(self, run: Run, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)
        if run.cancel_requested:
            raise Cancelled

    async def _play(self, run: Run) -> None:
        try:
            await self._pause(run, 0)
            if run.data["started_at"] is None:
                run.data["started_at"] = now()
            _set_status(run, "in_progress")
            function_names = {
                t["function"]["name"] for t in run.data["tools"] if t.get("type") == "function" and "function" in t
            }
            plan = script.plan_turn(run.assistant_name, _items(run), function_names)
            await self._pause(run, plan.sleep_ms / 1000)
            if plan.kind == "fail":
                run.data["failed_at"] = now()
                run.data["last_error"] = {"code": plan.error_code, "message": plan.error_message}
                _add_usage(run, plan.usage)
                _set_status(run, "failed")
            elif plan.kind == "tool_calls":
                self._require_action(run, plan)
            else:
                await self._reply(run, plan)
        except (Cancelled, asyncio.CancelledError):
            run.data["cancelled_at"] = now()
            run.data["required_action"] = None
            _set_status(run, "cancelled")

    def _require_action(self, run: Run, plan: script.Plan) -> None:
        calls: list[dict[str, Any]] = [
            {"id": new_id("call"), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in plan.tool_calls
        ]
        step = _step(run, "tool_calls", {"type": "tool_calls", "tool_calls": []})
        run.emit("thread.run.step.created", copy.deepcopy(step))
        run.emit("thread.run.step.in_progress", copy.deepcopy(step))
        for index, call in enumerate(calls):
            head = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": "", "output": None},
            }
            run.emit("thread.run.step.delta", _step_delta(step["id"], head))
            run.emit(
                "thread.run.step.delta",
                _step_delta(
                    step["id"],
                    {"index": index, "type": "function", "function": {"arguments": call["function"]["arguments"]}},
                ),
            )
        step["step_details"]["tool_calls"] = [{**c, "function": {**c["function"], "output": None}} for c in calls]
        for call in calls:
            run.tool_items.append((call["id"], call["function"]["name"], call["function"]["arguments"], None))
        _add_usage(run, plan.usage)
        run.data["required_action"] = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": calls}}
        _set_status(run, "requires_action")
        delay = max(0.0, run.data["expires_at"] - now()) if run.data["expires_at"] else self.ctx.options.run_expiry_s
        run.expiry = asyncio.get_running_loop().call_later(delay, expire, run)

    async def _reply(self, run: Run, plan: script.Plan) -> None:
        message = message_object(
            run.thread.id, "assistant", "", run_id=run.id, assistant_id=run.data["assistant_id"], status="in_progress"
        )
        run.thread.messages.append(message)
        step = _step(
            run, "message_creation", {"type": "message_creation", "message_creation": {"message_id": message["id"]}}
        )
        run.emit("thread.run.step.created", copy.deepcopy(step))
        run.emit("thread.run.step.in_progress", copy.deepcopy(step))
        run.emit("thread.message.created", copy.deepcopy(message))
        run.emit("thread.message.in_progress", copy.deepcopy(message))
        text = ""
        for index, delta in enumerate(plan.deltas):
            if index:
                await self._pause(run, self.ctx.options.token_delay_ms / 1000)
            elif run.cancel_requested:
                raise Cancelled
            text += delta
            run.emit(
                "thread.message.delta",
                {
                    "id": message["id"],
                    "object": "thread.message.delta",
                    "delta": {"content": [{"index": 0, "type": "text", "text": {"value": delta, "annotations": []}}]},
                },
            )
        finished = now()
        message["content"] = [{"type": "text", "text": {"value": text, "annotations": []}}]
        incomplete = plan.kind == "incomplete"
        message["status"] = "incomplete" if incomplete else "completed"
        message["completed_at"] = None if incomplete else finished
        message["incomplete_at"] = finished if incomplete else None
        message["incomplete_details"] = {"reason": "max_tokens"} if incomplete else None
        run.emit("thread.message.incomplete" if incomplete else "thread.message.completed", copy.deepcopy(message))
        if incomplete:
            message["status"] = "completed"  # it stays in the thread's history
        step["status"] = "completed"
        step["completed_at"] = finished
        step["usage"] = {
            "prompt_tokens": plan.usage.prompt_tokens,
            "completion_tokens": plan.usage.completion_tokens,
            "total_tokens": plan.usage.total_tokens,
        }
        run.emit("thread.run.step.completed", copy.deepcopy(step))
        _add_usage(run, plan.usage)
        if incomplete:
            run.data["incomplete_details"] = {"reason": "max_completion_tokens"}
            _set_status(run, "incomplete")
        else:
            run.data["completed_at"] = finished
            _set_status(run, "completed")

    def submit(self, run: Run, outputs: list[dict[str, Any]]) -> None:
        if run.status != "requires_action":
            raise EmulatorHTTPError(
                400,
                f'Runs in status "{run.status}" do not accept tool outputs.',
                param="tool_outputs",
            )
        pending = run.pending_call_ids()
        given = [str(o.get("tool_call_id")) for o in outputs]
        if sorted(given) != sorted(pending):
            raise EmulatorHTTPError(400, f"Expected tool outputs for call_ids {pending}, got {given}")
        by_id = {str(o["tool_call_id"]): str(o.get("output") or "") for o in outputs}
        run.tool_items = [
            (call_id, name, arguments, by_id.get(call_id, output))
            for call_id, name, arguments, output in run.tool_items
        ]
        if run.expiry is not None:
            run.expiry.cancel()
            run.expiry = None
        step = next(s for s in reversed(run.steps) if s["type"] == "tool_calls")
        for call in step["step_details"]["tool_calls"]:
            call["function"]["output"] = by_id.get(call["id"])
        step["status"] = "completed"
        step["completed_at"] = now()
        run.emit("thread.run.step.completed", copy.deepcopy(step))
        run.data["required_action"] = None
        _set_status(run, "queued")
        self.start(run)

    def cancel(self, run: Run) -> None:
        if run.status not in ACTIVE:
            raise EmulatorHTTPError(400, f"Cannot cancel run with status '{run.status}'.", param="run_id")
        if run.status == "cancelling":
            return
        run.cancel_requested = True
        if run.expiry is not None:
            run.expiry.cancel()
            run.expiry = None
        _set_status(run, "cancelling")
        if run.task is None or run.task.done():
            # Nothing is working on it (it waits for tool outputs): it is cancelled at once.
            run.data["cancelled_at"] = now()
            run.data["required_action"] = None
            _set_status(run, "cancelled")
        else:
            run.task.cancel()


def expire(run: Run) -> None:
    """A run left in requires_action past `expires_at` expires."""
    run.expiry = None
    if run.status != "requires_action":
        return
    run.data["required_action"] = None
    for step in run.steps:
        if step["status"] == "in_progress":
            step["status"] = "expired"
            step["expired_at"] = now()
    _set_status(run, "expired")


def check_expiry(run: Run) -> None:
    if run.status == "requires_action" and run.data["expires_at"] and now() >= run.data["expires_at"]:
        if run.expiry is not None:
            run.expiry.cancel()
        expire(run)


def _step_delta(step_id: str, call: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": step_id,
        "object": "thread.run.step.delta",
        "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}},
    }


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
