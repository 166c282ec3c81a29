"""Foundry v2 Conversations (OpenAI shape): create, retrieve, update, delete, and their items."""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.emulator.foundry_v2_items import normalize_input
from app.emulator.foundry_v2_state import Conversation, FoundryState
from app.emulator.http import EmulatorHTTPError, list_params, new_id, now, page, read_json

MAX_CREATE_ITEMS = 20
"""Items one create and one add may carry: OpenAI's Conversations reference (`items`: "up to 20 items at a
time", for `POST /conversations` and for `POST /conversations/{id}/items`); more is a 400
`array_above_max_length` naming `items`."""


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise EmulatorHTTPError(
            400,
            "Invalid type for 'metadata': expected an object of strings.",
            param="metadata",
            code="invalid_type",
        )
    if len(value) > 16:
        raise EmulatorHTTPError(
            400,
            f"Invalid 'metadata': too many properties. Expected at most 16, got {len(value)}.",
            param="metadata",
            code="object_above_max_size",
        )
    return dict(value)


class ConversationsAPI:
    """Handlers of `/api/projects/{project}/openai/v1/conversations...`."""

    def __init__(self, state: FoundryState) -> None:
        self.state = state

    def _items(self, conv: Conversation | None, value: Any) -> list[dict[str, Any]]:
        own = {i["id"]: i for i in (conv.items if conv else [])}
        if value is not None and not isinstance(value, list):
            raise EmulatorHTTPError(
                400,
                "Invalid type for 'items': expected an array of items.",
                param="items",
                code="invalid_type",
            )
        if isinstance(value, list) and len(value) > MAX_CREATE_ITEMS:
            raise EmulatorHTTPError(
                400,
                f"Invalid 'items': array too long. Expected an array with maximum length {MAX_CREATE_ITEMS}, "
                f"but got an array with length {len(value)} instead.",
                param="items",
                code="array_above_max_length",
            )
        items = normalize_input(value, lambda ref: own.get(ref) or self.state.items.get(ref), param="items")
        return copy.deepcopy(items)

    async def create(self, request: Request) -> Response:
        body = await read_json(request, allowed=("items", "metadata"), optional_body=True)
        conv = Conversation(id=new_id("conv"), created_at=now(), metadata=_metadata(body.get("metadata")))
        conv.items = self._items(None, body.get("items"))
        self.state.conversations[conv.id] = conv
        self.state.index(conv.items)
        return JSONResponse(conv.as_dict())

    async def retrieve(self, request: Request) -> Response:
        return JSONResponse(self.state.conversation(request.path_params["conversation_id"]).as_dict())

    async def update(self, request: Request) -> Response:
        conv = self.state.conversation(request.path_params["conversation_id"])
        body = await read_json(request, allowed=("metadata",), required=("metadata",))
        conv.metadata = _metadata(body["metadata"])
        return JSONResponse(conv.as_dict())

    async def delete(self, request: Request) -> Response:
        conv = self.state.conversation(request.path_params["conversation_id"])
        del self.state.conversations[conv.id]
        return JSONResponse({"id": conv.id, "object": "conversation.deleted", "deleted": True})

    async def add_items(self, request: Request) -> Response:
        conv = self.state.conversation(request.path_params["conversation_id"])
        body = await read_json(request, allowed=("items",), required=("items",))
        items = self._items(conv, body["items"])
        conv.items.extend(items)
        self.state.index(items)
        return JSONResponse(
            {
                "object": "list",
                "data": items,
                "first_id": items[0]["id"] if items else None,
                "last_id": items[-1]["id"] if items else None,
                "has_more": False,
            }
        )

    async def list_items(self, request: Request) -> Response:
        conv = self.state.conversation(request.path_params["conversation_id"])
        return JSONResponse(page(conv.items, **list_params(request)))

    def _item(self, conv: Conversation, item_id: str) -> dict[str, Any]:
        for item in conv.items:
            if item["id"] == item_id:
                return item
        raise EmulatorHTTPError(404, f"Item with id '{item_id}' not found.", param="item_id", code="not_found")

    async def retrieve_item(self, request: Request) -> Response:
        conv = self.state.conversation(request.path_params["conversation_id"])
        return JSONResponse(self._item(conv, request.path_params["item_id"]))

    async def delete_item(self, request: Request) -> Response:
        conv = self.state.conversation(request.path_params["conversation_id"])
        item = self._item(conv, request.path_params["item_id"])
        conv.items.remove(item)
        return JSONResponse(conv.as_dict())
