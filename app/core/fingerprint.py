"""Chained fingerprints of a conversation, insensitive to the harmless differences SDKs introduce."""

from __future__ import annotations

import hashlib
import json

from app.core.turn import Item, Message


def _canonical(item: Item) -> bytes:
    if isinstance(item, Message):
        calls = [[c.id, c.name, c.arguments] for c in item.tool_calls]
        text: str | list[str] = list(item.parts) if item.parts else item.text
        return json.dumps(["m", item.role, text, calls], separators=(",", ":")).encode()
    return json.dumps(["t", item.call_id, item.output], separators=(",", ":")).encode()


def chain(items: tuple[Item, ...] | list[Item]) -> list[str]:
    """`result[i]` identifies the conversation prefix `items[: i + 1]`."""
    out: list[str] = []
    digest = b""
    for item in items:
        digest = hashlib.blake2b(digest + _canonical(item), digest_size=16).digest()
        out.append(digest.hex())
    return out


def extend(previous: str | None, items: tuple[Item, ...] | list[Item]) -> str:
    """The fingerprint of a conversation `previous` followed by `items`."""
    digest = bytes.fromhex(previous) if previous else b""
    for item in items:
        digest = hashlib.blake2b(digest + _canonical(item), digest_size=16).digest()
    return digest.hex()
