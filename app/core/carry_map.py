"""A classic thread as Foundry v2 conversation items: its messages and its runs' function calls, and what cannot go.

Pure: the caller reads the thread (every page of its messages, oldest first, and the steps of each run)
and sends the items. Function calls and their outputs live in run steps (`step_details.type ==
"tool_calls"`), not in messages (docs/reference/carry.md). A run's steps are played in step order where
its first message stands, so each call and its output come before the reply that followed them.
Whatever has no v2 item here (attachments, images, code-interpreter and other built-in tool calls, a
call left without output) is listed in `lost`, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BATCH = 20
"""Items per create and per add: Azure's (OpenAI's) Conversations limit."""

ACTIVE_RUN = frozenset({"queued", "in_progress", "requires_action", "cancelling"})


@dataclass(frozen=True)
class Carried:
    """A thread as it will stand in its conversation."""

    items: tuple[dict[str, Any], ...]
    lost: tuple[str, ...] = ()
    """What the thread holds that no item carries, one line each (`msg_x: attachment file-y`)."""
    messages: int = 0
    calls: int = 0

    def batches(self, start: int = 0) -> list[list[dict[str, Any]]]:
        """The items from `start` on, in batches of at most `BATCH`."""
        rest = list(self.items[start:])
        return [rest[i : i + BATCH] for i in range(0, len(rest), BATCH)]


@dataclass
class _Walk:
    items: list[dict[str, Any]] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    emitted: set[str] = field(default_factory=set)
    played: set[str] = field(default_factory=set)
    calls: int = 0


def _texts(message: dict[str, Any], lost: list[str]) -> list[str]:
    mid = message.get("id", "?")
    texts: list[str] = []
    for part in message.get("content") or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text") or {}
            texts.append(str(text.get("value") or ""))
            for note in text.get("annotations") or []:
                for key in ("file_citation", "file_path"):
                    file_id = (note.get(key) or {}).get("file_id") if isinstance(note, dict) else None
                    if file_id:
                        lost.append(f"{mid}: {key.replace('_', ' ')} {file_id} (the marker text is carried)")
        elif kind == "image_file":
            lost.append(f"{mid}: image file {(part.get('image_file') or {}).get('file_id')}")
        elif kind == "image_url":
            lost.append(f"{mid}: image url")
        else:
            lost.append(f"{mid}: content part of type {kind}")
    for attachment in message.get("attachments") or []:
        lost.append(f"{mid}: attachment {attachment.get('file_id')}")
    return texts


def message_item(message: dict[str, Any], lost: list[str]) -> dict[str, Any] | None:
    """One thread message as a conversation message item (None when it has no text)."""
    texts = _texts(message, lost)
    if not any(texts):
        if not lost or not lost[-1].startswith(str(message.get("id"))):
            lost.append(f"{message.get('id')}: a message without text")
        return None
    role = "assistant" if message.get("role") == "assistant" else "user"
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": t} for t in texts if t]}


def _play_run(run_id: str, steps: Sequence[dict[str, Any]], by_id: Mapping[str, dict[str, Any]], walk: _Walk) -> None:
    for step in steps:
        details = step.get("step_details") or {}
        if details.get("type") == "message_creation":
            mid = str((details.get("message_creation") or {}).get("message_id"))
            if mid in by_id and mid not in walk.emitted:
                _emit(by_id[mid], walk)
            continue
        for call in details.get("tool_calls") or []:
            kind = call.get("type")
            if kind != "function":
                walk.lost.append(f"{run_id}: {kind} tool call {call.get('id')} (built-in tools run again on v2)")
                continue
            function = call.get("function") or {}
            if function.get("output") is None:
                walk.lost.append(f"{run_id}: function call {call.get('id')} ({function.get('name')}) had no output")
                continue
            walk.items.append(
                {
                    "type": "function_call",
                    "call_id": str(call.get("id")),
                    "name": str(function.get("name")),
                    "arguments": str(function.get("arguments") or "{}"),
                }
            )
            walk.items.append(
                {"type": "function_call_output", "call_id": str(call.get("id")), "output": str(function["output"])}
            )
            walk.calls += 1


def _emit(message: dict[str, Any], walk: _Walk) -> None:
    walk.emitted.add(str(message.get("id")))
    item = message_item(message, walk.lost)
    if item is not None:
        walk.items.append(item)


def carry_items(
    messages: Sequence[dict[str, Any]], steps: Mapping[str, Sequence[dict[str, Any]]], runs: Sequence[str] = ()
) -> Carried:
    """The thread's items: `messages` oldest first, `steps` per run id (oldest first), `runs` every run id.

    A run none of whose messages survive (it failed after its tool calls) has no place in the order:
    its calls are listed as lost."""
    by_id = {str(m.get("id")): m for m in messages}
    walk = _Walk()
    for message in messages:
        mid = str(message.get("id"))
        if mid in walk.emitted:
            continue
        run_id = message.get("run_id")
        if message.get("role") == "assistant" and run_id and run_id not in walk.played:
            walk.played.add(run_id)
            _play_run(run_id, steps.get(run_id) or (), by_id, walk)
        if mid not in walk.emitted:
            _emit(message, walk)
    for run_id in runs:
        if run_id in walk.played:
            continue
        for step in steps.get(run_id) or ():
            for call in (step.get("step_details") or {}).get("tool_calls") or []:
                walk.lost.append(f"{run_id}: {call.get('type')} tool call {call.get('id')} of a run without a reply")
    return Carried(items=tuple(walk.items), lost=tuple(walk.lost), messages=len(messages), calls=walk.calls)


def reply_runs(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The runs whose steps the carry reads: those that wrote a message, in order."""
    seen: dict[str, None] = {}
    for message in messages:
        run_id = message.get("run_id")
        if message.get("role") == "assistant" and run_id:
            seen.setdefault(str(run_id), None)
    return list(seen)
