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


def _start(instructions: str | None) -> bytes:
    """Where a chain begins: the system and developer text, so two end users with the same visible
    history under different system prompts (one key, two personas or tenants) never share a thread
    and its hidden tool outputs. No instructions: the empty start, as before they counted."""
    if not instructions:
        return b""
    return hashlib.blake2b(json.dumps(["i", instructions]).encode(), digest_size=16).digest()


def chain(items: tuple[Item, ...] | list[Item], instructions: str | None = None) -> list[str]:
    """`result[i]` identifies the conversation prefix `items[: i + 1]` under `instructions`."""
    out: list[str] = []
    digest = _start(instructions)
    for item in items:
        digest = hashlib.blake2b(digest + _canonical(item), digest_size=16).digest()
        out.append(digest.hex())
    return out


def extend(previous: str | None, items: tuple[Item, ...] | list[Item], instructions: str | None = None) -> str:
    """The fingerprint of a conversation `previous` (None: a new one under `instructions`) followed by `items`."""
    digest = bytes.fromhex(previous) if previous else _start(instructions)
    for item in items:
        digest = hashlib.blake2b(digest + _canonical(item), digest_size=16).digest()
    return digest.hex()
