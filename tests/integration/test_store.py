"""The Redis store against a real Redis: every key family, owner checks, locks, and failing fast.

Each test has its own key prefix (`redis_prefix`), so tests never see each other's keys; the keys
are deleted afterwards. Round-trip counts are read from Redis's own MONITOR stream, filtered to
this test's connections.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, replace
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.core.turn import Usage
from app.errors import StoreUnavailableError
from app.state.connect import COMMAND_TIMEOUT_S, Connection, build, connect
from app.state.janitor import Janitor, JanitorPolicy
from app.state.store import CallRecord, RedisStore, ResponseRecord, ThreadRecord
from tests.support.servers import free_port

HANDSHAKE = {"PING", "HELLO", "SELECT", "CLIENT", "AUTH"}


@pytest.fixture(params=["standalone", "cluster"])
async def connection(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> AsyncIterator[Connection]:
    """Each store test runs on a standalone Redis and on a real 3-master cluster, with the client and
    the fast path for a turn's commands as the app builds them."""
    url = redis_url if request.param == "standalone" else request.getfixturevalue("redis_cluster_url")
    built = build(url)
    try:
        yield built
    finally:
        redis = built.client
        keys = [k async for k in redis.scan_iter(match=f"{redis_prefix}*", count=500)]
        for key in keys:
            await redis.delete(key)
        await built.aclose()


@pytest.fixture
def client(connection: Connection) -> Redis:
    redis: Redis = connection.client
    return redis


@pytest.fixture
def store(connection: Connection, redis_prefix: str) -> RedisStore:
    return RedisStore(
        connection.client,
        prefix=redis_prefix,
        thread_ttl_s=3600,
        response_ttl_s=7200,
        commands=connection.commands,
    )


def _thread(thread_id: str = "thread_1", owner: str = "alice", at: float = 1000.0, **kw: Any) -> ThreadRecord:
    return ThreadRecord(
        thread_id=thread_id, route="demo", backend="assistants", owner=owner, created_at=at, last_used_at=at, **kw
    )


def _calls(owner: str = "alice", ids: tuple[str, ...] = ("call_a", "call_b")) -> list[CallRecord]:
    return [
        CallRecord(
            call_id=c,
            thread_id="thread_1",
            run_id="run_1",
            route="demo",
            owner=owner,
            sibling_ids=ids,
            created_at=1000.0,
            expires_at=1600.0,
        )
        for c in ids
    ]


async def _commands(redis_url: str, store: RedisStore, action: Callable[[], Awaitable[Any]]) -> list[str]:
    """The commands `action` sent, in order, as Redis's MONITOR saw them (handshakes left out)."""
    if store.cluster:
        pytest.skip("round trips are counted with MONITOR on the standalone server")
    marker = f"{store.prefix}end-of-action"
    watcher = connect(redis_url)
    try:
        async with watcher.monitor() as monitor:
            await action()
            await store.redis.echo(marker)
            seen: list[dict[str, Any]] = []
            while not seen or marker not in seen[-1]["command"]:
                seen.append(dict(await asyncio.wait_for(monitor.next_command(), 5)))
    finally:
        await watcher.aclose()
    ours = {(c["client_address"], c["client_port"]) for c in seen if store.prefix in c["command"]}
    return [
        c["command"]
        for c in seen[:-1]
        if (c["client_address"], c["client_port"]) in ours
        and c.get("client_type") != "lua"  # what a script ran, not what was sent
        and c["command"].split()[0] not in HANDSHAKE
    ]


# -- the thread registry ---------------------------------------------------------------------------


