"""Conversations the bridge holds itself: `/v1/conversations` on Assistants and agent-endpoint routes.

Foundry v2 routes relay conversations to their project (`conversations_service`). Elsewhere Azure has
no conversation object, so the bridge mints the id (`conv_` + 48 hex, the shape OpenAI's and Foundry's
ids have) and records in `conversation:<id>` whose it is and what stands behind it:
- an Assistants route: a thread, created with the conversation's first items and recorded in the
  thread registry like any other (the janitor deletes it after `threads.ttl` idle); items are the
  thread's messages;
- an agent-endpoint route: the history the bridge sends the stateless endpoint each turn
  (`app.core.history`), kept in `history:<id>`.
Metadata lives in the record. Another key's id, or one the bridge does not hold, is the 404 OpenAI
gives for an unknown conversation.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from app.core import history, input_items
from app.core.history import HistoryStore
from app.core.records import ConversationRecord
from app.errors import InvalidRequestError, NotFoundError
from app.settings import Settings

MAX_ITEMS_PER_CALL = 20
"""OpenAI's Conversations API: create takes at most 20 items, and items are added 20 at a time."""
MAX_METADATA = 16

KIND_OF_BACKEND = {"assistants": "thread", "endpoint": "history"}


class Threads(Protocol):
    """Assistants threads as conversation items (`app.backends.assistants.conversations`)."""

    async def create(self, route: str, owner: str, items: Sequence[dict[str, Any]]) -> str: ...

    async def list_items(self, route: str, thread_id: str, params: dict[str, str]) -> dict[str, Any]: ...

    async def add_items(self, route: str, thread_id: str, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]: ...

    async def get_item(self, route: str, thread_id: str, item_id: str) -> dict[str, Any]: ...

    async def delete_item(self, route: str, thread_id: str, item_id: str) -> None: ...

    async def delete(self, route: str, thread_id: str) -> None: ...


class HeldStore(HistoryStore, Protocol):
    async def save_held_conversation(self, rec: ConversationRecord) -> None: ...

    async def held_conversation(self, conversation_id: str) -> ConversationRecord | None: ...

    async def set_held_metadata(self, conversation_id: str, metadata: dict[str, str]) -> None: ...

    async def forget_held_conversation(self, conversation_id: str) -> None: ...


def new_conversation_id() -> str:
    return "conv_" + secrets.token_hex(24)


def not_found(conversation_id: str, param: str = "conversation_id") -> NotFoundError:
    return NotFoundError(f"Conversation with id '{conversation_id}' not found.", param=param)


def item_not_found(item_id: str) -> NotFoundError:
    return NotFoundError(f"Item with id '{item_id}' not found.", param="item_id")


