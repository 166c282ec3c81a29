"""The Redis store: every key the bridge writes, in one module.

Keys (after the prefix, default `ab:`):

- `thread:{id}` (hash): route, backend, owner, created_at, last_used_at, turns, metadata (JSON);
  until Azure confirmed the thread's deletion.
- `threads:idle` (zset): thread ids scored by last use, the janitor's work list.
- `owner:{owner}:threads` (set): an owner's thread ids.
- `conv:{owner}:{route}:{fingerprint}` (string): the thread id or last response id of a conversation
  prefix; `conv:{owner}:{route}:id:{conversation}` the same for an `X-Conversation-Id`; thread TTL.
- `call:{call_id}` (string): a CallRecord (JSON), until its run expires.
- `resp:{id}` (string): a ResponseRecord (JSON), response TTL.
- `lock:thread:{id}` (string): the token of the turn holding the thread (SET NX PX).
- `lease:{name}` (string): the token of the replica running a janitor sweep.
- `owned:conversation:{id}` (string): the owner of a Foundry conversation id used through the bridge.
- `file:{id}` (string): a FileRecord (JSON): the route and owner of a file a turn produced; thread TTL.

Every Redis failure leaves this module as `StoreUnavailableError` (503).
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict
from typing import Any, ParamSpec, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.core.records import CallRecord, FileRecord, ResponseRecord, ThreadRecord
from app.errors import StoreUnavailableError

__all__ = ["CallRecord", "RedisStore", "ResponseRecord", "ThreadRecord"]

P = ParamSpec("P")
T = TypeVar("T")

# Delete / extend a key only if it still holds our token (a lock or lease that expired and was
# taken by someone else must not be released by us).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
# The end of a turn in one round trip: touch the thread (when ARGV[1] is a time, and only while it is
# still registered: the janitor may have forgotten it meanwhile) and free its lock
# (when ARGV[3] is still the lock's token). One script, not a pipeline of two: redis-py sends a
# SCRIPT EXISTS before every pipeline that holds scripts, which would double the round trips.
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


def _translated(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (RedisError, OSError, TimeoutError) as exc:
            store = args[0]
            if isinstance(store, RedisStore) and store.on_error is not None:
                store.on_error()
            raise StoreUnavailableError(f"The state store is unavailable: {type(exc).__name__}: {exc}") from exc

    return wrapper


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


def _call_from(raw: str | None) -> CallRecord | None:
    if raw is None:
        return None
    data = json.loads(raw)
    data["sibling_ids"] = tuple(data["sibling_ids"])
    return CallRecord(**data)


class RedisStore:
    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "ab:",
        thread_ttl_s: float = 7 * 86400,
        response_ttl_s: float = 30 * 86400,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.on_error = on_error
        # With decode_responses=True every reply is a str, which redis-py's stubs cannot express.
        self.redis: Any = redis
        self.prefix = prefix
        self.thread_ttl_ms = int(thread_ttl_s * 1000)
        self.response_ttl_ms = int(response_ttl_s * 1000)
        self._release = redis.register_script(_RELEASE)
        self._extend = redis.register_script(_EXTEND)
        self._close_turn = redis.register_script(_CLOSE_TURN)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @_translated
    async def ping(self) -> None:
        await self.redis.ping()

    # -- the thread registry ---------------------------------------------------------------------

    @_translated
    async def record_thread(self, rec: ThreadRecord) -> None:
        fields = {
            "route": rec.route,
            "backend": rec.backend,
            "owner": rec.owner,
            "created_at": repr(rec.created_at),
            "last_used_at": repr(rec.last_used_at),
            "turns": str(rec.turns),
            "metadata": json.dumps(rec.metadata),
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key("thread", rec.thread_id), mapping=fields)
            pipe.zadd(self.key("threads", "idle"), {rec.thread_id: rec.last_used_at})
            pipe.sadd(self.key("owner", rec.owner, "threads"), rec.thread_id)
            await pipe.execute()

    @_translated
    async def get_thread(self, thread_id: str, owner: str | None = None) -> ThreadRecord | None:
        record = _thread_from(thread_id, await self.redis.hgetall(self.key("thread", thread_id)))
        if record is None or (owner is not None and record.owner != owner):
            return None
        return record

    @_translated
    async def get_threads(self, thread_ids: Sequence[str]) -> list[ThreadRecord | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for thread_id in thread_ids:
                pipe.hgetall(self.key("thread", thread_id))
            rows = await pipe.execute()
        return [_thread_from(t, row) for t, row in zip(thread_ids, rows, strict=True)]

    @_translated
    async def open_thread(self, thread_id: str, owner: str, *, ttl_ms: int) -> tuple[ThreadRecord | None, str | None]:
        """One round trip for the start of a turn: the thread's record and, if free, its lock.

        Returns (record, lock token); the token is None when the thread is busy (then wait with
        `acquire_lock`) or unknown (the lock taken for an unknown thread is given back).
        """
        token = secrets.token_hex(16)
        lock_key = self.key("lock", "thread", thread_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.key("thread", thread_id))
            pipe.set(lock_key, token, nx=True, px=ttl_ms)
            fields, locked = await pipe.execute()
        record = _thread_from(thread_id, fields)
        if record is None or record.owner != owner:
            if locked:
                await self._release(keys=[lock_key], args=[token])
            return None, None
        return record, token if locked else None

    @_translated
    async def close_turn(self, thread_id: str, token: str | None, *, now: float | None) -> None:
        """One round trip for the end of a turn: mark the thread used (if `now`) and free its lock."""
        if now is None and token is None:
            return
        keys = [self.key("thread", thread_id), self.key("threads", "idle"), self.key("lock", "thread", thread_id)]
        await self._close_turn(keys=keys, args=["" if now is None else repr(now), thread_id, token or ""])

    @_translated
    async def forget_thread(self, thread_id: str) -> None:
        """Only after Azure confirmed the deletion (or answered 404)."""
        record_key = self.key("thread", thread_id)
        owner = await self.redis.hget(record_key, "owner")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(record_key)
            pipe.zrem(self.key("threads", "idle"), thread_id)
            if owner is not None:
                pipe.srem(self.key("owner", owner, "threads"), thread_id)
            await pipe.execute()

    @_translated
    async def idle_threads(self, *, before: float, limit: int) -> list[str]:
        """Threads last used before `before`, most idle first (reads only the expired end)."""
        ids: list[str] = await self.redis.zrangebyscore(self.key("threads", "idle"), "-inf", before, start=0, num=limit)
        return ids

    @_translated
    async def claim_idle(self, thread_id: str) -> bool:
        """Take a thread off the work list; only one claimant gets True."""
        return bool(await self.redis.zrem(self.key("threads", "idle"), thread_id))

    @_translated
    async def requeue_idle(self, thread_id: str, score: float) -> None:
        await self.redis.zadd(self.key("threads", "idle"), {thread_id: score})

    @_translated
    async def scan_threads(self, *, after: str | None, limit: int, owner: str | None = None) -> list[str]:
        """Registered thread ids in janitor order (most idle first), after the id `after`."""
        zkey = self.key("threads", "idle")
        start = 0
        if after is not None:
            rank = await self.redis.zrank(zkey, after)
            start = 0 if rank is None else rank + 1
        ids: list[str] = await self.redis.zrange(zkey, start, start + limit - 1)
        if owner is not None:
            members = await self.redis.smismember(self.key("owner", owner, "threads"), ids) if ids else []
            ids = [i for i, member in zip(ids, members, strict=True) if member]
        return ids

    @_translated
    async def count_threads(self) -> int:
        return int(await self.redis.zcard(self.key("threads", "idle")))

    @_translated
    async def threads_of(self, owner: str) -> list[str]:
        members: set[str] = await self.redis.smembers(self.key("owner", owner, "threads"))
        return sorted(members)

    # -- conversations ---------------------------------------------------------------------------

    @_translated
    async def save_conversation(self, owner: str, route: str, fingerprint: str, value: str) -> None:
        await self.redis.set(self.key("conv", owner, route, fingerprint), value, px=self.thread_ttl_ms)

    @_translated
    async def find_conversation(self, owner: str, route: str, fingerprints: Sequence[str]) -> tuple[int, str] | None:
        """One MGET; the longest remembered prefix wins."""
        if not fingerprints:
            return None
        values = await self.redis.mget([self.key("conv", owner, route, fp) for fp in fingerprints])
        for index in range(len(values) - 1, -1, -1):
            if values[index] is not None:
                return index, str(values[index])
        return None

    @_translated
    async def bind_conversation_id(self, owner: str, route: str, conversation_id: str, value: str) -> None:
        await self.redis.set(self.key("conv", owner, route, "id", conversation_id), value, px=self.thread_ttl_ms)

    @_translated
    async def conversation_by_id(self, owner: str, route: str, conversation_id: str) -> str | None:
        """The conversation's cursor; reading it renews its TTL (so a follow-up need not write it again)."""
        key = self.key("conv", owner, route, "id", conversation_id)
        value: str | None = await self.redis.getex(key, px=self.thread_ttl_ms)
        return value

    @_translated
    async def claim_conversation(self, conversation_id: str, owner: str) -> bool:
        """A Foundry conversation id belongs to the first owner that uses it through the bridge."""
        key = self.key("owned", "conversation", conversation_id)
        await self.redis.set(key, owner, nx=True, px=self.response_ttl_ms)
        return bool(await self.redis.get(key) == owner)

    # -- tool calls ------------------------------------------------------------------------------

    @_translated
    async def save_calls(self, records: Sequence[CallRecord], ttl_s: float) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for record in records:
                pipe.set(self.key("call", record.call_id), json.dumps(asdict(record)), px=int(ttl_s * 1000))
            await pipe.execute()

    @_translated
    async def get_calls(self, call_ids: Sequence[str], owner: str) -> list[CallRecord | None]:
        raw = await self.redis.mget([self.key("call", c) for c in call_ids]) if call_ids else []
        records = [_call_from(r) for r in raw]
        return [r if r is not None and r.owner == owner else None for r in records]

    async def get_call(self, call_id: str, owner: str) -> CallRecord | None:
        return (await self.get_calls([call_id], owner))[0]

    @_translated
    async def delete_calls(self, call_ids: Sequence[str]) -> None:
        if call_ids:
            await self.redis.delete(*[self.key("call", c) for c in call_ids])

    # -- responses -------------------------------------------------------------------------------

    @_translated
    async def save_response(self, rec: ResponseRecord) -> None:
        await self.redis.set(self.key("resp", rec.response_id), json.dumps(asdict(rec)), px=self.response_ttl_ms)

    @_translated
    async def get_response(self, response_id: str, owner: str) -> ResponseRecord | None:
        raw = await self.redis.get(self.key("resp", response_id))
        if raw is None:
            return None
        record = ResponseRecord(**json.loads(raw))
        return record if record.owner == owner else None

    @_translated
    async def delete_response(self, response_id: str) -> None:
        await self.redis.delete(self.key("resp", response_id))

    # -- files -----------------------------------------------------------------------------------

    @_translated
    async def save_files(self, records: Sequence[FileRecord]) -> None:
        """First owner wins: a file id another owner's turn recorded is never taken over (SET NX)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for record in records:
                pipe.set(self.key("file", record.file_id), json.dumps(asdict(record)), px=self.thread_ttl_ms, nx=True)
            await pipe.execute()

    @_translated
    async def get_file(self, file_id: str, owner: str) -> FileRecord | None:
        raw = await self.redis.get(self.key("file", file_id))
        if raw is None:
            return None
        record = FileRecord(**json.loads(raw))
        return record if record.owner == owner else None

    # -- locks and leases ------------------------------------------------------------------------

    async def acquire_lock(self, thread_id: str, *, ttl_ms: int, wait_s: float) -> str | None:
        """One turn at a time per thread: SET NX PX, retried with short growing sleeps up to `wait_s`."""
        return await self._acquire(self.key("lock", "thread", thread_id), ttl_ms=ttl_ms, wait_s=wait_s)

    async def release_lock(self, thread_id: str, token: str) -> bool:
        return await self._release_key(self.key("lock", "thread", thread_id), token)

    @_translated
    async def extend_lock(self, thread_id: str, token: str, ttl_ms: int) -> bool:
        return bool(await self._extend(keys=[self.key("lock", "thread", thread_id)], args=[token, ttl_ms]))

    async def acquire_lease(self, name: str, *, ttl_ms: int) -> str | None:
        return await self._acquire(self.key("lease", name), ttl_ms=ttl_ms, wait_s=0)

    async def release_lease(self, name: str, token: str) -> bool:
        return await self._release_key(self.key("lease", name), token)

    @_translated
    async def _acquire(self, key: str, *, ttl_ms: int, wait_s: float) -> str | None:
        token = secrets.token_hex(16)
        deadline = time.monotonic() + wait_s
        delay = 0.005
        while True:
            if await self.redis.set(key, token, nx=True, px=ttl_ms):
                return token
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(delay, remaining))  # the last try falls on the deadline itself
            delay = min(delay * 2, 0.1)

    @_translated
    async def _release_key(self, key: str, token: str) -> bool:
        return bool(await self._release(keys=[key], args=[token]))

    # -- raw access for the admin view and tests ---------------------------------------------------

    async def exists(self, *parts: str) -> bool:
        return bool(await self._exists(self.key(*parts)))

    @_translated
    async def _exists(self, key: str) -> int:
        return int(await self.redis.exists(key))
