"""An Assistants thread as an OpenAI conversation: created with its first items, its messages as items.

The thread is recorded in the registry the moment Azure names it, like a turn's (DESIGN §3 invariant 1):
if that write fails, the thread is deleted and the client gets the 503. Only messages (user or
assistant) can be items of a thread; a thread's messages come back as `message` items with
`input_text` (user) or `output_text` (assistant) parts, as OpenAI's conversation items are.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from app.backends.assistants.client import AssistantsClient
from app.core.records import ThreadRecord
from app.errors import BridgeError, InvalidRequestError, NotFoundError
from app.state.store import RedisStore

_LIST_PARAMS = ("limit", "order", "after", "before")


def message_body(item: dict[str, Any], where: str) -> dict[str, Any]:
    """A conversation item as an Assistants message (`{role, content}`), or a 400 naming it."""
    role = item.get("role")
    if item.get("type") != "message" or role not in ("user", "assistant"):
        raise InvalidRequestError(
            f"Invalid value for '{where}': on an Assistants route a conversation holds messages with role "
            "'user' or 'assistant' only.",
            param=where,
        )
    content = item.get("content")
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        if not all(isinstance(t, str) for t in texts):
            raise InvalidRequestError(
                f"Invalid value for '{where}.content': on an Assistants route only text parts can be kept.",
                param=f"{where}.content",
            )
        content = "".join(t for t in texts if isinstance(t, str))
    if not isinstance(content, str):
        raise InvalidRequestError(
            f"Invalid type for '{where}.content': expected a string or an array of text parts.",
            param=f"{where}.content",
            code="invalid_type",
        )
    return {"role": role, "content": content}


def message_item(message: dict[str, Any]) -> dict[str, Any]:
    """A thread message as a conversation item."""
    role = message.get("role")
    kind = "output_text" if role == "assistant" else "input_text"
    parts: list[dict[str, Any]] = []
    for part in message.get("content") or []:
        if isinstance(part, dict) and part.get("type") == "text":
            text = (part.get("text") or {}).get("value") or ""
            parts.append({"type": kind, "text": text, **({"annotations": []} if kind == "output_text" else {})})
    return {"type": "message", "id": message["id"], "status": "completed", "role": role, "content": parts}


class AssistantsThreads:
    """`app.core.held_conversations.Threads` over each Assistants route's client and the thread registry."""

    def __init__(self, clients: Mapping[str, AssistantsClient], store: RedisStore) -> None:
        self.clients = clients
        self.store = store

    async def create(self, route: str, owner: str, items: Sequence[dict[str, Any]]) -> str:
        messages = [message_body(item, f"items[{i}]") for i, item in enumerate(items)]
        client = self.clients[route]
        thread = await client.create_thread({"messages": messages} if messages else {})
        thread_id = str(thread["id"])
        now = time.time()
        try:
            await self.store.record_thread(
                ThreadRecord(
                    thread_id=thread_id,
                    route=route,
                    backend="assistants",
                    owner=owner,
                    created_at=now,
                    last_used_at=now,
                )
            )
        except BridgeError:
            await client.delete_thread(thread_id)
            raise
        return thread_id

    async def list_items(self, route: str, thread_id: str, params: dict[str, str]) -> dict[str, Any]:
        wanted = {k: v for k, v in params.items() if k in _LIST_PARAMS}
        page = await self.clients[route].list_messages(thread_id, wanted)
        data = [message_item(m) for m in page.get("data") or []]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": bool(page.get("has_more")),
        }

    async def add_items(self, route: str, thread_id: str, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        bodies = [message_body(item, f"items[{i}]") for i, item in enumerate(items)]
        client = self.clients[route]
        return [message_item(await client.create_message(thread_id, body)) for body in bodies]

    async def get_item(self, route: str, thread_id: str, item_id: str) -> dict[str, Any]:
        try:
            return message_item(await self.clients[route].get_message(thread_id, item_id))
        except NotFoundError as exc:
            raise NotFoundError(f"Item with id '{item_id}' not found.", param="item_id") from exc

    async def delete_item(self, route: str, thread_id: str, item_id: str) -> None:
        try:
            await self.clients[route].delete_message(thread_id, item_id)
        except NotFoundError as exc:
            raise NotFoundError(f"Item with id '{item_id}' not found.", param="item_id") from exc

    async def delete(self, route: str, thread_id: str) -> None:
        try:
            await self.clients[route].delete_thread(thread_id)
        except NotFoundError:
            pass  # already gone upstream: forget it all the same (DESIGN §3 invariant 2)
        await self.store.forget_thread(thread_id)
