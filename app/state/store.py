"""The Redis store: the thread registry, its idle and owner indexes, locks and leases (key layout: `keys`).

A thread's record, lock, idle entry and owner entry share one hash-tagged bucket, so each turn
opens its thread in one round trip and closes it in one (a script each, in one slot), on a
standalone Redis and on a cluster alike. Conversation, call and response records are single keys
(`lookups`), and so are the conversations the bridge holds (`conversations`). A turn's three commands
take the fast path (`commands`); everything else, redis-py (docs/performance-redis.md says why).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Sequence

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.core.records import CallRecord, ResponseRecord, ThreadRecord
from app.state.commands import Commands, Script
from app.state.conversations import ConversationRecords
from app.state.keys import BUCKETS, bucket_of
from app.state.lookups import TAKE_CONVERSATION, Lookups
from app.state.store_base import translated

__all__ = ["CallRecord", "RedisStore", "ResponseRecord", "ThreadRecord"]

# Delete / extend a key only if it still holds our token (a lock or lease that expired and was
# taken by someone else must not be released by us).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
# The start of a turn in one round trip: the thread's record and, only when it is the caller's
# (ARGV[1]), its lock if free (SET NX PX). {} for an unknown thread or another owner's (no lock taken);
# else {1 if locked else 0, field, value, ...}. KEYS (record, lock) share the thread's hash tag. One
# script, not a pipeline of two: the fast path carries single commands only, so a command that fails
# (a redirect, a dropped connection) has run entirely or not at all.
_OPEN_TURN = """
local fields = redis.call('hgetall', KEYS[1])
local owner
for i = 1, #fields, 2 do
  if fields[i] == 'owner' then owner = fields[i + 1] end
end
if owner == nil or owner ~= ARGV[1] then
  return {}
