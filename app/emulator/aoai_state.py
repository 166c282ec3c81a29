"""Assistants objects in memory: assistants, threads, messages, runs, run steps, and their event logs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from app.emulator.http import new_id, not_found, now

SEED_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_flights",
            "description": "returns the number of flights between two dates",
            "parameters": {
                "type": "object",
                "properties": {
                    "date_1": {"type": "string", "description": "the first date"},
                    "date_2": {"type": "string", "description": "the second date"},
                },
                "required": ["date_1", "date_2"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "my_cat_born_date",
            "description": "returns my cat's born date",
            "parameters": {
                "type": "object",
                "properties": {"cat_name": {"type": "string", "description": "the cat's name"}},
                "required": [],
            },
        },
    },
]

ACTIVE = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
SEGMENT_END = frozenset(
    {
        "thread.run.requires_action",
        "thread.run.completed",
        "thread.run.failed",
        "thread.run.cancelled",
        "thread.run.expired",
        "thread.run.incomplete",
    }
)


def assistant_object(
    assistant_id: str,
    *,
    name: str | None,
    model: str,
    instructions: str | None,
    tools: list[dict[str, Any]],
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    return {
        "id": assistant_id,
        "object": "assistant",
        "created_at": created_at or now(),
        "name": name,
        "description": description,
        "model": model,
        "instructions": instructions,
        "tools": tools,
        "tool_resources": {},
        "metadata": metadata or {},
        "temperature": 1.0,
        "top_p": 1.0,
        "response_format": "auto",
    }


def message_object(
    thread_id: str,
    role: str,
    text: str,
    *,
    run_id: str | None = None,
    assistant_id: str | None = None,
    status: str = "completed",
    metadata: dict[str, Any] | None = None,
    attachments: list[Any] | None = None,
) -> dict[str, Any]:
    created = now()
    return {
        "id": new_id("msg"),
        "object": "thread.message",
        "created_at": created,
        "assistant_id": assistant_id,
        "thread_id": thread_id,
        "run_id": run_id,
        "role": role,
        "status": status,
        "incomplete_details": None,
        "completed_at": created if status == "completed" else None,
        "incomplete_at": None,
        "content": [{"type": "text", "text": {"value": text, "annotations": []}}]
        if text or status == "completed"
        else [],
        "attachments": attachments or [],
        "metadata": metadata or {},
    }


def message_text(message: dict[str, Any]) -> str:
    return "".join(part["text"]["value"] for part in message.get("content", []) if part.get("type") == "text")


@dataclass
class Run:
    """A run and everything it emitted; stream requests follow `events` from an index."""

    data: dict[str, Any]
    thread: Thread
    assistant_name: str | None
    steps: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tool_items: list[tuple[str, str, str, str | None]] = field(default_factory=list)
    """This run's (call_id, name, arguments, output) in order; output None while pending."""
    cancel_requested: bool = False
    task: asyncio.Task[None] | None = None
    expiry: asyncio.TimerHandle | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        self.events.append((event, payload))
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_beyond(self, index: int) -> None:
        """Return once there are more than `index` events."""
        while len(self.events) <= index:
            await self._changed.wait()

    def pending_call_ids(self) -> list[str]:
        return [call_id for call_id, _, _, output in self.tool_items if output is None]


@dataclass
class Thread:
    data: dict[str, Any]
    surface: str
    project: str | None
    messages: list[dict[str, Any]] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    deleted_at: int | None = None

    @property
    def id(self) -> str:
        return str(self.data["id"])

    def active_run(self) -> Run | None:
        return next((r for r in self.runs if r.status in ACTIVE), None)


class AssistantsState:
    def __init__(self, empty: bool) -> None:
        self.empty = empty
        self.assistants: dict[str, dict[str, Any]] = {}
        self.threads: dict[str, Thread] = {}
        self.runs: dict[str, Run] = {}
        self.reset()

    def reset(self) -> None:
        for run in self.runs.values():
            if run.task is not None:
                run.task.cancel()
            if run.expiry is not None:
                run.expiry.cancel()
        self.assistants.clear()
        self.threads.clear()
        self.runs.clear()
        if not self.empty:
            self.assistants["asst_demo"] = assistant_object(
                "asst_demo", name="demo", model="gpt-4o", instructions="You are a helpful assistant.", tools=[]
            )
            self.assistants["asst_flights"] = assistant_object(
                "asst_flights",
                name="flights-demo",
                model="gpt-4o",
                instructions="You answer questions about flights with the tools you have.",
                tools=[dict(t) for t in SEED_TOOLS],
                description="You are a helpful AI assistant who helps answering questions",
            )

    def assistant(self, assistant_id: str) -> dict[str, Any]:
        found = self.assistants.get(assistant_id)
        if found is None:
            raise not_found("assistant", assistant_id)
        return found

    def thread(self, thread_id: str) -> Thread:
        found = self.threads.get(thread_id)
        if found is None or found.deleted_at is not None:
            raise not_found("thread", thread_id)
        return found

    def run(self, thread: Thread, run_id: str) -> Run:
        found = self.runs.get(run_id)
        if found is None or found.thread is not thread:
            raise not_found("run", run_id)
        return found

    def view(self) -> list[dict[str, Any]]:
        """Every thread ever created, deleted or not (the orphan check of the tests)."""
        return [
            {
                "id": t.id,
                "surface": t.surface,
                "project": t.project,
                "created_at": t.data["created_at"],
                "metadata": t.data["metadata"],
                "deleted": t.deleted_at is not None,
                "deleted_at": t.deleted_at,
                "messages": [
                    {"id": m["id"], "role": m["role"], "text": message_text(m), "run_id": m["run_id"]}
                    for m in t.messages
                ],
                "runs": [{"id": r.id, "status": r.status, "assistant_id": r.data["assistant_id"]} for r in t.runs],
            }
            for t in self.threads.values()
        ]