async def test_thread_record_get_touch_forget_round_trip(store: RedisStore, client: Redis, redis_prefix: str) -> None:
    rec = _thread(metadata={"title": "hello", "created_by": "agent-bridge"})
    await store.record_thread(rec)

    assert await store.get_thread("thread_1") == rec
    assert await store.get_thread("thread_1", owner="alice") == rec
    assert await client.zscore(store.keys.idle_of("thread_1"), "thread_1") == 1000.0
    assert await store.threads_of("alice") == ["thread_1"]

    await store.close_turn("thread_1", None, now=1500.5)
    await store.close_turn("thread_1", None, now=1600.25)
    touched = await store.get_thread("thread_1")
    assert touched is not None
    assert (touched.last_used_at, touched.turns, touched.created_at) == (1600.25, 2, 1000.0)
    assert await client.zscore(store.keys.idle_of("thread_1"), "thread_1") == 1600.25

    await store.forget_thread("thread_1")
    assert await store.get_thread("thread_1") is None
    assert await client.zscore(store.keys.idle_of("thread_1"), "thread_1") is None
    assert await store.threads_of("alice") == []
    assert [k async for k in client.scan_iter(match=f"{redis_prefix}*")] == []

    # A late touch (a turn that ended after the janitor forgot the thread) must not resurrect it.
    await store.close_turn("thread_1", None, now=2000.0)
    assert await store.get_thread("thread_1") is None
    assert await client.zscore(store.keys.idle_of("thread_1"), "thread_1") is None


async def test_record_thread_writes_its_three_keys_in_one_transaction(store: RedisStore, redis_url: str) -> None:
    commands = await _commands(redis_url, store, lambda: store.record_thread(_thread()))
    assert [c.split()[0] for c in commands] == ["MULTI", "HSET", "ZADD", "SADD", "EXEC"]
    assert all(c.split()[1].startswith(store.prefix) for c in commands[1:-1])


async def test_a_turn_opens_and_closes_its_thread_in_one_script_call_each(
    store: RedisStore, client: Redis, redis_prefix: str, redis_url: str
) -> None:
    await store.record_thread(_thread())
    opened: list[tuple[ThreadRecord | None, str | None]] = []

    async def open_it() -> None:
        opened.append(await store.open_thread("thread_1", "alice", ttl_ms=60_000))

    await store.open_thread("thread_0", "alice", ttl_ms=60_000)  # loads the script, as the first turn of a process does
    assert [c.split()[0] for c in await _commands(redis_url, store, open_it)] == ["EVALSHA"]
    [(record, token)] = opened
    assert record is not None and record.owner == "alice" and token is not None
    lock = store.keys.lock("thread_1")
    assert await client.get(lock) == token
    # Busy: the record comes back without a token; another owner sees nothing and holds nothing.
    assert await store.open_thread("thread_1", "alice", ttl_ms=60_000) == (record, None)
    assert await store.open_thread("thread_1", "bob", ttl_ms=60_000) == (None, None)

    await store.close_turn("thread_0", None, now=1.0)  # loads the script, as the first turn of a process does
    closing = await _commands(redis_url, store, lambda: store.close_turn("thread_1", token, now=2000.0))
    assert [c.split()[0] for c in closing] == ["EVALSHA"]
    assert await client.get(lock) is None
    touched = await store.get_thread("thread_1")
    assert touched is not None and (touched.last_used_at, touched.turns) == (2000.0, 1)
    assert await client.zscore(store.keys.idle_of("thread_1"), "thread_1") == 2000.0


async def test_closing_with_a_stale_token_leaves_the_new_holders_lock(
    store: RedisStore, client: Redis, redis_prefix: str
) -> None:
    await store.record_thread(_thread())
    lock = store.keys.lock("thread_1")
    await client.set(lock, "someone-else")
    await store.close_turn("thread_1", "my-expired-token", now=None)
    assert await client.get(lock) == "someone-else"
    untouched = await store.get_thread("thread_1")
    assert untouched is not None and untouched.turns == 0 and untouched.last_used_at == 1000.0
    # A thread the janitor forgot meanwhile is not brought back by a late close.
    await store.forget_thread("thread_1")
    await store.close_turn("thread_1", None, now=3000.0)
    assert await store.get_thread("thread_1") is None
    assert await client.zscore(store.keys.idle_of("thread_1"), "thread_1") is None


