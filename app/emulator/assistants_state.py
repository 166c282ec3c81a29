"""Assistants objects in memory (assistants, threads, messages, runs, steps), shared by both surfaces."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from app.emulator import script
from app.emulator.event_log import Log
from app.emulator.http import found, new_id, not_found, now
from app.emulator.script import Item, Usage

Surface = Literal["openai", "classic"]

ACTIVE = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
"""A run in one of these states blocks new messages and runs on its thread."""

SEGMENT_END = frozenset(
    {
        "thread.run.requires_action",
        "thread.run.completed",
        "thread.run.incomplete",
        "thread.run.failed",
        "thread.run.cancelled",
        "thread.run.expired",
    }
)
"""After one of these events a stream sends `done` and ends."""


MCP_TOOL: dict[str, Any] = {
    "type": "mcp",
    "server_label": "docs",
    "server_url": "https://mcp.example.com/mcp",
    "allowed_tools": [],
}
"""The seeded MCP tool, as azure-ai-agents' `McpTool.definitions` serializes it (`MCPToolDefinition`:
`server_label`, `server_url`, `allowed_tools`); its approval setting travels in the run's
`tool_resources.mcp[]` (`MCPToolResource`: `server_label`, `headers`, `require_approval`), "always" by
default (Azure/azure-sdk-for-python `sdk/ai/azure-ai-agents/samples/agents_tools/sample_agents_mcp.py`)."""


def mcp_server(tools: list[dict[str, Any]], resources: dict[str, Any]) -> script.McpServer | None:
    """The first `mcp` tool of the run, with `require_approval` from its `tool_resources.mcp[]` entry."""
    tool = next((t for t in tools if t.get("type") == "mcp"), None)
    if tool is None:
        return None
    label = str(tool.get("server_label") or "")
    listed = resources.get("mcp")
    entries: list[Any] = listed if isinstance(listed, list) else []
    entry = next((e for e in entries if isinstance(e, dict) and e.get("server_label") == label), {})
    approval = entry.get("require_approval") or tool.get("require_approval") or "always"
    return script.McpServer(label, approval if approval in ("always", "never") else "always")


class EventLog(Log[tuple[str, Any]]):
    """The events of one run, append-only; streamed requests follow it from where they joined."""

    def emit(self, name: str, data: Any) -> None:
        self.add((name, copy.deepcopy(data)))


def text_part(value: str) -> dict[str, Any]:
    return {"type": "text", "text": {"value": value, "annotations": []}}


def message_text(message: dict[str, Any]) -> str:
    return "".join(p["text"]["value"] for p in message["content"] if p.get("type") == "text")


def assistant_object(
    assistant_id: str,
    *,
    model: str,
    name: str | None = None,
    description: str | None = None,
    instructions: str | None = None,
    tools: list[dict[str, Any]] | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    return {
        "id": assistant_id,
        "object": "assistant",
        "created_at": created_at if created_at is not None else now(),
        "name": name,
        "description": description,
        "model": model,
        "instructions": instructions,
        "tools": copy.deepcopy(tools or []),
        "tool_resources": {},
        "metadata": {},
        "temperature": 1.0,
        "top_p": 1.0,
        "response_format": "auto",
    }


def message_object(
    message_id: str,
    thread_id: str,
    role: str,
    content: list[dict[str, Any]],
    *,
    attachments: list[dict[str, Any]] | None = None,
    metadata: dict[str, str] | None = None,
    assistant_id: str | None = None,
    run_id: str | None = None,
    status: str = "completed",
) -> dict[str, Any]:
    return {
        "id": message_id,
        "object": "thread.message",
        "created_at": now(),
        "assistant_id": assistant_id,
        "thread_id": thread_id,
        "run_id": run_id,
        "role": role,
        "status": status,
        "incomplete_details": None,
        "completed_at": None,
        "incomplete_at": None,
        "content": content,
        "attachments": attachments or [],
        "metadata": metadata or {},
    }


def step_object(run: Run, step_id: str, kind: str, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": step_id,
        "object": "thread.run.step",
        "created_at": now(),
        "assistant_id": run.obj["assistant_id"],
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


@dataclass(eq=False)
class Thread:
    id: str
    surface: Surface
    project: str | None
    created_at: int
    metadata: dict[str, str]
    tool_resources: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The live messages, oldest first (a deleted message leaves this list)."""
    runs: list[Run] = field(default_factory=list)
    deleted_at: int | None = None

    def obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "thread",
            "created_at": self.created_at,
            "tool_resources": copy.deepcopy(self.tool_resources),
            "metadata": dict(self.metadata),
        }

    def active_run(self) -> Run | None:
        return next((r for r in self.runs if r.status in ACTIVE), None)


