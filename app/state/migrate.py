"""The registry's layout migration: layout 1 (`thread:<id>`, `threads:idle`, `owner:<o>:threads`) to buckets.

Runs at start-up, before the bridge serves, when the old idle index exists (one EXISTS otherwise).
One replica migrates under a lease while the others wait for it to finish. Each thread moves in
ordered, idempotent steps: its new record is written (record, idle entry, owner entry: one
transaction), then its old record and old index entries are removed; a migration cut short is
finished by the next start. Layout 1 only ever ran on a standalone Redis. Conversation, call and
response keys did not change.

Layout 1 dropped a thread from `threads:idle` when a janitor claimed it, so one whose janitor died
before deleting it kept its record and owner entry but was in no index; the migration puts each
such thread back first, so it moves with the rest and the janitor now deletes it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from app.state.store import RedisStore, _thread_from
from app.state.store_base import translated

log = logging.getLogger("agent_bridge.store")

CHUNK = 500
WAIT_S = 600.0


_LAYOUT2_OWNER = re.compile(r"owner:\{b\d{3}\}:")


class Migration(RedisStore):
    @translated
    async def renew(self, lease: str) -> None:
        await self._extend(keys=[self.key("lease", "migrate")], args=[lease, 60_000])

    @translated
    async def pending(self) -> bool:
        return bool(await self.redis.exists(self.keys.v1_idle()))

    @translated
    async def requeue_unindexed(self) -> int:
        """Back into the old idle index: every thread of an old owner set that has a record but no
        idle entry (scored by its last use). Returns how many; a second run finds none."""
        old_idle, requeued = self.keys.v1_idle(), 0
        async for key in self.redis.scan_iter(match=self.keys.v1_owner("*"), count=1000):
            if _LAYOUT2_OWNER.match(key[len(self.prefix) :]):
                continue
            ids: list[str] = sorted(await self.redis.smembers(key))
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                scores = await self.redis.zmscore(old_idle, chunk)
                for thread_id, score in zip(chunk, scores, strict=True):
                    if score is not None:
                        continue
                    last_used = await self.redis.hget(self.keys.v1_thread(thread_id), "last_used_at")
                    if last_used is None:
                        await self.redis.srem(key, thread_id)  # an entry without a record: nothing to move
                    else:
                        await self.redis.zadd(old_idle, {thread_id: float(last_used)})
                        requeued += 1
        return requeued

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
        if requeued := await migration.requeue_unindexed():
            log.warning("redis: %d threads claimed by a janitor that never deleted them will be deleted", requeued)
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
