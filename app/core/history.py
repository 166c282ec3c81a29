"""The history the bridge keeps for agent-endpoint routes, whose Responses API is stateless.

An agent's own endpoint refuses conversation context, so every turn sends the whole conversation.
The bridge keeps it as a chain of Responses items in Redis (`history:<id>`): a bridge conversation's
chain is its `conv_` id; a response chain (`previous_response_id`) is a `chain_` id that each of its
responses' records names, with the length the chain had after that response. Continuing from the
latest response of a chain appends to it; continuing from an earlier one (a branch) copies that
prefix into a new chain, so branches never see each other's turns. A chain holds at most
`limits.max_history_items` items before a turn (a turn past it is a 400), plus that turn's output.

What is kept: messages, function calls and their outputs, in the shape the endpoint accepts as input.
Hosted-tool items (MCP, code interpreter, file search) are the agent's own work: they are not replayed.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any, Protocol

from app.errors import InvalidRequestError

REPLAYED = ("message", "function_call", "function_call_output")


class HistoryStore(Protocol):
    async def load_history(self, chain_id: str, length: int | None = None) -> list[dict[str, Any]]: ...

    async def append_history(self, chain_id: str, items: Sequence[dict[str, Any]], *, expect: int | None) -> int: ...

    async def history_length(self, chain_id: str) -> int: ...

    async def replace_history(self, chain_id: str, items: Sequence[dict[str, Any]]) -> None: ...


def new_chain_id() -> str:
    return "chain_" + secrets.token_hex(16)


def item_id(kind: str) -> str:
    return ("msg_" if kind == "message" else "fc_") + secrets.token_hex(16)


def input_items(value: Any, param: str = "input") -> list[dict[str, Any]]:
    """A Responses `input` (a string or a list of items) as items to keep: each a dict with a type and an id."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise InvalidRequestError(
            f"Invalid type for '{param}': expected a string or an array of items.", param=param, code="invalid_type"
        )
    items: list[dict[str, Any]] = []
    for i, raw in enumerate(value):
        if not isinstance(raw, dict):
            raise InvalidRequestError(
                f"Invalid type for '{param}[{i}]': expected an object.", param=f"{param}[{i}]", code="invalid_type"
            )
        item = dict(raw)
        kind = item.setdefault("type", "message" if "role" in item else None)
        if kind not in REPLAYED:
            raise InvalidRequestError(
                f"Invalid value for '{param}[{i}].type': {kind!r}. This route keeps the conversation itself and "
                f"takes {', '.join(repr(k) for k in REPLAYED)} items.",
                param=f"{param}[{i}].type",
            )
        if not isinstance(item.get("id"), str):
            item["id"] = item_id(kind)
        if kind == "message" and isinstance(item.get("content"), str):
            # Kept as OpenAI lists conversation items: text parts, whatever shape the client sent.
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": item["content"]}]
        items.append(item)
    return items


def replayable(output: Any) -> list[dict[str, Any]]:
    """The output items of a Response worth sending again next turn (without their `status`)."""
    if not isinstance(output, list):
        return []
    return [
        {k: v for k, v in item.items() if k != "status"}
        for item in output
        if isinstance(item, dict) and item.get("type") in REPLAYED
    ]


def check_bound(have: int, adding: int, limit: int, *, param: str) -> None:
    """A turn may start while the chain, with its new items, stays within the limit."""
    if have + adding > limit:
        raise InvalidRequestError(
            f"This conversation holds {have} items and this turn adds {adding}: this route keeps at most {limit} "
            "per conversation (limits.max_history_items), because the agent's endpoint is stateless and each turn "
            "sends them all. Start a new conversation.",
            param=param,
            code="conversation_too_long",
        )
