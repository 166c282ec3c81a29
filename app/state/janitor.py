"""The janitor: deletes threads idle longer than the TTL, on Azure first, then from the registry.

It runs in every replica; a Redis lease lets one sweep run at a time, and each thread is claimed
atomically (ZREM from `threads:idle`) before it is deleted, so two janitors never delete the same
thread. A sweep reads only the expired end of the idle zset: its cost grows with the number of
expired threads, not with all threads. A deletion that fails puts the thread back with a backoff
score; the thread stays in the registry until Azure confirms (or answers 404).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from app.errors import BridgeError, NotFoundError
from app.metrics import Metrics
from app.state.store import RedisStore

log = logging.getLogger("agent_bridge.janitor")

ThreadDeleter = Callable[[str], Awaitable[None]]
"""Deletes one thread upstream; raises NotFoundError when Azure no longer has it."""


@dataclass
class SweepResult:
    deleted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Claimed but left alone: in use again, or busy with a turn."""
    ran: bool = True
    """False when another replica held the lease."""


@dataclass(frozen=True)
class JanitorPolicy:
    ttl_s: float
    interval_s: float = 60.0
    batch: int = 200
    lease_s: float = 120.0
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
        self.counters = {"sweeps": 0, "deleted": 0, "failed": 0}

    async def counters_snapshot(self) -> dict[str, int]:
        return dict(self.counters)

    async def sweep(self, now: float | None = None) -> SweepResult:
        now = time.time() if now is None else now
        lease = await self.store.acquire_lease("janitor", ttl_ms=int(self.policy.lease_s * 1000))
        if lease is None:
            if self.metrics is not None:
                self.metrics.janitor_sweeps.labels("false").inc()
            return SweepResult(ran=False)
        result = SweepResult()
        try:
            cutoff = now - self.policy.ttl_s
            for thread_id in await self.store.idle_threads(before=cutoff, limit=self.policy.batch):
                if not await self.store.claim_idle(thread_id):
                    continue  # another janitor has it
                await self._expire(thread_id, cutoff, now, result)
        finally:
            await self.store.release_lease("janitor", lease)
        self.counters["sweeps"] += 1
        self.counters["deleted"] += len(result.deleted)
        self.counters["failed"] += len(result.failed)
        if self.metrics is not None:
            self.metrics.janitor_sweeps.labels("true").inc()
            self.metrics.threads_deleted.labels("janitor").inc(len(result.deleted))
            self.metrics.thread_deletions_failed.inc(len(result.failed))
        if result.deleted or result.failed:
            log.info("janitor: deleted %d threads, %d failed", len(result.deleted), len(result.failed))
        return result

    async def _expire(self, thread_id: str, cutoff: float, now: float, result: SweepResult) -> None:
        record = await self.store.get_thread(thread_id)
        if record is None:
            result.skipped.append(thread_id)  # a stale zset entry: the claim removed it
            return
        if record.last_used_at > cutoff:
            await self.store.requeue_idle(thread_id, record.last_used_at)
            result.skipped.append(thread_id)
            return
        token = await self.store.acquire_lock(thread_id, ttl_ms=60_000, wait_s=0)
        if token is None:
            await self.store.requeue_idle(thread_id, record.last_used_at)
            result.skipped.append(thread_id)
            return
        try:
            deleter = self.deleters.get(record.route)
            if deleter is None:
                raise BridgeError(f"no route {record.route!r} configured to delete this thread")
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

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every `interval_s` (with jitter, so replicas spread out) until `stop` is set."""
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
