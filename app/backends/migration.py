"""Bulk migration of a route's threads to Foundry v2 conversations: plan, carry, status; and the flip-back guard.

The plan reads every thread of the route that is not carried yet (messages, runs, steps: no writes) and
says, per owner, how many conversations and messages would move, what cannot be carried, and how many
upstream requests it takes. The run carries them `concurrency` at a time through `Carrier.carry`
(leases, resume, verification are its own); a thread whose run is active or that a turn holds is
deferred (a later run, or its next turn, carries it). A second run finds nothing left to carry.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from app.backends.carry import Carrier, CarryDeferred
from app.core.carry_map import BATCH
from app.core.records import ThreadRecord
from app.errors import BridgeError, ConfigError, InvalidRequestError
from app.settings import Settings
from app.state.carry_store import CarryStore
from app.state.keys import BUCKETS
from app.state.store import RedisStore

Progress = Callable[[int, int], None]
"""(threads done, threads in all)."""


@dataclass
class OwnerPlan:
    conversations: int = 0
    messages: int = 0
    items: int = 0
    waiting: int = 0
    """Conversations with a run active or waiting for tool outputs (carried once it ends)."""


@dataclass
class Plan:
    route: str
    owners: dict[str, OwnerPlan] = field(default_factory=dict)
    lost: dict[str, list[str]] = field(default_factory=dict)
    """Per thread: what cannot be carried."""
    requests: int = 0
    """Upstream requests the migration takes (the reads again, the creates and adds, the verifications)."""
    already: int = 0
    """Threads of the route carried before."""
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def conversations(self) -> int:
        return sum(o.conversations for o in self.owners.values())

    def json(self) -> dict[str, Any]:
        body = asdict(self)
        body["conversations"] = self.conversations
        return body


@dataclass
class Summary:
    route: str
    dry_run: bool = False
    state: str = "running"
    total: int = 0
    carried: int = 0
    resumed: int = 0
    deferred: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    lost: dict[str, list[str]] = field(default_factory=dict)
    requests: int = 0
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    plan: dict[str, Any] | None = None

    def json(self) -> dict[str, Any]:
        return asdict(self)


class Migration:
    """Plans and runs the migration of one route (through a `Carrier` that knows the route)."""

    def __init__(self, store: RedisStore, carrier: Carrier, route: str) -> None:
        if not carrier.migrating(route):
            raise InvalidRequestError(
                f"Route '{route}' has no migrate_from: set it to the Assistants agent the route served before.",
                param="route",
            )
        self.store = store
        self.carrier = carrier
        self.route = route

    async def pending(self) -> tuple[list[ThreadRecord], int]:
        """The route's threads not carried yet, and how many were carried before."""
        found: list[ThreadRecord] = []
        already = 0
        for bucket in range(BUCKETS):
            position: int | None = None
            while position != 0:
                ids, position = await self.store.scan_bucket(bucket, position or 0, count=500)
                if not ids:
                    continue
                for record in await self.store.get_threads(ids):
                    if record is None or record.route != self.route or record.backend != "assistants":
                        continue
                    if "carried_due" in record.metadata:
                        already += 1
                    else:
                        found.append(record)
        found.sort(key=lambda r: r.created_at)
        return found, already

    async def plan(self, *, concurrency: int = 16, progress: Progress | None = None, limit: int | None = None) -> Plan:
        records, already = await self.pending()
        records = records[:limit]
        plan = Plan(route=self.route, already=already)
        slots = asyncio.Semaphore(concurrency)
        done = 0

        async def one(record: ThreadRecord) -> None:
            nonlocal done
            async with slots:
                try:
                    read = await self.carrier.read(self.route, record.thread_id, time.monotonic() + 300)
                except BridgeError as exc:
                    plan.unreadable[record.thread_id] = exc.message
                    return
                owner = plan.owners.setdefault(record.owner, OwnerPlan())
                owner.conversations += 1
                owner.messages += read.carried.messages
                owner.items += len(read.carried.items)
                owner.waiting += read.active_run is not None
                if read.carried.lost:
                    plan.lost[record.thread_id] = list(read.carried.lost)
                batches = max(1, -(-len(read.carried.items) // BATCH))
                plan.requests += read.reads + batches + 1
                done += 1
                if progress is not None:
                    progress(done, len(records))

        async with asyncio.TaskGroup() as group:
            for record in records:
                group.create_task(one(record))
        return plan

    async def run(
        self,
        *,
        concurrency: int = 16,
        progress: Progress | None = None,
        summary: Summary | None = None,
        limit: int | None = None,
    ) -> Summary:
        """Carry the route's threads not carried yet (the oldest `limit` of them, if given)."""
        summary = summary or Summary(route=self.route)
        records, _ = await self.pending()
        records = records[:limit]
        summary.total = len(records)
        slots = asyncio.Semaphore(concurrency)
        metrics = self.carrier.metrics
        if metrics is not None:
            metrics.carry_pending.set(len(records))
        done = 0

        async def one(record: ThreadRecord) -> None:
            nonlocal done
            async with slots:
                try:
                    outcome = await self.carrier.carry(record)
                except CarryDeferred as exc:
                    summary.deferred[record.thread_id] = exc.message
                except BridgeError as exc:
                    summary.failed[record.thread_id] = exc.message
                else:
                    if outcome is not None:
                        summary.carried += 1
                        summary.resumed += outcome.resumed
                        summary.requests += outcome.requests
                        if outcome.lost:
                            summary.lost[record.thread_id] = list(outcome.lost)
                done += 1
                if metrics is not None:
                    metrics.carry_pending.set(len(records) - summary.carried)
                if progress is not None:
                    progress(done, len(records))

        try:
            async with asyncio.TaskGroup() as group:
                for record in records:
                    group.create_task(one(record))
        finally:
            summary.state = "done" if not summary.failed else "done_with_failures"
            summary.finished_at = time.time()
        return summary


class Migrations:
    """Bulk migrations started through the admin API: one task each, their summaries kept in this process."""

    def __init__(self, store: RedisStore, carrier: Carrier | None) -> None:
        self.store = store
        self.carrier = carrier
        self.runs: dict[str, Summary] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, route: str, *, dry_run: bool, concurrency: int) -> Summary:
        if self.carrier is None:
            raise InvalidRequestError(f"Route '{route}' has no migrate_from.", param="route")
        migration = Migration(self.store, self.carrier, route)
        migration_id = "mig_" + secrets.token_hex(8)
        summary = Summary(route=route, dry_run=dry_run)
        self.runs[migration_id] = summary

        async def work() -> None:
            try:
                if dry_run:
                    summary.plan = (await migration.plan(concurrency=concurrency)).json()
                    summary.state, summary.finished_at = "done", time.time()
                else:
                    await migration.run(concurrency=concurrency, summary=summary)
            except BridgeError as exc:
                summary.state, summary.finished_at = "failed", time.time()
                summary.failed["*"] = exc.message

        task = asyncio.get_running_loop().create_task(work(), name=f"migration-{migration_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return summary

    def status(self, migration_id: str) -> Summary | None:
        return self.runs.get(migration_id)

    def id_of(self, summary: Summary) -> str:
        return next(k for k, v in self.runs.items() if v is summary)


async def refuse_flip_back(carry: CarryStore, settings: Settings) -> None:
    """Start-up: an Assistants route whose conversations were carried to v2 would answer them from the old
    threads, without the turns taken on v2. Refused, with what to do."""
    for name, route in settings.routes.items():
        if route.backend != "assistants":
            continue
        carried = (await carry.stats(name)).get("carried", 0)
        if carried:
            raise ConfigError(
                f"routes.{name}: {carried} conversations of this route were carried to Foundry v2 "
                "(migrate_from) and may have taken turns there; serving the route from Assistants again would "
                "drop those turns. Put the route back on its v2 agent (agent: ... with migrate_from), or, to "
                f"start over on Assistants deliberately, delete the key '{carry.key('carry', name)}' in Redis "
                "(the carried conversations are then no longer reachable through this route)."
            )