async def test_idle_threads_reads_the_expired_end_most_idle_first(store: RedisStore) -> None:
    from app.state.keys import bucket_of

    # Ids chosen in one bucket, so one bucket's order can be read.
    same = [f"t{n}" for n in range(2000) if bucket_of(f"t{n}") == bucket_of("t0")][:5]
    for n, at in enumerate([500.0, 100.0, 300.0, 900.0, 200.0]):
        await store.record_thread(_thread(same[n], owner="alice" if n % 2 else "bob", at=at))
    bucket = bucket_of(same[0])

    assert await store.idle_threads(bucket, before=350.0, limit=10) == [same[1], same[4], same[2]]
    assert await store.idle_threads(bucket, before=350.0, limit=2) == [same[1], same[4]]
    assert await store.idle_threads(bucket, before=50.0, limit=10) == []
    assert sorted(await store.threads_of("alice")) == sorted([same[1], same[3]])
    assert sorted(await store.threads_of("bob")) == sorted([same[0], same[2], same[4]])
    backlog = await store.bucket_backlog(before=350.0)
    assert backlog[bucket] == (5, 3) and sum(e for _, e in backlog) == 3
    assert await store.count_threads() == 5

    await store.close_turn(same[1], None, now=1000.0)  # used again: no longer idle
    assert await store.idle_threads(bucket, before=350.0, limit=10) == [same[4], same[2]]


async def test_a_janitor_that_dies_after_its_claim_leaves_the_thread_due_again(store: RedisStore) -> None:
    """The claim re-scores, it does not remove: a thread whose claimant died is deleted later, by another."""
    await store.record_thread(_thread("thread_dead_claim", at=1000.0))
    policy = JanitorPolicy(ttl_s=100.0, claim_s=300.0, retry_base_s=1.0)
    now = 2000.0
    # The first janitor claims the thread and is killed before it deletes it.
    assert await store.claim_idle("thread_dead_claim", expired_by=now - 100.0, due_again=now + 300.0 - 100.0)
    assert not await store.claim_idle("thread_dead_claim", expired_by=now - 100.0, due_again=now + 200.0)
    deleted: list[str] = []

    async def delete(thread_id: str) -> None:  # Azure's side of a deletion
        deleted.append(thread_id)

    janitor = Janitor(store, {"demo": delete}, policy)
    soon = await janitor.sweep(now=now + 10.0)  # still claimed: nobody else takes it
    assert soon.deleted == [] and deleted == [] and await store.get_thread("thread_dead_claim") is not None
    later = await janitor.sweep(now=now + 301.0)  # the claim ran out: due again, deleted once
    assert later.deleted == ["thread_dead_claim"] and deleted == ["thread_dead_claim"]
    assert await store.get_thread("thread_dead_claim") is None and await store.count_threads() == 0


async def test_a_stale_work_list_entry_is_dropped_by_the_sweep(store: RedisStore) -> None:
    await store.requeue_idle("thread_gone", 1000.0)  # an entry whose record no longer exists
    result = await Janitor(store, {}, JanitorPolicy(ttl_s=100.0)).sweep(now=2000.0)
    assert result.skipped == ["thread_gone"] and await store.count_threads() == 0


async def test_threads_spread_over_buckets_and_owners_are_found_anywhere(store: RedisStore) -> None:
    from app.state.keys import bucket_of

    ids = [f"thread_{n}" for n in range(60)]
    for n, thread_id in enumerate(ids):
        await store.record_thread(_thread(thread_id, owner="carol" if n % 20 == 0 else "dave", at=float(n)))
    assert len({bucket_of(t) for t in ids}) > 30
    assert await store.threads_of("carol") == sorted(ids[0::20])
    assert await store.count_threads() == 60


# -- owner checks ----------------------------------------------------------------------------------


async def test_another_owners_ids_read_as_unknown(store: RedisStore) -> None:
    await store.record_thread(_thread(owner="alice"))
    await store.save_calls(_calls(owner="alice"), ttl_s=60)
    await store.save_response(_response(owner="alice"))

    assert await store.get_thread("thread_1", owner="mallory") is None
    assert await store.get_call("call_a", "mallory") is None
    assert await store.get_calls(["call_a", "call_b"], "mallory") == [None, None]
    assert await store.get_response("resp_1", "mallory") is None
    assert await store.threads_of("mallory") == []

    # ...while the owner still sees all of them.
    assert await store.get_thread("thread_1", owner="alice") is not None
    assert await store.get_call("call_a", "alice") is not None
    assert await store.get_response("resp_1", "alice") is not None


