"""The registry's layout migration (`app.state.migrate`) on a real Redis: a layout-1 registry in, layout 2 out.

Layout 1 is written as the store wrote it before buckets (`thread:<id>` hashes, `threads:idle`,
`owner:<owner>:threads`, commit 987ed6f^). The migration runs where it runs in production, at the
bridge's start-up (there is no CLI command for it); it is cut short once on purpose, and the bridge
is started a second time to show a repeat is harmless. Every thread is then read back through the
store and the admin API, and the keys of layout 1 are gone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from app.state.connect import connect
from app.state.keys import bucket_of
from app.state.migrate import CHUNK, Migration, migrate
from app.state.store import RedisStore, ThreadRecord
from tests.support.bridge import running_bridge
from tests.support.servers import ServerThread

ADMIN = "admin-key-0123456789abcdef"
KEYS = [{"name": "ops", "key": ADMIN, "admin": True}]
OWNERS = ("alice", "bob", "carol")
THREADS = 2 * CHUNK + 101
"""More than two of the migration's chunks."""


def _records() -> list[ThreadRecord]:
    return [
        ThreadRecord(
            thread_id=f"thread_m{n:05d}",
            route="demo-assistant" if n % 2 else "classic-assistant",
            backend="assistants",
            owner=OWNERS[n % len(OWNERS)],
            created_at=1_700_000_000.0 + n,
            last_used_at=1_700_000_500.0 + n / 3,
            turns=n % 7,
            metadata={"n": n} if n % 5 == 0 else {},
        )
        for n in range(THREADS)
    ]


def _write_layout_1(client: redis.Redis, prefix: str, records: list[ThreadRecord], *, unindexed: int) -> None:
    """As layout 1's `record_thread` did; the last `unindexed` threads were then claimed by a janitor
    (taken off `threads:idle`) that died before deleting them; one owner entry has no record."""
    pipe = client.pipeline(transaction=False)
    for rec in records:
        pipe.hset(
            f"{prefix}thread:{rec.thread_id}",
            mapping={
                "route": rec.route,
                "backend": rec.backend,
                "owner": rec.owner,
                "created_at": repr(rec.created_at),
                "last_used_at": repr(rec.last_used_at),
                "turns": str(rec.turns),
                "metadata": json.dumps(rec.metadata),
            },
        )
        pipe.zadd(f"{prefix}threads:idle", {rec.thread_id: rec.last_used_at})
        pipe.sadd(f"{prefix}owner:{rec.owner}:threads", rec.thread_id)
    for rec in records[-unindexed:]:
        pipe.zrem(f"{prefix}threads:idle", rec.thread_id)
    pipe.sadd(f"{prefix}owner:alice:threads", "thread_forgotten_halfway")
    pipe.execute()


def _layout_1_keys(client: redis.Redis, prefix: str) -> list[str]:
    keys = [*client.scan_iter(match=f"{prefix}thread:thread_*", count=1000)]
    keys += [*client.scan_iter(match=f"{prefix}owner:*:threads", count=1000)]
    keys += [*client.scan_iter(match=f"{prefix}threads:*", count=1000)]
    return [k.decode() for k in keys]


def _dump(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every key of the prefix with its value, to compare the registry before and after a run."""
    out: dict[str, Any] = {}
    for raw in client.scan_iter(match=f"*{prefix}*", count=1000):
        key = raw.decode()
        kind = client.type(key).decode()
        if kind == "hash":
            out[key] = client.hgetall(key)
        elif kind == "zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            out[key] = sorted(client.smembers(key))
        elif kind == "string" and ":lease:" not in key:
            out[key] = client.get(key)
    return out


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


async def _admin_pages(c: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    after = None
    for _ in range(THREADS):  # bounded: an empty page with a cursor is not the end
        page = await c.get("/admin/threads", params={"limit": 1000, **params, **({"after": after} if after else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        seen += body["data"]
        if (after := body["next"]) is None:
            return seen
    raise AssertionError("the admin list did not end")


async def test_start_up_migrates_a_layout_1_registry_and_a_second_start_changes_nothing(
    emulator: ServerThread, redis_url: str, redis_prefix: str, sync_redis: redis.Redis
) -> None:
    records = _records()
    _write_layout_1(sync_redis, redis_prefix, records, unindexed=3)

    # A migration cut short: one chunk moved, then the process stopped.
    client = connect(redis_url)
    try:
        assert await Migration(client, prefix=redis_prefix).step() == CHUNK
    finally:
        await client.aclose()

    settings: dict[str, Any] = {"keys": KEYS, "threads": {"janitor": False}}
    with running_bridge(emulator.url, redis_url, redis_prefix, **settings) as bridge:  # start-up finishes it
        async with httpx.AsyncClient(base_url=bridge.url, headers={"Authorization": f"Bearer {ADMIN}"}) as c:
            listed = await _admin_pages(c)
            assert sorted(t["thread_id"] for t in listed) == sorted(r.thread_id for r in records)
            for owner in OWNERS:
                mine = {t["thread_id"] for t in await _admin_pages(c, owner=owner)}
                assert mine == {r.thread_id for r in records if r.owner == owner}
            shown = (await c.get(f"/admin/threads/{records[5].thread_id}")).json()
            assert shown["metadata"] == {"n": 5} and shown["turns"] == 5 and shown["owner"] == records[5].owner

    assert _layout_1_keys(sync_redis, redis_prefix) == []
    client = connect(redis_url)
    try:
        store = RedisStore(client, prefix=redis_prefix)
        assert await store.count_threads() == THREADS
        assert await store.get_threads([r.thread_id for r in records]) == records
        for owner in OWNERS:
            assert sorted(await store.threads_of(owner)) == sorted(r.thread_id for r in records if r.owner == owner)
        # Each thread sits in its bucket's idle index with its last use, the janitor's work list:
        # the three a layout-1 janitor had claimed and dropped included, so they get deleted now.
        for rec in records:
            score = await client.zscore(store.keys.idle(bucket_of(rec.thread_id)), rec.thread_id)
            assert score == rec.last_used_at
        before = _dump(sync_redis, redis_prefix)

        # Twice is harmless: nothing is pending, a run changes nothing, another start neither.
        assert await migrate(store) == 0
        with running_bridge(emulator.url, redis_url, redis_prefix, **settings):
            pass
        assert _dump(sync_redis, redis_prefix) == before
    finally:
        await client.aclose()


async def test_a_registry_in_layout_2_is_left_alone(redis_url: str, redis_prefix: str) -> None:
    client = connect(redis_url)
    try:
        store = RedisStore(client, prefix=redis_prefix)
        rec = _records()[0]
        await store.record_thread(rec)
        assert await migrate(store) == 0
        assert await store.get_thread(rec.thread_id) == rec
        assert await Migration(client, prefix=redis_prefix).requeue_unindexed() == 0
    finally:
        await client.aclose()