@dataclass(eq=False)
class Run:
    obj: dict[str, Any]
    thread: Thread
    assistant_name: str | None
    tool_names: set[str]
    deadline: float
    """Wall-clock time (float seconds) at which a run waiting for tool outputs expires."""
    log: EventLog = field(default_factory=EventLog)
    steps: list[dict[str, Any]] = field(default_factory=list)
    tool_items: list[Item] = field(default_factory=list)
    """This run's tool calls and their outputs, in order (the script reads them after the messages)."""
    pending: list[dict[str, Any]] = field(default_factory=list)
    """The tool calls waiting for outputs (`required_action.submit_tool_outputs.tool_calls`)."""
    step_usage: dict[str, dict[str, int]] = field(default_factory=dict)
    mcp: script.McpServer | None = None
    """The agent's MCP server, if it has an `mcp` tool (approval setting from the run's tool_resources)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def status(self) -> str:
        return str(self.obj["status"])

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def add_usage(self, usage: Usage) -> dict[str, int]:
        """Count a step's tokens into the run's (a run's usage covers all its steps); the step's usage."""
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        return {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }

    def start_step(self, details: dict[str, Any]) -> dict[str, Any]:
        """A new step of `details["type"]`, `in_progress`: kept, and `created` then `in_progress` emitted."""
        step = step_object(self, new_id("step"), str(details["type"]), details)
        self.steps.append(step)
        self.log.emit("thread.run.step.created", step)
        self.log.emit("thread.run.step.in_progress", step)
        return step

    def stop_background(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class AssistantsStore:
    """Every assistant and every thread ever created (deleted threads stay, flagged, for the test hooks)."""

    def __init__(self) -> None:
        self.assistants: dict[str, dict[str, Any]] = {}
        self.threads: dict[str, Thread] = {}

    def reset(self, *, seed: bool) -> None:
        for thread in self.threads.values():
            for run in thread.runs:
                run.stop_background()
                run.log.close()
        self.assistants.clear()
        self.threads.clear()
        if seed:
            self.assistants["asst_demo"] = assistant_object(
                "asst_demo", name="demo", model="gpt-4o", instructions="You are a helpful assistant."
            )
            self.assistants["asst_flights"] = assistant_object(
                "asst_flights",
                name="flights-demo",
                model="gpt-4o",
                description="You are a helpful AI assistant who helps answering questions",
                tools=script.flights_tools("assistants"),
            )
            # Listed last: OpenAI's schema has no `mcp` tool, so schema checks of the first page stay valid.
            self.assistants["asst_mcp"] = assistant_object(
                "asst_mcp",
                name="mcp-demo",
                model="gpt-4o",
                instructions="You use the docs MCP server.",
                tools=[MCP_TOOL],
            )

    def assistant(self, assistant_id: str) -> dict[str, Any]:
        return found(self.assistants.get(assistant_id), "assistant", assistant_id)

    def thread(self, thread_id: str) -> Thread:
        """A live thread, whichever surface created it: one resource serves both (only listing is scoped)."""
        live = self.threads.get(thread_id)
        if live is None or live.deleted_at is not None:
            raise not_found("thread", thread_id)
        return live

    @staticmethod
    def run(thread: Thread, run_id: str) -> Run:
        return found(next((r for r in thread.runs if r.id == run_id), None), "run", run_id)

    @staticmethod
    def message(thread: Thread, message_id: str) -> dict[str, Any]:
        return found(next((m for m in thread.messages if m["id"] == message_id), None), "message", message_id)

    @staticmethod
    def step(run: Run, step_id: str) -> dict[str, Any]:
        return found(next((s for s in run.steps if s["id"] == step_id), None), "run step", step_id)

    def view(self) -> list[dict[str, Any]]:
        """What `/_emulator/threads` shows: every thread, deleted or not, with its messages and runs."""
        return [
            {
                "id": t.id,
                "surface": t.surface,
                "project": t.project,
                "created_at": t.created_at,
                "metadata": dict(t.metadata),
                "deleted": t.deleted_at is not None,
                "deleted_at": t.deleted_at,
                "messages": [
                    {"id": m["id"], "role": m["role"], "text": message_text(m), "run_id": m["run_id"]}
                    for m in t.messages
                ],
                "runs": [{"id": r.id, "status": r.status, "assistant_id": r.obj["assistant_id"]} for r in t.runs],
            }
            for t in self.threads.values()
        ]