# -- conversations ---------------------------------------------------------------------------------


async def test_find_conversation_picks_the_longest_prefix_in_one_mget(store: RedisStore, redis_url: str) -> None:
    await store.save_conversation("alice", "demo", "fp1", "thread_short")
    await store.save_conversation("alice", "demo", "fp3", "thread_long")
    await store.save_conversation("alice", "demo", "fp4-other-route", "x")

    fingerprints = ["fp1", "fp2", "fp3", "fp4"]
    found: list[tuple[int, str] | None] = []

    async def find() -> None:
        found.append(await store.find_conversation("alice", "demo", fingerprints))

    commands = await _commands(redis_url, store, find)
    assert found == [(2, "thread_long")]
    assert len(commands) == 1
    assert commands[0].split()[0] == "MGET"
    assert len(commands[0].split()) == 1 + len(fingerprints)

    assert await store.find_conversation("alice", "demo", ["fp1", "fp2"]) == (0, "thread_short")
    assert await store.find_conversation("alice", "demo", ["fp0", "fp2"]) is None
    assert await store.find_conversation("alice", "demo", []) is None
    assert await store.find_conversation("bob", "demo", fingerprints) is None
    assert await store.find_conversation("alice", "other", fingerprints) is None


async def test_take_conversation_takes_the_longest_prefix_once(
    store: RedisStore, client: Redis, redis_prefix: str
) -> None:
    await store.save_conversation("alice", "demo", "fp1", "thread_short")
    await store.save_conversation("alice", "demo", "fp3", "thread_long")
    fingerprints = ["fp1", "fp2", "fp3"]
    assert await store.take_conversation("alice", "demo", fingerprints) == (2, "thread_long")
    assert await client.exists(f"{redis_prefix}conv:alice:demo:fp3") == 0
    assert await client.exists(f"{redis_prefix}conv:alice:demo:fp1") == 1  # another thread's end stays
    assert await store.take_conversation("alice", "demo", fingerprints) == (0, "thread_short")
    assert await store.take_conversation("alice", "demo", fingerprints) is None
    assert await store.take_conversation("alice", "demo", []) is None


async def test_concurrent_takes_of_one_prefix_have_one_winner(store: RedisStore) -> None:
    await store.save_conversation("alice", "demo", "fp1", "thread_1")
    results = await asyncio.gather(*(store.take_conversation("alice", "demo", ["fp1"]) for _ in range(20)))
    assert [r for r in results if r is not None] == [(0, "thread_1")]


async def test_conversations_expire_with_the_thread_ttl(store: RedisStore, client: Redis, redis_prefix: str) -> None:
    await store.save_conversation("alice", "demo", "fp1", "thread_1")
    await store.bind_conversation_id("alice", "demo", "chat-42", "thread_1")
    for key in (f"{redis_prefix}conv:alice:demo:fp1", f"{redis_prefix}conv:alice:demo:id:chat-42"):
        assert 3_590_000 < await client.pttl(key) <= 3_600_000


async def test_finding_a_named_conversation_renews_its_ttl(store: RedisStore, client: Redis, redis_prefix: str) -> None:
    await store.bind_conversation_id("alice", "demo", "chat-42", "thread_1")
    key = f"{redis_prefix}conv:alice:demo:id:chat-42"
    await client.pexpire(key, 1_000)
    assert await store.conversation_by_id("alice", "demo", "chat-42") == "thread_1"
    assert 3_590_000 < await client.pttl(key) <= 3_600_000


async def test_conversation_ids_bind_per_owner_and_route(store: RedisStore) -> None:
    assert await store.conversation_by_id("alice", "demo", "chat-42") is None
    await store.bind_conversation_id("alice", "demo", "chat-42", "thread_1")
    assert await store.conversation_by_id("alice", "demo", "chat-42") == "thread_1"
    assert await store.conversation_by_id("bob", "demo", "chat-42") is None
    assert await store.conversation_by_id("alice", "other", "chat-42") is None

    await store.bind_conversation_id("alice", "demo", "chat-42", "resp_9")  # rebinding moves it on
    assert await store.conversation_by_id("alice", "demo", "chat-42") == "resp_9"
    # An explicit id never collides with a fingerprint of the same text.
    assert await store.find_conversation("alice", "demo", ["chat-42"]) is None


