"""The registry marker: one key written when the registry is created, whose disappearance is a lost store.

Redis restarted without persistence, a failover to an empty replica, a flush or an evicting policy
all lose data silently: every key is just gone. The marker (`registry`, a hash without TTL) is
written once, when a bridge finds no registry at all, and read at start-up and by every readiness
probe. A process that saw it and then finds it gone, or replaced by another marker that no operator
restored, records the loss *in the store* (`lost_at`, `lost_reason`), so every replica, and every
one started later, reports the same loss until an operator acts:

- `agent-bridge threads reconcile --adopt` (project routes: the threads come back from Azure with
  their owners and routes) rewrites the marker when it adopted every orphan it found;
- `agent-bridge threads accept-loss` rewrites it, for stores whose threads cannot be listed.

A loss that happened while no bridge process ran cannot be told from a new, empty store: the first
process to start writes a fresh marker (docs/security.md says what that means for operators).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass

from app.state.keys import BUCKETS
from app.state.store import RedisStore
from app.state.store_base import translated

_BY = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class MarkerState:
    lost: bool
    lost_at: float | None = None
    reason: str | None = None
    created: bool = False
    """This check wrote the marker (a new registry)."""
    adopted: bool = False
    """This check found threads but no marker (a registry from before markers) and wrote one."""


class RegistryMarker:
    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.key = store.keys.marker()
        self.seen: str | None = None
        """The marker id this process has seen: its disappearance, or a change no operator made, is a loss."""

    @translated
    async def check(self) -> MarkerState:
        """Read the marker, write it if the registry is new, record a loss if it vanished."""
        redis = self.store.redis
        fields: dict[str, str] = await redis.hgetall(self.key)
        if "lost_at" in fields:
            return _lost(fields)
        marker = fields.get("id")
        if marker is not None:
            if self.seen is None or marker == self.seen or "restored_at" in fields:
                self.seen = marker
                return MarkerState(lost=False)
            return await self._record_loss(
                "the registry marker was replaced by another one (the store was emptied and a bridge "
                "started on it, without an operator's restore)"
            )
        if self.seen is not None:
            return await self._record_loss(
                "the registry marker is gone: the store lost its data (a restart without persistence, a "
                "failover to an empty replica, a flush, or eviction)"
            )
        empty = await self._registry_empty()
        await redis.hsetnx(self.key, "id", secrets.token_hex(8))
        await redis.hsetnx(self.key, "created_at", repr(time.time()))
        fields = await redis.hgetall(self.key)
        if "lost_at" in fields:
            return _lost(fields)
        self.seen = fields.get("id")
        return MarkerState(lost=False, created=empty, adopted=not empty)

    async def _record_loss(self, reason: str) -> MarkerState:
        """The first reporter's time and reason stay (HSETNX): every replica reports one loss."""
        redis = self.store.redis
        await redis.hsetnx(self.key, "lost_at", repr(time.time()))
        await redis.hsetnx(self.key, "lost_reason", reason)
        await redis.hsetnx(self.key, "lost_seen_by", _BY)
        return _lost(await redis.hgetall(self.key))

    async def _registry_empty(self) -> bool:
        """No bucket of the idle index exists (read once, when no marker is there)."""
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for bucket in range(BUCKETS):
                pipe.exists(self.store.keys.idle(bucket))
            found = await pipe.execute()
        return not any(found)

    @translated
    async def restore(self, by: str) -> bool:
        """An operator's word that the store is whole again (or its loss accepted): a fresh marker every
        process accepts. Returns whether a loss (or a missing marker) was cleared."""
        redis = self.store.redis
        fields: dict[str, str] = await redis.hgetall(self.key)
        if fields.get("id") and "lost_at" not in fields:
            return False
        marker = secrets.token_hex(8)
        now = repr(time.time())
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.key)
            pipe.hset(self.key, mapping={"id": marker, "created_at": now, "restored_at": now, "restored_by": by})
            await pipe.execute()
        self.seen = marker
        return True


def _lost(fields: dict[str, str]) -> MarkerState:
    return MarkerState(
        lost=True,
        lost_at=float(fields["lost_at"]) if "lost_at" in fields else None,
        reason=fields.get("lost_reason") or "the store lost its data",
    )
