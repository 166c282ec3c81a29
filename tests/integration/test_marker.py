"""The registry marker's states on a real Redis (standalone and cluster), each "process" a RegistryMarker of
its own: created once, a loss seen by every process, a fresh marker no operator wrote is a loss too, and
only an operator's restore makes the store whole again."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.state.connect import Connection, build
from app.state.marker import RegistryMarker
from app.state.store import RedisStore, ThreadRecord


@pytest.fixture(params=["standalone", "cluster"])
async def store(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStore]:
    url = redis_url if request.param == "standalone" else request.getfixturevalue("redis_cluster_url")
    built: Connection = build(url)
    try:
        yield RedisStore(built.client, prefix=redis_prefix, commands=built.commands)
    finally:
        async for key in built.client.scan_iter(match=f"{redis_prefix}*", count=500):
            await built.client.delete(key)
        await built.aclose()


async def test_a_new_registry_gets_one_marker_that_every_process_accepts(store: RedisStore) -> None:
    first, second = RegistryMarker(store), RegistryMarker(store)
    created = await first.check()
    assert created.created and not created.lost
    joined = await second.check()
    assert not joined.created and not joined.lost and second.seen == first.seen
    assert not (await first.check()).lost


async def test_a_vanished_marker_is_one_loss_every_process_reports_until_an_operator_restores(
    store: RedisStore,
) -> None:
    running, started_later = RegistryMarker(store), RegistryMarker(store)
    await running.check()
    await store.redis.delete(store.keys.marker())  # what a restart without persistence does to every key
    lost = await running.check()
    assert lost.lost and lost.lost_at is not None and "gone" in (lost.reason or "")
    again = await running.check()
    assert again.lost and again.lost_at == lost.lost_at  # recorded once: the first report's time stays
    assert (await started_later.check()).lost  # a process started after the loss sees it as well
    assert await started_later.restore("test operator") is True
    assert not (await running.check()).lost and not (await started_later.check()).lost
    assert await running.restore("test operator") is False  # nothing to restore: a whole store is left alone


async def test_a_fresh_marker_written_after_a_loss_is_itself_a_loss(store: RedisStore) -> None:
    running = RegistryMarker(store)
    await running.check()
    await store.redis.delete(store.keys.marker())
    newcomer = RegistryMarker(store)  # a replica that starts on the emptied store before anyone probed
    assert (await newcomer.check()).created
    replaced = await running.check()
    assert replaced.lost and "replaced" in (replaced.reason or "")
    assert (await newcomer.check()).lost  # from then on every replica reports it


async def test_a_registry_with_threads_but_no_marker_is_adopted_with_a_warning_not_reported_lost(
    store: RedisStore,
) -> None:
    await store.record_thread(ThreadRecord("thread_old", "demo", "assistants", "alice", 1000.0, 1000.0))
    state = await RegistryMarker(store).check()
    assert state.adopted and not state.created and not state.lost