# -- tool calls ------------------------------------------------------------------------------------


async def test_foundry_items_belong_to_the_first_owner_that_produced_them(store: RedisStore) -> None:
    await store.claim_items(["msg_a", "fc_b"], "alice")
    await store.claim_items(["fc_b", "msg_c"], "bob")  # the first owner keeps an item; bob gets his new one
    found = await store.owners([("item", i) for i in ("msg_a", "fc_b", "msg_c", "msg_never")])
    assert [o.owner if o else None for o in found] == ["alice", "alice", "bob", None]


async def test_ownership_records_are_renewed_on_use_and_an_unknown_id_writes_nothing(
    store: RedisStore, client: Redis, redis_prefix: str
) -> None:
    """One round trip (a pipeline; per node on the cluster, where these keys sit in different slots)
    reads the records of several kinds at once and renews each one found; an unknown id leaves no key."""
    await store.claim_items(["msg_a"], "alice")
    assert await store.record_conversation("conv_a", "alice")
    assert not await store.record_conversation("conv_a", "bob")  # an adopted or created id is never taken over
    await store.save_response(
        ResponseRecord(
            response_id="resp_a", owner="alice", route="demo", backend="foundry", thread_id=None, run_id=None,
            upstream_id="resp_a", created_at=1.0,
        )
    )  # fmt: skip
    for key in ("owned:item:msg_a", "owned:conversation:conv_a", "resp:resp_a"):
        await client.pexpire(redis_prefix + key, 1000)
    refs = [("item", "msg_a"), ("conversation", "conv_a"), ("response", "resp_a"), ("conversation", "conv_zz")]
    found = await store.owners(refs)  # type: ignore[arg-type]
    assert [(o.owner, o.route) if o else None for o in found] == [
        ("alice", None),
        ("alice", None),
        ("alice", "demo"),
        None,
    ]
    for key in ("owned:item:msg_a", "owned:conversation:conv_a", "resp:resp_a"):
        assert await client.pttl(redis_prefix + key) > 7_000_000  # renewed to the response TTL
    assert not await client.exists(redis_prefix + "owned:conversation:conv_zz")
    await store.forget("conversation", "conv_a")
    assert (await store.owners([("conversation", "conv_a")]))[0] is None


async def test_call_records_round_trip_with_their_ttl(store: RedisStore, client: Redis, redis_prefix: str) -> None:
    records = _calls()
    await store.save_calls(records, ttl_s=30)

    assert await store.get_call("call_a", "alice") == records[0]
    got = await store.get_calls(["call_b", "call_unknown", "call_a"], "alice")
    assert got == [records[1], None, records[0]]
    assert got[0] is not None and got[0].sibling_ids == ("call_a", "call_b")
    assert 29_000 < await client.pttl(f"{redis_prefix}call:call_a") <= 30_000
    assert await store.get_calls([], "alice") == []

    await store.delete_calls(["call_a", "call_b"])
    assert await store.get_calls(["call_a", "call_b"], "alice") == [None, None]
    await store.delete_calls([])  # nothing to do is not an error


async def test_call_records_keep_the_usage_their_run_reported(
    store: RedisStore, client: Redis, redis_prefix: str
) -> None:
    """The run's figure so far travels with its waiting calls; a record written before the field existed
    (by an older bridge, still waiting for its outputs) reads as none reported."""
    reported = Usage(prompt_tokens=12, completion_tokens=5, total_tokens=17)
    await store.save_calls([replace(r, reported=reported) for r in _calls()], ttl_s=30)
    got = await store.get_calls(["call_a", "call_b"], "alice")
    assert [r.reported if r else None for r in got] == [reported, reported]
    older = {k: v for k, v in asdict(_calls(ids=("call_c",))[0]).items() if k != "reported"}
    await client.set(f"{redis_prefix}call:call_c", json.dumps(older), px=30_000)
    record = await store.get_call("call_c", "alice")
    assert record is not None and record.reported is None and record.sibling_ids == ("call_c",)


