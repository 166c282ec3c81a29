"""The janitor: deletes threads idle longer than the TTL, on Azure first, then from the registry.

It runs in every replica. The idle index is sharded into buckets (`app.state.keys`); a sweep reads
each bucket's size and expired count in one pipeline (that is the backlog metric), then takes a
lease per bucket with work, so replicas sweep disjoint buckets in parallel. Within a sweep, up to
`concurrency` deletions run at once. Each thread is claimed atomically before it is deleted, so two
janitors never delete the same thread: the claim re-scores it `claim_s` into the future rather than
removing it, so a janitor killed mid-deletion leaves it due again, never in no index. A deletion that fails puts the
thread back with a backoff score; the thread stays in the registry until Azure confirms (or answers
404). A thread carried to a Foundry v2 conversation is due when its route's `keep_source` has passed since
the carry was verified (its route, now a v2 route with `migrate_from`, still has a deleter for it). A
thread whose route is no longer configured cannot be deleted: it is reported (log, metric)
and parked far in the future instead of being retried; a later sweep that finds its route
configured again puts it back on the work list.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from app.core.records import ThreadRecord
from app.errors import BridgeError, NotFoundError
from app.metrics import Metrics
from app.state.store import RedisStore

log = logging.getLogger("agent_bridge.janitor")

ThreadDeleter = Callable[[str], Awaitable[None]]
"""Deletes one thread upstream; raises NotFoundError when Azure no longer has it."""

PARKED_SCORE = 1e12
"""The idle score of a thread whose route is gone (year 33658): listed, never expired."""


def _last_use(record: ThreadRecord, ttl_s: float) -> float:
    """The idle score: the last use, or for a thread carried to Foundry v2 the time that makes it due when its
    `keep_source` has passed since its conversation was verified (`app.backends.carry`), never earlier."""
    due = record.metadata.get("carried_due")
    return float(due) - ttl_s if due is not None else record.last_used_at


@dataclass
class SweepResult:
    deleted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Claimed but left alone: in use again, or busy with a turn."""
    stranded: list[str] = field(default_factory=list)
    """Expired, but their route is no longer configured: parked and reported."""
    busy_buckets: int = 0
    """Buckets with work that another replica was sweeping."""
    backlog: int = 0
    ran: bool = True
    """False when every bucket with work was leased by another replica."""


@dataclass(frozen=True)
class JanitorPolicy:
    ttl_s: float
    interval_s: float = 60.0
    batch: int = 200
    """Threads taken from one bucket per sweep."""
    concurrency: int = 16
    """Azure deletions in flight at once per replica (16 at 100 ms each: 160 per second)."""
    lease_s: float = 120.0
    claim_s: float = 300.0
    """A claimed thread whose deletion was never finished (its janitor died) is due again after this."""
    retry_base_s: float = 30.0
    retry_max_s: float = 3600.0


