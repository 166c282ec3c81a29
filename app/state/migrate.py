"""The registry's layout migration: layout 1 (`thread:<id>`, `threads:idle`, `owner:<o>:threads`) to buckets.

Runs at start-up, before the bridge serves, when the old idle index exists (one EXISTS otherwise).
One replica migrates under a lease while the others wait for it to finish. Each thread moves in
ordered, idempotent steps: its new record is written (record, idle entry, owner entry: one
transaction), then its old record and old index entries are removed; a migration cut short is
finished by the next start. Layout 1 only ever ran on a standalone Redis. Conversation, call and
response keys did not change.
"""

from __future__ import annotations

import asyncio
import logging
import time

from app.state.store import RedisStore, _thread_from
from app.state.store_base import translated

log = logging.getLogger("agent_bridge.store")

CHUNK = 500
WAIT_S = 600.0


class Migration(RedisStore):
    @translated
    async def renew(self, lease: str) -> None:
        await self._extend(keys=[self.key("lease", "migrate")], args=[lease, 60_000])

    @translated
    async def pending(self) -> bool:
        return bool(await self.redis.exists(self.keys.v1_idle()))

    @translated
    async def step(self) -> int:
        """Move up to CHUNK threads; returns how many were left in the old index before this step."""
        old_idle = self.keys.v1_idle()
        ids: list[tuple[str, float]] = await self.redis.zrange(old_idle, 0, CHUNK - 1, withscores=True)
        async with self.redis.pipeline(transaction=False) as pipe:
            for thread_id, _ in ids:
                pipe.hgetall(self.keys.v1_thread(thread_id))
            rows = await pipe.execute()
        for (thread_id, _), fields in zip(ids, rows, strict=True):
            record = _thread_from(thread_id, fields)
            if record is not None:
                await self.record_thread(record)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.keys.v1_thread(thread_id))
                pipe.zrem(old_idle, thread_id)
                if record is not None:
                    pipe.srem(self.keys.v1_owner(record.owner), thread_id)
                await pipe.execute()
        return len(ids)


async def migrate(store: RedisStore) -> int:
    """Move a layout-1 registry into buckets; returns the number of threads moved by this process."""
    if store.cluster:
        return 0
    migration = Migration(store.redis, prefix=store.prefix)
    if not await migration.pending():
        return 0
    lease = await store.acquire_lease("migrate", ttl_ms=60_000)
    if lease is None:
        log.info("redis: another replica is migrating the thread registry; waiting for it")
        deadline = time.monotonic() + WAIT_S
        while await migration.pending() and time.monotonic() < deadline:  # noqa: ASYNC110 (another process)
            await asyncio.sleep(0.5)
        return 0
    moved = 0
    try:
        log.warning("redis: migrating the thread registry to the bucketed layout (once)")
        while True:
            count = await migration.step()
            if count == 0:
                break
            moved += count
            await migration.renew(lease)
        log.warning("redis: thread registry migrated (%d threads)", moved)
    finally:
        await store.release_lease("migrate", lease)
    return moved