async def test_get_calls_is_one_round_trip(store: RedisStore, redis_url: str) -> None:
    await store.save_calls(_calls(ids=("c1", "c2", "c3")), ttl_s=30)
    commands = await _commands(redis_url, store, lambda: store.get_calls(["c1", "c2", "c3"], "alice"))
    assert [c.split()[0] for c in commands] == ["MGET"]


async def test_call_records_expire(store: RedisStore) -> None:
    await store.save_calls(_calls(), ttl_s=0.2)
    assert await store.get_call("call_a", "alice") is not None
    await asyncio.sleep(0.35)
    assert await store.get_calls(["call_a", "call_b"], "alice") == [None, None]


# -- responses -------------------------------------------------------------------------------------


def _response(owner: str = "alice", **kw: Any) -> ResponseRecord:
    fields: dict[str, Any] = {
        "response_id": "resp_1",
        "owner": owner,
        "route": "demo",
        "backend": "assistants",
        "thread_id": "thread_1",
        "run_id": "run_1",
        "upstream_id": None,
        "created_at": 1000.0,
    }
    return ResponseRecord(**(fields | kw))


async def test_response_records_round_trip(store: RedisStore, client: Redis, redis_prefix: str) -> None:
    rec = _response(data={"response": {"id": "resp_1", "output": [{"type": "message", "content": []}]}, "n": 3})
    await store.save_response(rec)
    assert await store.get_response("resp_1", "alice") == rec
    assert 7_190_000 < await client.pttl(f"{redis_prefix}resp:resp_1") <= 7_200_000

    foundry = _response(response_id="resp_2", backend="foundry", thread_id=None, run_id=None, upstream_id="resp_up")
    await store.save_response(foundry)
    assert await store.get_response("resp_2", "alice") == foundry

    # Several at once (item references name several responses): one MGET, per slot on a cluster.
    others = _response(response_id="resp_3", owner="mallory")
    await store.save_response(others)
    wanted = ["resp_2", "resp_missing", "resp_3", "resp_1"]
    assert await store.get_responses(wanted, "alice") == [foundry, None, None, rec]

    await store.delete_response("resp_1")
    assert await store.get_response("resp_1", "alice") is None
    assert await store.get_response("resp_2", "alice") == foundry


# -- locks -----------------------------------------------------------------------------------------


async def test_a_second_acquirer_waits_then_gets_none(store: RedisStore) -> None:
    token = await store.acquire_lock("thread_1", ttl_ms=10_000, wait_s=0)
    assert token is not None

    started = time.monotonic()
    assert await store.acquire_lock("thread_1", ttl_ms=10_000, wait_s=0.3) is None
    waited = time.monotonic() - started
    assert 0.28 <= waited < 1.0

    started = time.monotonic()
    assert await store.acquire_lock("thread_1", ttl_ms=10_000, wait_s=0) is None
    assert time.monotonic() - started < 0.2  # wait_s=0: one try, no sleeping


async def test_a_waiter_gets_the_lock_soon_after_it_is_released(store: RedisStore) -> None:
    token = await store.acquire_lock("thread_1", ttl_ms=10_000, wait_s=0)
    assert token is not None
    waiter = asyncio.create_task(store.acquire_lock("thread_1", ttl_ms=10_000, wait_s=3))
    await asyncio.sleep(0.25)
    assert not waiter.done()
    released_at = time.monotonic()
    assert await store.release_lock("thread_1", token) is True
    second = await waiter
    assert second is not None and second != token
    assert time.monotonic() - released_at < 0.5  # polled at most ~100 ms apart