end
local locked = 0
if redis.call('set', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  locked = 1
end
table.insert(fields, 1, locked)
return fields
"""
# The end of a turn in one round trip: touch the thread (when ARGV[1] is a time, and only while it is
# still registered: the janitor may have forgotten it meanwhile) and free its lock
# (when ARGV[3] is still the lock's token). One script, not a pipeline of two: redis-py sends a
# SCRIPT EXISTS before every pipeline that holds scripts, which would double the round trips.
# KEYS (record, idle bucket, lock) share the thread's hash tag.
_CLOSE_TURN = """
if ARGV[1] ~= '' and redis.call('exists', KEYS[1]) == 1 then
  redis.call('hset', KEYS[1], 'last_used_at', ARGV[1])
  redis.call('hincrby', KEYS[1], 'turns', 1)
  redis.call('zadd', KEYS[2], ARGV[1], ARGV[2])
end
if ARGV[3] ~= '' and redis.call('get', KEYS[3]) == ARGV[3] then
  redis.call('del', KEYS[3])
end
return 1
"""

# The janitor's claim on an expired thread: one claimant wins, and the entry stays in its bucket with a
# score that makes it due again later (removing it would leave a janitor that dies before deleting with
# a thread in no index: recorded, never swept).
_CLAIM_IDLE = """
local score = redis.call('zscore', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  redis.call('zadd', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"""


def _thread_from(thread_id: str, fields: dict[str, str]) -> ThreadRecord | None:
    if not fields:
        return None
    return ThreadRecord(
        thread_id=thread_id,
        route=fields["route"],
        backend=fields["backend"],
        owner=fields["owner"],
        created_at=float(fields["created_at"]),
        last_used_at=float(fields["last_used_at"]),
        turns=int(fields.get("turns", 0)),
        metadata=json.loads(fields.get("metadata") or "{}"),
    )


def _fields(rec: ThreadRecord) -> dict[str, str]:
    return {
        "route": rec.route,
        "backend": rec.backend,
        "owner": rec.owner,
        "created_at": repr(rec.created_at),
        "last_used_at": repr(rec.last_used_at),
        "turns": str(rec.turns),
        "metadata": json.dumps(rec.metadata),
    }


class RedisStore(Lookups, ConversationRecords):
    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        prefix: str = "ab:",
        thread_ttl_s: float = 7 * 86400,
        response_ttl_s: float = 30 * 86400,
        on_error: Callable[[], None] | None = None,
        commands: Commands | None = None,
    ) -> None:
        super().__init__(redis, prefix=prefix, on_error=on_error, commands=commands)
        self.thread_ttl_ms = int(thread_ttl_s * 1000)
        self.response_ttl_ms = int(response_ttl_s * 1000)
        self._release = redis.register_script(_RELEASE)
        self._extend = redis.register_script(_EXTEND)
        self._take_script = redis.register_script(TAKE_CONVERSATION)
        self._claim_idle = redis.register_script(_CLAIM_IDLE)
        # The turn's own two, for the fast path.
        self._open_turn = Script(_OPEN_TURN)
        self._close_script = Script(_CLOSE_TURN)

    @translated
    async def ping(self) -> None:
        await self.redis.ping()

    @translated
    async def probe(self, name: str) -> bool:
        """The readiness check: a write and a read of a seconds-lived key of this process's own."""
        key, token = self.key("probe", name), secrets.token_hex(8)
        await self.redis.set(key, token, px=10_000)
        return bool(await self.redis.get(key) == token)

    # -- the thread registry ---------------------------------------------------------------------

    @translated
    async def record_thread(self, rec: ThreadRecord) -> None:
        """Record, idle entry and owner entry in one transaction (one slot, one round trip)."""
        bucket = bucket_of(rec.thread_id)
        record = self.keys.thread(rec.thread_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(record, mapping=_fields(rec))
            pipe.zadd(self.keys.idle(bucket), {rec.thread_id: rec.last_used_at})
            pipe.sadd(self.keys.owner(bucket, rec.owner), rec.thread_id)
            await pipe.execute()

    @translated
    async def get_thread(self, thread_id: str, owner: str | None = None) -> ThreadRecord | None:
        record = _thread_from(thread_id, await self.redis.hgetall(self.keys.thread(thread_id)))
        if record is None or (owner is not None and record.owner != owner):
            return None
        return record

    @translated
    async def get_threads(self, thread_ids: Sequence[str]) -> list[ThreadRecord | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for thread_id in thread_ids:
                pipe.hgetall(self.keys.thread(thread_id))
            rows = await pipe.execute()
        return [_thread_from(t, row) for t, row in zip(thread_ids, rows, strict=True)]

    @translated
    async def open_thread(self, thread_id: str, owner: str, *, ttl_ms: int) -> tuple[ThreadRecord | None, str | None]:
        """One round trip for the start of a turn: the thread's record and, if free, its lock.

        Returns (record, lock token); the token is None when the thread is busy (then wait with
        `acquire_lock`). An unknown thread, or another owner's, is (None, None) and no lock is taken.
        """
        token = secrets.token_hex(16)
        keys = [self.keys.thread(thread_id), self.keys.lock(thread_id)]
        reply = await self.commands.script(self._open_turn, keys, [owner, token, ttl_ms])
        if not reply:
            return None, None
        locked, *flat = reply
        record = _thread_from(thread_id, dict(zip(flat[::2], flat[1::2], strict=True)))
        return record, token if locked else None

    @translated
    async def close_turn(self, thread_id: str, token: str | None, *, now: float | None) -> None:
        """One round trip for the end of a turn: mark the thread used (if `now`) and free its lock."""
        if now is None and token is None:
            return
        keys = [self.keys.thread(thread_id), self.keys.idle_of(thread_id), self.keys.lock(thread_id)]
        await self.commands.script(self._close_script, keys, ["" if now is None else repr(now), thread_id, token or ""])

    @translated
    async def forget_thread(self, thread_id: str) -> None:
        """Only after Azure confirmed the deletion (or answered 404)."""
        bucket = bucket_of(thread_id)
        record_key = self.keys.thread(thread_id)
        owner = await self.redis.hget(record_key, "owner")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(record_key)
            pipe.zrem(self.keys.idle(bucket), thread_id)
            if owner is not None:
                pipe.srem(self.keys.owner(bucket, owner), thread_id)
            await pipe.execute()

    # -- the idle index (the janitor's work list) -------------------------------------------------

    @translated
    async def bucket_backlog(self, *, before: float) -> list[tuple[int, int]]:
        """Per bucket: (threads, threads last used before `before`), in one pipeline (per node)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for bucket in range(BUCKETS):
                pipe.zcard(self.keys.idle(bucket))
                pipe.zcount(self.keys.idle(bucket), "-inf", before)
            counts = await pipe.execute()
        return [(int(counts[2 * b]), int(counts[2 * b + 1])) for b in range(BUCKETS)]

    @translated
    async def idle_threads(self, bucket: int, *, before: float, limit: int) -> list[str]:
        """A bucket's threads last used before `before`, most idle first (reads only the expired end)."""
        ids: list[str] = await self.redis.zrangebyscore(self.keys.idle(bucket), "-inf", before, start=0, num=limit)
        return ids

    @translated
    async def claim_idle(self, thread_id: str, *, expired_by: float, due_again: float) -> bool:
        """Take a thread scored at or before `expired_by` for deletion; only one claimant gets True.

        The claim re-scores it to `due_again` (later than `expired_by`, so no one else takes it now):
        should the claimant die before it deletes or re-scores the thread, the thread comes due again
        instead of vanishing from the work list."""
        args = [thread_id, repr(expired_by), repr(due_again)]
        return bool(await self._claim_idle(keys=[self.keys.idle_of(thread_id)], args=args))

    @translated
    async def drop_idle(self, thread_id: str) -> None:
        """Remove a work-list entry whose record is gone."""
        await self.redis.zrem(self.keys.idle_of(thread_id), thread_id)

    @translated
    async def requeue_idle(self, thread_id: str, score: float) -> None:
        await self.redis.zadd(self.keys.idle_of(thread_id), {thread_id: score})

    @translated
    async def parked_threads(self, *, above: float) -> list[str]:
        """Threads scored above `above` in every bucket (the janitor parks what it cannot delete there)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for bucket in range(BUCKETS):
                pipe.zrangebyscore(self.keys.idle(bucket), above, "+inf")
            return [thread_id for ids in await pipe.execute() for thread_id in ids]

    @translated
    async def count_threads(self) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for bucket in range(BUCKETS):
                pipe.zcard(self.keys.idle(bucket))
            return sum(int(n) for n in await pipe.execute())

    # -- listing (the admin view) ----------------------------------------------------------------

    @translated
    async def scan_bucket(
        self, bucket: int, position: int, *, count: int, owner: str | None = None
    ) -> tuple[list[str], int]:
        """One SCAN step over a bucket's idle index (or, with `owner`, the owner's index in that bucket,
        so an owner's threads are found wherever they sit in the idle order); returns (ids, next
        position), 0 when the bucket is done."""
        if owner is None:
            nxt, found = await self.redis.zscan(self.keys.idle(bucket), position, count=count)
            return [member for member, _score in found], int(nxt)
        nxt, members = await self.redis.sscan(self.keys.owner(bucket, owner), position, count=count)
        return list(members), int(nxt)

    async def threads_of(self, owner: str) -> list[str]:
        ids: set[str] = set()
        for bucket in range(BUCKETS):
            position = None
            while position != 0:
                found, position = await self.scan_bucket(bucket, position or 0, count=500, owner=owner)
                ids.update(found)
        return sorted(ids)

    # -- locks and leases ------------------------------------------------------------------------

    async def acquire_lock(self, thread_id: str, *, ttl_ms: int, wait_s: float) -> str | None:
        """One turn at a time per thread: SET NX PX, retried with short growing sleeps up to `wait_s`."""
        return await self._acquire(self.keys.lock(thread_id), ttl_ms=ttl_ms, wait_s=wait_s)

    async def release_lock(self, thread_id: str, token: str) -> bool:
        return await self._release_key(self.keys.lock(thread_id), token)

    @translated
    async def extend_lock(self, thread_id: str, token: str, ttl_ms: int) -> bool:
        return bool(await self._extend(keys=[self.keys.lock(thread_id)], args=[token, ttl_ms]))

    async def acquire_lease(self, name: str, *, ttl_ms: int) -> str | None:
        return await self._acquire(self.key("lease", name), ttl_ms=ttl_ms, wait_s=0)

    async def release_lease(self, name: str, token: str) -> bool:
        return await self._release_key(self.key("lease", name), token)

    async def acquire_bucket_lease(self, bucket: int, *, ttl_ms: int) -> str | None:
        """The right to sweep one bucket now: replicas sweep disjoint buckets in parallel."""
        return await self._acquire(self.keys.janitor_lease(bucket), ttl_ms=ttl_ms, wait_s=0)

    async def release_bucket_lease(self, bucket: int, token: str) -> bool:
        return await self._release_key(self.keys.janitor_lease(bucket), token)

    async def _acquire(self, key: str, *, ttl_ms: int, wait_s: float) -> str | None:
        token = secrets.token_hex(16)
        deadline = time.monotonic() + wait_s
        delay = 0.005
        while True:
            if await self._set_nx(key, token, ttl_ms):
                return token
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(delay, remaining))  # the last try falls on the deadline itself
            delay = min(delay * 2, 0.1)

    @translated
    async def _set_nx(self, key: str, token: str, ttl_ms: int) -> bool:
        return bool(await self.redis.set(key, token, nx=True, px=ttl_ms))

    @translated
    async def _release_key(self, key: str, token: str) -> bool:
        return bool(await self._release(keys=[key], args=[token]))

    # -- raw access for the admin view and tests ---------------------------------------------------

    async def exists(self, *parts: str) -> bool:
        return bool(await self._exists(self.key(*parts)))

    @translated
    async def _exists(self, key: str) -> int:
        return int(await self.redis.exists(key))