class Janitor:
    def __init__(
        self,
        store: RedisStore,
        deleters: Mapping[str, ThreadDeleter],
        policy: JanitorPolicy,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.deleters = deleters
        self.policy = policy
        self.failures: dict[str, int] = {}
        self.counters = {"sweeps": 0, "deleted": 0, "failed": 0, "stranded": 0}

    async def counters_snapshot(self) -> dict[str, int]:
        return dict(self.counters)

    async def sweep(self, now: float | None = None) -> SweepResult:
        now = time.time() if now is None else now
        cutoff = now - self.policy.ttl_s
        counts = await self.store.bucket_backlog(before=cutoff)
        result = SweepResult(backlog=sum(expired for _, expired in counts))
        if self.metrics is not None:
            self.metrics.threads_live.set(sum(total for total, _ in counts))
            self.metrics.janitor_backlog.set(result.backlog)
        work = [bucket for bucket, (_, expired) in enumerate(counts) if expired]
        random.shuffle(work)  # replicas starting together then rarely contend for the same lease
        slots = asyncio.Semaphore(self.policy.concurrency)
        swept = 0
        async with asyncio.TaskGroup() as group:
            for bucket in work:
                lease = await self.store.acquire_bucket_lease(bucket, ttl_ms=int(self.policy.lease_s * 1000))
                if lease is None:
                    result.busy_buckets += 1
                    continue
                swept += 1
                group.create_task(self._sweep_bucket(bucket, lease, cutoff, now, slots, result))
        result.ran = swept > 0 or not work
        self.counters["sweeps"] += 1
        self.counters["deleted"] += len(result.deleted)
        self.counters["failed"] += len(result.failed)
        self.counters["stranded"] += len(result.stranded)
        if self.metrics is not None:
            self.metrics.janitor_sweeps.labels("true" if result.ran else "false").inc()
            self.metrics.threads_deleted.labels("janitor").inc(len(result.deleted))
            self.metrics.thread_deletions_failed.inc(len(result.failed))
            self.metrics.janitor_backlog.set(max(0, result.backlog - len(result.deleted)))
        if result.deleted or result.failed:
            log.info("janitor: deleted %d threads, %d failed", len(result.deleted), len(result.failed))
        return result

    async def _sweep_bucket(
        self, bucket: int, lease: str, cutoff: float, now: float, slots: asyncio.Semaphore, result: SweepResult
    ) -> None:
        try:
            ids = await self.store.idle_threads(bucket, before=cutoff, limit=self.policy.batch)
            due_again = cutoff + self.policy.claim_s  # a claim nobody finishes comes due after claim_s

            async def one(thread_id: str) -> None:
                async with slots:
                    try:
                        claimed = await self.store.claim_idle(thread_id, expired_by=cutoff, due_again=due_again)
                        if claimed:  # else another janitor has it
                            await self._expire(thread_id, cutoff, now, result)
                    except BridgeError as exc:
                        log.warning("janitor: %s: %s", thread_id, exc.message)
                        result.failed.append(thread_id)

            async with asyncio.TaskGroup() as group:
                for thread_id in ids:
                    group.create_task(one(thread_id))
        except BridgeError as exc:
            log.warning("janitor: bucket %d: %s", bucket, exc.message)
        finally:
            try:
                await self.store.release_bucket_lease(bucket, lease)
            except BridgeError:
                pass  # it expires on its own

    async def _expire(self, thread_id: str, cutoff: float, now: float, result: SweepResult) -> None:
        record = await self.store.get_thread(thread_id)
        if record is None:
            await self.store.drop_idle(thread_id)  # a stale index entry
            result.skipped.append(thread_id)
            return
        used = _last_use(record, self.policy.ttl_s)
        if used > cutoff:
            await self.store.requeue_idle(thread_id, used)
            result.skipped.append(thread_id)
            return
        deleter = self.deleters.get(record.route)
        if deleter is None:
            await self.store.requeue_idle(thread_id, PARKED_SCORE)
            log.error(
                "janitor: thread %s belongs to route %r, which is no longer configured: it cannot be deleted "
                "on Azure and is parked. Configure the route again (the janitor then deletes it), or delete "
                "the thread on Azure and run `agent-bridge threads purge --route %s`.",
                thread_id,
                record.route,
                record.route,
            )
            if self.metrics is not None:
                self.metrics.janitor_stranded.inc()
            result.stranded.append(thread_id)
            return
        token = await self.store.acquire_lock(thread_id, ttl_ms=60_000, wait_s=0)
        if token is None:
            await self.store.requeue_idle(thread_id, used)
            result.skipped.append(thread_id)
            return
        try:
            try:
                await deleter(thread_id)
            except NotFoundError:
                pass  # Azure no longer has it: as good as deleted
            await self.store.forget_thread(thread_id)
            self.failures.pop(thread_id, None)
            result.deleted.append(thread_id)
        except BridgeError as exc:
            attempts = self.failures.get(thread_id, 0) + 1
            self.failures[thread_id] = attempts
            delay = min(self.policy.retry_max_s, self.policy.retry_base_s * 2 ** (attempts - 1))
            # Back in the work list, due again after the backoff (score = when it looks expired).
            await self.store.requeue_idle(thread_id, now + delay - self.policy.ttl_s)
            log.warning("janitor: deleting %s failed (attempt %d): %s", thread_id, attempts, exc.message)
            result.failed.append(thread_id)
        finally:
            await self.store.release_lock(thread_id, token)

    async def unpark(self) -> int:
        """Put parked threads whose route is configured again back on the work list; returns how many."""
        moved = 0
        for thread_id in await self.store.parked_threads(above=PARKED_SCORE - 1):
            record = await self.store.get_thread(thread_id)
            if record is not None and record.route in self.deleters:
                await self.store.requeue_idle(thread_id, _last_use(record, self.policy.ttl_s))
                moved += 1
        return moved

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every `interval_s` (with jitter, so replicas spread out) until `stop` is set."""
        try:
            if await self.unpark():
                log.info("janitor: threads of routes configured again are back on the work list")
        except BridgeError as exc:
            log.warning("janitor: %s", exc.message)
        while not stop.is_set():
            try:
                await self.sweep()
            except BridgeError as exc:
                log.warning("janitor: sweep failed: %s", exc.message)
            delay = self.policy.interval_s * random.uniform(0.8, 1.2)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