async def test_release_with_a_wrong_token_fails(store: RedisStore) -> None:
    token = await store.acquire_lock("thread_1", ttl_ms=10_000, wait_s=0)
    assert token is not None
    assert await store.release_lock("thread_1", "not-the-token") is False
    assert await store.acquire_lock("thread_1", ttl_ms=10_000, wait_s=0) is None  # still held
    assert await store.release_lock("thread_1", token) is True
    assert await store.release_lock("thread_1", token) is False  # already free
    assert await store.acquire_lock("thread_1", ttl_ms=10_000, wait_s=0) is not None


async def test_extend_keeps_the_lock_only_for_its_holder(store: RedisStore, client: Redis, redis_prefix: str) -> None:
    key = store.keys.lock("thread_1")
    token = await store.acquire_lock("thread_1", ttl_ms=300, wait_s=0)
    assert token is not None
    assert await store.extend_lock("thread_1", "not-the-token", 60_000) is False
    assert await client.pttl(key) <= 300
    assert await store.extend_lock("thread_1", token, 60_000) is True
    assert 59_000 < await client.pttl(key) <= 60_000
    await asyncio.sleep(0.4)  # past the original TTL: the extension holds it
    assert await store.acquire_lock("thread_1", ttl_ms=1000, wait_s=0) is None
    assert await store.extend_lock("thread_2", token, 60_000) is False  # another thread's lock


async def test_an_expired_lock_is_free_and_its_old_token_is_powerless(store: RedisStore) -> None:
    old = await store.acquire_lock("thread_1", ttl_ms=150, wait_s=0)
    assert old is not None
    assert await store.acquire_lock("thread_1", ttl_ms=10_000, wait_s=0) is None
    await asyncio.sleep(0.25)
    new = await store.acquire_lock("thread_1", ttl_ms=10_000, wait_s=0)
    assert new is not None and new != old
    # The first holder, late, must neither free nor extend the new holder's lock.
    assert await store.release_lock("thread_1", old) is False
    assert await store.extend_lock("thread_1", old, 60_000) is False
    assert await store.acquire_lock("thread_1", ttl_ms=10_000, wait_s=0) is None


async def test_locks_are_per_thread(store: RedisStore) -> None:
    assert await store.acquire_lock("thread_1", ttl_ms=10_000, wait_s=0) is not None
    assert await store.acquire_lock("thread_2", ttl_ms=10_000, wait_s=0) is not None


# -- every key under the prefix --------------------------------------------------------------------


async def test_every_key_starts_with_the_prefix(store: RedisStore, client: Redis, redis_prefix: str) -> None:
    await store.record_thread(_thread())
    await store.save_conversation("alice", "demo", "fp1", "thread_1")
    await store.bind_conversation_id("alice", "demo", "chat-1", "thread_1")
    await store.save_calls(_calls(), ttl_s=30)
    await store.save_response(_response())
    assert await store.acquire_lock("thread_1", ttl_ms=10_000, wait_s=0) is not None

    keys = sorted([k async for k in client.scan_iter(match=f"{redis_prefix}*")])
    tag = store.keys.idle_of("thread_1").removeprefix(f"{redis_prefix}idle:")
    assert [k.removeprefix(redis_prefix) for k in keys] == sorted(
        [
            "call:call_a",
            "call:call_b",
            "conv:alice:demo:fp1",
            "conv:alice:demo:id:chat-1",
            f"idle:{tag}",
            f"lock:thread:{tag}:thread_1",
            f"owner:{tag}:alice",
            "resp:resp_1",
            f"thread:{tag}:thread_1",
        ]
    )
    # A thread's record, lock, idle entry and owner entry share one hash slot.
    assert tag.startswith("{b") and tag.endswith("}")


async def test_a_burst_larger_than_the_pool_queues_instead_of_failing(store: RedisStore) -> None:
    await store.record_thread(_thread())
    found = await asyncio.gather(*(store.open_thread("thread_1", "alice", ttl_ms=60_000) for _ in range(1_000)))
    assert all(record is not None and record.thread_id == "thread_1" for record, _ in found)
    assert sum(token is not None for _, token in found) == 1  # and the lock still goes to exactly one


# -- a dead Redis fails fast, as StoreUnavailableError ---------------------------------------------


