"""Turns of a route moving from Assistants to Foundry v2 (`migrate_from`): where each one runs.

A cursor that names a thread (written while the route served Assistants: a chat fingerprint, an
`X-Conversation-Id`, a response id) continues on the conversation the thread was carried to, carried
first if it was not yet (the lazy path, under the thread's lock). A turn that brings tool outputs for a
run still waiting on the Assistants side finishes that run there: a conversation is never carried mid-run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from app.core.records import CallRecord
from app.core.turn import FunctionTool, Item, pending_tool_results

THREAD_PREFIX = "thread_"
CONVERSATION_PREFIX = "conv_"


class Carry(Protocol):
    """Carries threads of migrating routes (`app.backends.carry.Carrier`)."""

    def migrating(self, route: str) -> bool: ...

    async def ensure(self, thread_id: str, *, owner: str, route: str, deadline: float) -> str | None:
        """The conversation the thread continues on, carried first if needed; None for a thread not the owner's."""
        ...


class CallIndex(Protocol):
    async def get_calls(self, call_ids: Sequence[str], owner: str) -> list[CallRecord | None]: ...


class Binder(Protocol):
    async def bind_conversation_id(self, owner: str, route: str, conversation_id: str, value: str) -> None: ...


class ToolLog(Protocol):
    async def record_tools(self, route: str, tools: Sequence[dict[str, Any]]) -> None: ...


class ToolSchemas:
    """The function tools clients send on Assistants routes, recorded once per name and process: a v2 agent
    must declare them (`agent-bridge migrate-agent`)."""

    def __init__(self, log: ToolLog, *, limit: int = 128) -> None:
        self.log = log
        self.limit = limit
        self.seen: set[tuple[str, str]] = set()

    async def note(self, route: str, tools: Sequence[FunctionTool] | None) -> None:
        if not tools or len(self.seen) >= self.limit * 16:
            return
        new = [t for t in tools if (route, t.name) not in self.seen]
        if not new:
            return
        self.seen.update((route, t.name) for t in new)
        schemas = [
            {k: v for k, v in (("name", t.name), ("description", t.description), ("parameters", t.parameters),
                               ("strict", t.strict)) if v is not None}
            for t in new
        ]  # fmt: skip
        await self.log.record_tools(route, schemas)


def is_conversation(cursor: str | None) -> bool:
    return cursor is not None and cursor.startswith(CONVERSATION_PREFIX)


async def waiting_on_source(calls: CallIndex, call_ids: Sequence[str], owner: str) -> bool:
    """Whether these tool outputs answer a run that waits on the Assistants side (its calls are recorded)."""
    if not call_ids:
        return False
    return any(r is not None for r in await calls.get_calls(list(call_ids), owner))


async def chat_outputs_wait(calls: CallIndex, items: tuple[Item, ...], owner: str) -> bool:
    return await waiting_on_source(calls, [r.call_id for r in pending_tool_results(items)], owner)


def output_call_ids(body: dict[str, Any]) -> list[str]:
    """The call ids a Responses request's `function_call_output` items answer."""
    items = body.get("input")
    if not isinstance(items, list):
        return []
    return [
        str(i["call_id"])
        for i in items
        if isinstance(i, dict) and i.get("type") == "function_call_output" and isinstance(i.get("call_id"), str)
    ]


async def carried_cursor(
    carry: Carry,
    binder: Binder,
    *,
    cursor: str | None,
    owner: str,
    route: str,
    conversation_id: str | None,
    deadline: float,
) -> str | None:
    """The cursor a migrating route's chat turn continues on: a thread becomes its conversation."""
    if cursor is None or not cursor.startswith(THREAD_PREFIX):
        return cursor
    carried = await carry.ensure(cursor, owner=owner, route=route, deadline=deadline)
    if carried is not None and conversation_id is not None:
        await binder.bind_conversation_id(owner, route, conversation_id, carried)
    return carried
