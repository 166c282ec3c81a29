"""Stateless chat clients on stateful upstream conversations: find what Azure already has.

A chat client resends its whole history every turn. After each turn the fingerprint of the history
*including the reply as the client will echo it* is stored against the upstream cursor (thread id or
last response id). The next request's longest stored prefix tells where to continue and which items
are new. With `X-Conversation-Id`, the client names the conversation instead and may send only its
newest messages.

Branches. An Assistants thread only grows, so a stored prefix is worth continuing only while it is
the thread's current end. Such a cursor is *claimed*: the lookup removes the prefix it found, and
the turn stores the thread's new end when it completes. A history that diverges from every current
end (an edited or regenerated message, a second branch of one prefix, a retry of a turn that
failed after its claim) therefore starts a new thread seeded with the client's whole history, and
two branches never share a thread. A Foundry response id never moves (a response can be continued
from any number of times), so it is looked up without a claim and branches fork natively.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.core import fingerprint
from app.core.turn import Item, Message


class ConversationIndex(Protocol):
    """Where fingerprints and conversation ids map to upstream cursors (the Redis store)."""

    async def find_conversation(self, owner: str, route: str, fingerprints: Sequence[str]) -> tuple[int, str] | None:
        """The longest remembered prefix among `fingerprints`: (its position, its cursor)."""
        ...

    async def take_conversation(self, owner: str, route: str, fingerprints: Sequence[str]) -> tuple[int, str] | None:
        """As `find_conversation`, and the prefix found is removed in the same atomic step."""
        ...

    async def save_conversation(self, owner: str, route: str, fingerprint: str, value: str) -> None: ...

    async def conversation_by_id(self, owner: str, route: str, conversation_id: str) -> str | None:
        """The cursor of a named conversation; finding it renews its TTL."""
        ...

    async def bind_conversation_id(self, owner: str, route: str, conversation_id: str, value: str) -> None: ...


@dataclass(frozen=True)
class Resolution:
    cursor: str | None
    new_items: tuple[Item, ...]
    prefix_fingerprint: str | None
    """Fingerprint of the items the cursor already holds (None when unknown or new)."""


def after_last_assistant(items: tuple[Item, ...]) -> tuple[Item, ...]:
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if isinstance(item, Message) and item.role == "assistant":
            return items[index + 1 :]
    return items


async def resolve(
    index: ConversationIndex,
    *,
    owner: str,
    route: str,
    items: tuple[Item, ...],
    conversation_id: str | None,
    claim: bool = True,
    instructions: str | None = None,
) -> Resolution:
    """Where the conversation continues. `claim`: the cursor is a thread, whose end is taken (see the
    module docstring); False for cursors that never move (Foundry response ids)."""
    if conversation_id is not None:
        cursor = await index.conversation_by_id(owner, route, conversation_id)
        if cursor is None:
            return Resolution(cursor=None, new_items=items, prefix_fingerprint=None)
        return Resolution(cursor=cursor, new_items=after_last_assistant(items), prefix_fingerprint=None)
    prints = fingerprint.chain(items, instructions)
    # Only prefixes that end with an assistant message can have been stored.
    candidates = [i for i, item in enumerate(items) if isinstance(item, Message) and item.role == "assistant"]
    if not candidates:
        return Resolution(cursor=None, new_items=items, prefix_fingerprint=None)
    lookup = index.take_conversation if claim else index.find_conversation
    hit = await lookup(owner, route, [prints[i] for i in candidates])
    if hit is None:
        return Resolution(cursor=None, new_items=items, prefix_fingerprint=None)
    position, cursor = hit
    end = candidates[position]
    return Resolution(cursor=cursor, new_items=items[end + 1 :], prefix_fingerprint=prints[end])


async def remember(
    index: ConversationIndex,
    *,
    owner: str,
    route: str,
    items: tuple[Item, ...],
    reply: Message,
    cursor: str,
    conversation_id: str | None,
    previous_cursor: str | None = None,
    instructions: str | None = None,
) -> None:
    """Store where this conversation continues, keyed by what the client will send next time.

    A named conversation that continued on the cursor it was found at needs no write: finding it
    renewed its TTL (`conversation_by_id`).
    """
    if conversation_id is not None:
        if cursor != previous_cursor:
            await index.bind_conversation_id(owner, route, conversation_id, cursor)
        return
    await index.save_conversation(owner, route, fingerprint.extend(None, (*items, reply), instructions), cursor)