async def test_a_store_on_a_closed_port_raises_store_unavailable_quickly(redis_prefix: str) -> None:
    redis = connect(f"redis://127.0.0.1:{free_port()}/0")
    store = RedisStore(redis, prefix=redis_prefix)
    calls: list[Callable[[], Awaitable[Any]]] = [
        store.ping,
        lambda: store.record_thread(_thread()),
        lambda: store.get_thread("thread_1", owner="alice"),
        lambda: store.find_conversation("alice", "demo", ["fp1", "fp2"]),
        lambda: store.save_calls(_calls(), ttl_s=30),
        lambda: store.get_response("resp_1", "alice"),
        lambda: store.acquire_lock("thread_1", ttl_ms=1000, wait_s=1),
        lambda: store.release_lock("thread_1", "token"),
    ]
    try:
        for call in calls:
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError) as caught:
                await call()
            assert time.monotonic() - started < 3
            assert isinstance(caught.value.__cause__, (RedisError, OSError))
            assert caught.value.status == 503 and caught.value.code == "state_store_unavailable"
            assert caught.value.message.lower().startswith("the state store is unavailable")
    finally:
        await redis.aclose()


@pytest.mark.slow
async def test_a_redis_that_never_answers_fails_within_the_command_timeout(redis_prefix: str) -> None:
    """A server that accepts connections and then says nothing must not hang a request."""
    sockets: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sockets.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    redis = connect(f"redis://127.0.0.1:{port}/0")
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await RedisStore(redis, prefix=redis_prefix).get_thread("thread_1")
        assert time.monotonic() - started < COMMAND_TIMEOUT_S + 1.5
    finally:
        await redis.aclose()
        for writer in sockets:
            writer.close()
        # Closed on this test's loop, not left to the collector after it.
        await asyncio.gather(*(w.wait_closed() for w in sockets), return_exceptions=True)
        server.close()
        await server.wait_closed()


class PrivateRedis:
    """A redis-server of this test's own on a fixed free port, which the test can stop and restart."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(binary)
    try:
        yield server
    finally:
        server.stop_all()


async def _until_up(store: RedisStore, within_s: float = 10) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            await store.ping()
            return
        except StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_a_redis_restart_costs_no_request(private_redis: PrivateRedis, redis_prefix: str) -> None:
    """Every pooled connection dies with the server; the next command reconnects instead of failing."""
    server = private_redis.start()
    redis = connect(private_redis.url)
    store = RedisStore(redis, prefix=redis_prefix)
    try:
        await _until_up(store)
        await store.save_conversation("alice", "demo", "fp1", "thread_1")

        server.terminate()  # (no command meanwhile: that would replace the dead connection itself)
        server.wait(timeout=10)
        private_redis.start()
        probe = RedisStore(connect(private_redis.url), prefix=redis_prefix)
        try:
            await _until_up(probe)
        finally:
            await probe.redis.aclose()

        await store.ping()  # the pooled connection is dead; the store's first command still succeeds
        await store.save_conversation("alice", "demo", "fp1", "thread_2")
        assert await store.find_conversation("alice", "demo", ["fp1"]) == (0, "thread_2")
    finally:
        await redis.aclose()


# -- the embedded Redis (REDIS_URL unset) ----------------------------------------------------------


async def test_the_embedded_redis_runs_every_store_operation() -> None:
    redis = connect(None)
    store = RedisStore(redis, prefix="ab:")
    try:
        await store.ping()
        await store.record_thread(_thread())
        await store.close_turn("thread_1", None, now=2000.0)
        rec = await store.get_thread("thread_1", owner="alice")
        assert rec is not None and rec.turns == 1
        await store.save_conversation("alice", "demo", "fp1", "thread_1")
        assert await store.find_conversation("alice", "demo", ["fp1", "fp2"]) == (0, "thread_1")
        token = await store.acquire_lock("thread_1", ttl_ms=1000, wait_s=0)
        assert token is not None
        assert await store.extend_lock("thread_1", token, 5000) is True
        assert await store.release_lock("thread_1", "wrong") is False
        assert await store.release_lock("thread_1", token) is True
        await store.forget_thread("thread_1")
        assert await store.count_threads() == 0
    finally:
        await redis.aclose()
