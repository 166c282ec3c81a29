"""Ownership records: whose each response, conversation, item and file id is, read and renewed in one round trip.

`owned:conversation:<id>` and `owned:item:<id>` hold an owner; `resp:<id>` and `file:<id>` are JSON
records with an `owner` and a `route`. Every read that finds one renews it (GETEX), so a record lives
as long as its object is in use; deleting the object deletes the record. A read of an id with no
record writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from app.core.ownership import Kind, Owned
from app.state.store_base import StoreBase, translated

_PARTS: dict[Kind, tuple[str, ...]] = {
    "response": ("resp",),
    "conversation": ("owned", "conversation"),
    "item": ("owned", "item"),
    "file": ("file",),
}


def _owned(kind: Kind, raw: str | None) -> Owned | None:
    if raw is None:
        return None
    if kind in ("response", "file"):
        data = json.loads(raw)
        return Owned(owner=str(data["owner"]), route=data.get("route"))
    return Owned(owner=raw)


class Ownership(StoreBase):
    response_ttl_ms: int

    def owned_key(self, kind: Kind, object_id: str) -> str:
        return self.key(*_PARTS[kind], object_id)

    async def _renewed(self, keys: Sequence[str]) -> list[str | None]:
        """GETEX of each key with the response TTL: one pipeline (one round trip; one per node, in
        parallel, on a cluster, where the keys sit in different slots)."""
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.getex(key, px=self.response_ttl_ms)
            values: list[str | None] = await pipe.execute()
        return values

    @translated
    async def owners(self, refs: Sequence[tuple[Kind, str]]) -> list[Owned | None]:
        raws = await self._renewed([self.owned_key(kind, object_id) for kind, object_id in refs])
        return [_owned(kind, raw) for (kind, _), raw in zip(refs, raws, strict=True)]

    @translated
    async def record_conversation(self, conversation_id: str, owner: str) -> bool:
        """A conversation the bridge created (or an admin adopted) for `owner`; False if another owns it."""
        key = self.owned_key("conversation", conversation_id)
        if await self.redis.set(key, owner, nx=True, px=self.response_ttl_ms):
            return True
        return bool(await self.redis.get(key) == owner)

    @translated
    async def forget(self, kind: Kind, object_id: str) -> None:
        """The object is gone upstream: its ownership record goes with it."""
        await self.redis.delete(self.owned_key(kind, object_id))
