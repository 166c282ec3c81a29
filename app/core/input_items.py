"""`GET /v1/responses/{id}/input_items` on Assistants routes: a turn's input kept small, listed as OpenAI does.

A response record keeps the request's input as compact tuples (`compact`), at most `MAX_KEPT` of
the last items; listing renders them as OpenAI's items (`ResponseItemList`), with ids derived from
the response id so that pages (`after`) are stable, newest first unless `order=asc`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.core.turn import Item, Message, ToolResult
from app.errors import InvalidRequestError

MAX_KEPT = 100


def compact(items: Iterable[Item]) -> list[list[Any]]:
    """The items as JSON-ready tuples: ["u"|"a", text, [[call_id, name, arguments], ...]] or ["t", call_id, output]."""
    out: list[list[Any]] = []
    for item in items:
        if isinstance(item, Message):
            out.append([item.role[0], item.text, [[c.id, c.name, c.arguments] for c in item.tool_calls]])
        elif isinstance(item, ToolResult):
            out.append(["t", item.call_id, item.output])
    return out[-MAX_KEPT:]


def render(response_id: str, kept: list[list[Any]]) -> list[dict[str, Any]]:
    """The kept input as OpenAI items (input message, output message, function_call, function_call_output)."""
    suffix = response_id.removeprefix("resp_")
    items: list[dict[str, Any]] = []

    def next_id(prefix: str) -> str:
        return f"{prefix}_{suffix}{len(items):03d}"

    for entry in kept:
        kind = entry[0]
        if kind == "u":
            items.append(
                {
                    "id": next_id("msg"),
                    "type": "message",
                    "role": "user",
                    "status": "completed",
                    "content": [{"type": "input_text", "text": entry[1]}],
                }
            )
        elif kind == "a":
            if entry[1] or not entry[2]:
                items.append(
                    {
                        "id": next_id("msg"),
                        "type": "message",
                        "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": entry[1], "annotations": []}],
                    }
                )
            for call_id, name, arguments in entry[2]:
                items.append(
                    {
                        "id": next_id("fc"),
                        "type": "function_call",
                        "status": "completed",
                        "call_id": call_id,
                        "name": name,
                        "arguments": arguments,
                    }
                )
        elif kind == "t":
            items.append(
                {
                    "id": next_id("fco"),
                    "type": "function_call_output",
                    "status": "completed",
                    "call_id": entry[1],
                    "output": entry[2],
                }
            )
    return items


def page(
    items: list[dict[str, Any]], *, limit: int = 20, order: str = "desc", after: str | None = None
) -> dict[str, Any]:
    """One page of a list, as OpenAI's list endpoints answer (`after` is the last id of the previous page)."""
    if order not in ("asc", "desc"):
        raise InvalidRequestError(f"Invalid value for 'order': {order!r}; expected 'asc' or 'desc'.", param="order")
    if not 1 <= limit <= 100:
        raise InvalidRequestError("Invalid value for 'limit': expected 1 to 100.", param="limit")
    ordered = items if order == "asc" else list(reversed(items))
    if after is not None:
        ids = [i.get("id") for i in ordered]
        if after not in ids:
            raise InvalidRequestError(f"No item with id '{after}' in this list.", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > limit,
    }