def metadata_of(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidRequestError(
            "Invalid type for 'metadata': expected an object of strings.", param="metadata", code="invalid_type"
        )
    if len(value) > MAX_METADATA:
        raise InvalidRequestError(
            f"Invalid 'metadata': too many properties. Expected at most {MAX_METADATA}, got {len(value)}.",
            param="metadata",
            code="object_above_max_size",
        )
    return dict(value)


def items_of(value: Any) -> list[dict[str, Any]]:
    """`items` of a create or an add: at most 20, each kept with an id."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequestError(
            "Invalid type for 'items': expected an array of items.", param="items", code="invalid_type"
        )
    if len(value) > MAX_ITEMS_PER_CALL:
        raise InvalidRequestError(
            f"Invalid 'items': array too long. Expected an array with maximum length {MAX_ITEMS_PER_CALL}, "
            f"but got an array with length {len(value)} instead.",
            param="items",
            code="array_above_max_length",
        )
    return history.input_items(value, param="items")


def _only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            raise InvalidRequestError(f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")


def conversation_object(rec: ConversationRecord) -> dict[str, Any]:
    return {
        "id": rec.conversation_id,
        "object": "conversation",
        "created_at": int(rec.created_at),
        "metadata": rec.metadata,
    }


class HeldConversations:
    def __init__(self, store: HeldStore, threads: Threads, *, max_history_items: int) -> None:
        self.store = store
        self.threads = threads
        self.max_history_items = max_history_items

    async def create(self, body: dict[str, Any], *, route: str, backend: str, owner: str) -> dict[str, Any]:
        _only(body, ("items", "metadata"))
        metadata = metadata_of(body.get("metadata"))
        items = items_of(body.get("items"))
        rec = ConversationRecord(
            conversation_id=new_conversation_id(),
            owner=owner,
            route=route,
            kind=KIND_OF_BACKEND[backend],
            created_at=time.time(),
            metadata=metadata,
        )
        if rec.kind == "thread":
            thread_id = await self.threads.create(route, owner, items)
            rec = replace(rec, thread_id=thread_id)
        elif items:
            history.check_bound(0, len(items), self.max_history_items, param="items")
            await self.store.append_history(rec.conversation_id, items, expect=None)
        await self.store.save_held_conversation(rec)
        return conversation_object(rec)

    async def find(self, conversation_id: str, owner: str, param: str = "conversation_id") -> ConversationRecord:
        rec = await self.store.held_conversation(conversation_id)
        if rec is None or rec.owner != owner:
            raise not_found(conversation_id, param)
        return rec

    async def call(
        self,
        rec: ConversationRecord,
        method: str,
        suffix: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A call on a conversation already found to be the caller's: `suffix` is "", "/items" or "/items/<id>"."""
        body = json if isinstance(json, dict) else {}
        if suffix == "":
            if method == "GET":
                return conversation_object(rec)
            if method == "POST":
                _only(body, ("metadata",))
                if "metadata" not in body:
                    raise InvalidRequestError(
                        "Missing required parameter: 'metadata'.", param="metadata", code="missing_required_parameter"
                    )
                metadata = metadata_of(body["metadata"])
                await self.store.set_held_metadata(rec.conversation_id, metadata)
                return conversation_object(replace(rec, metadata=metadata))
            if rec.thread_id is not None:
                await self.threads.delete(rec.route, rec.thread_id)
            await self.store.forget_held_conversation(rec.conversation_id)
            return {"id": rec.conversation_id, "object": "conversation.deleted", "deleted": True}
        if suffix == "/items":
            if method == "GET":
                return await self._list(rec, params or {})
            _only(body, ("items",))
            if "items" not in body:
                raise InvalidRequestError(
                    "Missing required parameter: 'items'.", param="items", code="missing_required_parameter"
                )
            added = await self._add(rec, items_of(body["items"]))
            return {
                "object": "list",
                "data": added,
                "first_id": added[0]["id"] if added else None,
                "last_id": added[-1]["id"] if added else None,
                "has_more": False,
            }
        item_id = suffix.removeprefix("/items/")
        if method == "GET":
            return await self._item(rec, item_id)
        await self._delete_item(rec, item_id)
        return conversation_object(rec)

    async def _list(self, rec: ConversationRecord, params: dict[str, str]) -> dict[str, Any]:
        if rec.thread_id is not None:
            return await self.threads.list_items(rec.route, rec.thread_id, params)
        limit = params.get("limit", "20")
        if not limit.isdigit():
            raise InvalidRequestError("Invalid value for 'limit': expected an integer.", param="limit")
        kept = await self.store.load_history(rec.conversation_id)
        return input_items.page(kept, limit=int(limit), order=params.get("order", "desc"), after=params.get("after"))

    async def _add(self, rec: ConversationRecord, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if rec.thread_id is not None:
            return await self.threads.add_items(rec.route, rec.thread_id, items)
        have = await self.store.history_length(rec.conversation_id)
        history.check_bound(have, len(items), self.max_history_items, param="items")
        await self.store.append_history(rec.conversation_id, items, expect=None)
        return items

    async def _item(self, rec: ConversationRecord, item_id: str) -> dict[str, Any]:
        if rec.thread_id is not None:
            return await self.threads.get_item(rec.route, rec.thread_id, item_id)
        for item in await self.store.load_history(rec.conversation_id):
            if item.get("id") == item_id:
                return item
        raise item_not_found(item_id)

    async def _delete_item(self, rec: ConversationRecord, item_id: str) -> None:
        if rec.thread_id is not None:
            await self.threads.delete_item(rec.route, rec.thread_id, item_id)
            return
        kept = await self.store.load_history(rec.conversation_id)
        left = [i for i in kept if i.get("id") != item_id]
        if len(left) == len(kept):
            raise item_not_found(item_id)
        await self.store.replace_history(rec.conversation_id, left)


class HeldLookup(Protocol):
    async def held_conversation(self, conversation_id: str) -> ConversationRecord | None: ...


def conversation_id_of(value: Any, param: str = "conversation") -> str:
    """A turn's `conversation`: an id, or an object with one (as OpenAI takes both)."""
    found = value.get("id") if isinstance(value, dict) else value
    if not isinstance(found, str) or not found:
        raise InvalidRequestError(
            f"Invalid type for '{param}': expected a string or an object with an 'id'.",
            param=param,
            code="invalid_type",
        )
    return found


async def held_for_turn(
    lookup: HeldLookup, settings: Settings, conversation_id: str, *, owner: str, model: str, param: str
) -> ConversationRecord | None:
    """The bridge-held conversation a turn names (None: not one the bridge holds), if it can serve this route:
    a thread on the route it was made on (the registry ties a thread to its route), a kept history on
    any agent-endpoint route."""
    rec = await lookup.held_conversation(conversation_id)
    if rec is None:
        return None
    if rec.owner != owner:
        raise not_found(conversation_id, param)
    here, there = settings.route(model), settings.route(rec.route)
    fits = (
        here is not None
        and there is not None
        and ((rec.kind == "history" and here.backend == "endpoint") or (rec.kind == "thread" and model == rec.route))
    )
    if not fits:
        raise InvalidRequestError(
            f"Conversation '{conversation_id}' was created for the model '{rec.route}' and cannot continue on "
            f"'{model}': use it with that model.",
            param=param,
            code="conversation_route_mismatch",
        )
    return rec
