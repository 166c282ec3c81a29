"""Threads are never orphaned: idle threads are deleted on Azure, then forgotten, exactly once."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.support.bridge import Bridge, running_bridge
from tests.support.chat import turn
from tests.support.leftovers import wait_for
from tests.support.servers import ServerThread

TTL_S = 2.0
FAST_JANITOR = {"ttl": f"{TTL_S:g}s", "sweep_interval": "200ms", "retry_base": "200ms"}


def _converse(bridge: Bridge, count: int) -> list[str]:
    client = bridge.client()

    def one(n: int) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="demo-assistant", messages=[{"role": "user", "content": f"conversation {n}"}]
        )
        return str(raw.headers["x-thread-id"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def _registered(bridge: Bridge, ids: list[str]) -> int:
    """How many of these threads still have a registry record."""
    records = bridge.server.call(bridge.state.store.get_threads(ids))
    return sum(record is not None for record in records)


def _deleted(bridge: Bridge, ids: list[str]) -> set[str]:
    return {t["id"] for t in bridge.emulator_threads() if t["id"] in ids and t["deleted"]}


def _sweeps(bridge: Bridge) -> int:
    counters = bridge.server.call(bridge.state.janitor.counters_snapshot())
    return int(counters["sweeps"])


def _swept(*bridges: Bridge) -> None:
    """Wait (bounded) until each bridge's janitor ran a whole sweep that started after this call: sweeps
    run one after another, so the second to end from now is one that began after now."""
    start = [_sweeps(b) for b in bridges]
    wait_for(lambda: all(_sweeps(b) >= n + 2 for b, n in zip(bridges, start, strict=True)), timeout=10)


def test_fifty_idle_conversations_are_deleted(emulator: ServerThread, redis_url: str, redis_prefix: str) -> None:
    with running_bridge(emulator.url, redis_url, redis_prefix, threads=FAST_JANITOR) as bridge:
        ids = _converse(bridge, 50)
        assert len(set(ids)) == 50
        # Never alive upstream and unknown to the registry. (The 2 s idle TTL can run out for the first
        # conversations while the last are still being created on a loaded machine, so some may be gone.)
        records = bridge.server.call(bridge.state.store.get_threads(ids))
        gone = _deleted(bridge, ids)
        assert [t for t, record in zip(ids, records, strict=True) if record is None and t not in gone] == []
        wait_for(lambda: len(_deleted(bridge, ids)) == 50, timeout=20)
        wait_for(lambda: _registered(bridge, ids) == 0, timeout=5)
        _swept(bridge)  # a janitor that deleted twice would have done it by now
        # Each thread was deleted exactly once upstream.
        deletes = [
            r for r in bridge.emulator_requests() if r["method"] == "DELETE" and r["path"].rsplit("/", 1)[-1] in ids
        ]
        assert len(deletes) == 50


def test_failed_deletions_are_retried_and_never_forgotten_early(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    with running_bridge(emulator.url, redis_url, redis_prefix, threads=FAST_JANITOR) as bridge:
        # The fault goes in first: on a loaded machine the fast janitor could delete early threads while
        # later ones were still being created, and then no deletion would ever fail.
        bridge.fault(path=r"/openai/threads/thread_[^/]+$", method="DELETE", status=503, count=25)
        ids = _converse(bridge, 10)
        # While Azure fails the deletions, every thread stays in the registry.
        wait_for(lambda: bridge.emulator_stats().get("DELETE /openai/threads/{thread_id}", 0) >= 10, timeout=20)
        # Deletions run concurrently: one may be confirmed by Azure and not yet forgotten, never the reverse.
        assert _registered(bridge, ids) >= 10 - len(_deleted(bridge, ids))
        wait_for(lambda: len(_deleted(bridge, ids)) == 10, timeout=30)
        wait_for(lambda: _registered(bridge, ids) == 0, timeout=5)
        # Azure really refused deletions meanwhile. (The janitor's own `failed` counter is not asserted:
        # the upstream client's retries may absorb every refusal of a given deletion.)
        refused = [r for r in bridge.emulator_requests() if r["method"] == "DELETE" and r["status"] == 503]
        assert len(refused) >= 10


def test_two_janitors_never_delete_the_same_thread_twice(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    with (
        running_bridge(emulator.url, redis_url, redis_prefix, threads=FAST_JANITOR) as first,
        running_bridge(emulator.url, redis_url, redis_prefix, threads=FAST_JANITOR) as second,
    ):
        ids = _converse(first, 15) + _converse(second, 15)
        wait_for(lambda: len(_deleted(first, ids)) == 30, timeout=30)
        wait_for(lambda: _registered(first, ids) == 0, timeout=5)
        _swept(first, second)  # had both claimed one thread, the second deletion would be in by now
        deletes = [r for r in first.emulator_requests() if r["method"] == "DELETE"]
        assert sorted(r["path"].rsplit("/", 1)[-1] for r in deletes) == sorted(ids)
        assert all(r["status"] == 200 for r in deletes)


def test_a_thread_in_use_is_not_deleted(emulator: ServerThread, redis_url: str, redis_prefix: str) -> None:
    with running_bridge(emulator.url, redis_url, redis_prefix, threads=FAST_JANITOR) as bridge:
        client = bridge.client()
        history: list[dict[str, Any]] = [{"role": "user", "content": "keep me"}]
        raw = client.chat.completions.with_raw_response.create(model="demo-assistant", messages=history)
        thread_id = raw.headers["x-thread-id"]
        born = last = time.monotonic()
        gaps: list[float] = []
        n = 0
        # Between two turns (no lock protects the thread then) the janitor sweeps, until the thread is
        # twice the TTL old: a janitor that went by the thread's age, or missed a use, deletes it in one
        # of those sweeps. Each wait is on sweeps that ran, not on the clock, so a slow machine only
        # makes it longer.
        while time.monotonic() - born < 2 * TTL_S or n < 4:
            assert n < 40, "the janitor did not sweep often enough for the thread to grow old"
            _swept(bridge)
            gaps.append(time.monotonic() - last)
            history += [{"role": "assistant", "content": f"Echo: {history[-1]['content']}"}]
            history += [{"role": "user", "content": f"still here {n}"}]
            reply = turn(client, stream=False, model="demo-assistant", messages=history)
            assert reply.text == f"Echo: still here {n}"
            last = time.monotonic()
            n += 1
        # Every pause was well within the TTL (were one not, deleting the thread would have been right).
        assert max(gaps) < TTL_S, gaps
        assert not _deleted(bridge, [thread_id])
        assert len(bridge.emulator_threads()) == 1
