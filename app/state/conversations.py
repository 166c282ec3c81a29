"""Conversations the bridge holds (`conversation:<id>`), the histories it keeps (`history:<id>`), and
which agent-endpoint response each kept output item came from (`item:<id>`).

Each is one key, so every command is single-slot. A conversation record and its history are two keys
(two slots on a cluster): they are written and deleted in an order that leaves at worst an orphan
history, which expires with its TTL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from app.core.records import ConversationRecord
from app.state.commands import Script, pairs
from app.state.store_base import StoreBase, translated

# Append to a history only if it still has the length the turn read (ARGV[2]; -1: any length): a
# response chain continued twice from one response forks instead of interleaving (`app.core.history`).
_APPEND = Script(
    """
local n = redis.call('LLEN', KEYS[1])
if tonumber(ARGV[2]) >= 0 and n ~= tonumber(ARGV[2]) then return -1 end
for i = 3, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n + #ARGV - 2
"""
)


def _compact(item: dict[str, Any]) -> str:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False)


class ConversationRecords(StoreBase):
    thread_ttl_ms: int
    response_ttl_ms: int

    # -- conversation records --------------------------------------------------------------------

    @translated
    async def save_held_conversation(self, rec: ConversationRecord) -> None:
        key = self.keys.conversation(rec.conversation_id)
        fields = {
            "owner": rec.owner,
            "route": rec.route,
            "kind": rec.kind,
            "created_at": repr(rec.created_at),
            "thread_id": rec.thread_id or "",
            "metadata": _compact(rec.metadata),
        }
        flat = [part for pair in fields.items() for part in pair]
        await self._pipelined([("HSET", key, *flat), ("PEXPIRE", key, self.thread_ttl_ms)], transaction=True)

    @translated
    async def held_conversation(self, conversation_id: str) -> ConversationRecord | None:
        """The record, whoever owns it (the caller checks the owner); reading it renews its TTL."""
        key = self.keys.conversation(conversation_id)
        reply, _ = await self._pipelined([("HGETALL", key), ("PEXPIRE", key, self.thread_ttl_ms)], transaction=True)
        fields = pairs(reply)
        if not fields:
            return None
        return ConversationRecord(
            conversation_id=conversation_id,
            owner=fields["owner"],
            route=fields["route"],
            kind=fields["kind"],
            created_at=float(fields["created_at"]),
            thread_id=fields.get("thread_id") or None,
            metadata=json.loads(fields.get("metadata") or "{}"),
        )

    @translated
    async def set_held_metadata(self, conversation_id: str, metadata: dict[str, str]) -> None:
        key = self.keys.conversation(conversation_id)
        await self.commands.call(("HSET", key, "metadata", _compact(metadata)), key=key)

    @translated
    async def forget_held_conversation(self, conversation_id: str) -> None:
        """The record first: a history left behind by a failure after it is unreachable and expires."""
        key = self.keys.conversation(conversation_id)
        await self.commands.call(("DEL", key), key=key)
        history = self.keys.history(conversation_id)
        await self.commands.call(("DEL", history), key=history)

    # -- histories -------------------------------------------------------------------------------

    @translated
    async def load_history(self, chain_id: str, length: int | None = None) -> list[dict[str, Any]]:
        """The chain's items (its first `length` when given)."""
        key = self.keys.history(chain_id)
        end = -1 if length is None else length - 1
        if end < -1:
            return []
        raw: list[str] = await self.commands.call(("LRANGE", key, 0, end), key=key)
        return [json.loads(r) for r in raw]

    @translated
    async def append_history(self, chain_id: str, items: Sequence[dict[str, Any]], *, expect: int | None) -> int:
        """Append; the new length, or -1 when `expect` is given and the chain is no longer that long."""
        key = self.keys.history(chain_id)
        args: list[str | int] = [self.thread_ttl_ms, -1 if expect is None else expect]
        args += [_compact(i) for i in items]
        if len(args) == 2:
            return await self.history_length(chain_id)
        return int(await self.commands.script(_APPEND, [key], args))

    @translated
    async def history_length(self, chain_id: str) -> int:
        key = self.keys.history(chain_id)
        return int(await self.commands.call(("LLEN", key), key=key))

    @translated
    async def replace_history(self, chain_id: str, items: Sequence[dict[str, Any]]) -> None:
        key = self.keys.history(chain_id)
        commands: list[tuple[Any, ...]] = [("DEL", key)]
        if items:
            commands += [("RPUSH", key, *[_compact(i) for i in items]), ("PEXPIRE", key, self.thread_ttl_ms)]
        await self._pipelined(commands, transaction=True)

    # -- output items of agent-endpoint responses ------------------------------------------------

    @translated
    async def point_items(self, item_ids: Sequence[str], response_id: str) -> None:
        """Each item id -> the response it came from (one key each: any slot)."""
        if not item_ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:  # per node on a cluster
            for item_id in item_ids:
                pipe.set(self.keys.item(item_id), response_id, px=self.response_ttl_ms)
            await pipe.execute()

    @translated
    async def item_responses(self, item_ids: Sequence[str]) -> list[str | None]:
        return await self._mget([self.keys.item(i) for i in item_ids])
