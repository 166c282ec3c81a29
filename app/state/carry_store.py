"""What the store keeps about carrying threads to Foundry v2 conversations: progress, the switch, counts, tool schemas.

Progress lives in the thread's own record (`carry_conv`: the conversation being filled), so a carry that
a killed process left half-done is completed on that conversation, never started again. The switch is
one transaction in the thread's bucket: the `carried:` record (conversation, owner, route; it outlives
the thread record, so cursors written before the carry keep resolving), the thread's `carried_due` (when
the janitor may delete the source) and its idle score moved to that time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.state.store_base import StoreBase, translated

MAX_TOOLS = 128
"""Function tool schemas remembered per route (the first ones seen; names beyond are counted, not kept)."""


@dataclass(frozen=True)
class CarriedRecord:
    thread_id: str
    conversation_id: str
    owner: str
    route: str
    carried_at: float


class CarryStore(StoreBase):
    def __init__(self, base: StoreBase, *, ttl_ms: int) -> None:
        super().__init__(base.redis, prefix=base.prefix, on_error=base.on_error, commands=base.commands)
        self.ttl_ms = ttl_ms
        """How long a `carried:` record lives: as long as any cursor that may still name the thread."""

    @translated
    async def carried(self, thread_id: str) -> CarriedRecord | None:
        raw = await self.redis.get(self.keys.carried(thread_id))
        return None if raw is None else CarriedRecord(thread_id=thread_id, **json.loads(raw))

    @translated
    async def carried_many(self, thread_ids: Sequence[str]) -> list[CarriedRecord | None]:
        raws = await self._mget([self.keys.carried(t) for t in thread_ids])
        pairs = zip(thread_ids, raws, strict=True)
        return [None if r is None else CarriedRecord(thread_id=t, **json.loads(r)) for t, r in pairs]

    @translated
    async def progress(self, thread_id: str) -> str | None:
        """The conversation a carry of this thread began filling (None: none began)."""
        value: str | None = await self.redis.hget(self.keys.thread(thread_id), "carry_conv")
        return value

    @translated
    async def begin(self, thread_id: str, conversation_id: str) -> None:
        await self.redis.hset(self.keys.thread(thread_id), "carry_conv", conversation_id)

    @translated
    async def switch(self, rec: CarriedRecord, *, due: float, idle_score: float, metadata: dict[str, str]) -> None:
        """The one step after verification: every cursor that names the thread now continues on the conversation."""
        body = {"conversation_id": rec.conversation_id, "owner": rec.owner, "route": rec.route}
        body["carried_at"] = rec.carried_at  # type: ignore[assignment]
        thread_key = self.keys.thread(rec.thread_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.carried(rec.thread_id), json.dumps(body, separators=(",", ":")), px=self.ttl_ms)
            pipe.hset(thread_key, mapping={"metadata": json.dumps({**metadata, "carried_due": repr(due)})})
            pipe.zadd(self.keys.idle_of(rec.thread_id), {rec.thread_id: idle_score})
            await pipe.execute()
        await self.redis.hincrby(self.key("carry", rec.route), "carried", 1)

    @translated
    async def count(self, route: str, what: str, n: int = 1) -> None:
        await self.redis.hincrby(self.key("carry", route), what, n)

    @translated
    async def stats(self, route: str) -> dict[str, int]:
        raw: dict[str, str] = await self.redis.hgetall(self.key("carry", route))
        return {k: int(v) for k, v in raw.items()}

    @translated
    async def record_tools(self, route: str, tools: Sequence[dict[str, Any]]) -> None:
        """Remember the schemas of function tools clients sent (first seen wins; at most MAX_TOOLS names)."""
        key = self.key("tools", route)
        if await self.redis.hlen(key) >= MAX_TOOLS:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for tool in tools:
                pipe.hsetnx(key, str(tool.get("name")), json.dumps(tool, separators=(",", ":"), sort_keys=True))
            await pipe.execute()

    @translated
    async def tools(self, route: str) -> dict[str, dict[str, Any]]:
        raw: dict[str, str] = await self.redis.hgetall(self.key("tools", route))
        return {name: json.loads(value) for name, value in sorted(raw.items())}
