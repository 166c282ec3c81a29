"""Carrying one Assistants thread to a Foundry v2 conversation: read, fill, verify, switch (docs/migration.md).

Under the thread's lock (a renewed lease, the one turns take), so no turn runs on the thread meanwhile and
no two processes carry it at once. Resumable: the conversation being filled is recorded in the thread's
record as soon as Azure made it (`CarryStore.begin`), and a carry that finds one continues after the
items Azure already holds (batches are whole requests, so that count says where to go on). Verified:
the conversation must hold exactly the items mapped from the thread before the switch. Azure's 429s are
waited out per Retry-After (the upstream client's own retries first, then this module's, to the deadline).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from app.backends.assistants.client import AssistantsClient
from app.backends.foundry.client import FoundryClient
from app.backends.lease import Lease, LeasePolicy
from app.core.background import BackgroundTasks
from app.core.carry_map import ACTIVE_RUN, BATCH, Carried, carry_items, reply_runs
from app.core.records import ThreadRecord
from app.errors import BridgeError, ConflictError, NotFoundError, RateLimitError, UpstreamError
from app.metrics import Metrics
from app.state.carry_store import CarriedRecord, CarryStore
from app.state.store import RedisStore

log = logging.getLogger("agent_bridge.carry")

T = TypeVar("T")

CARRY_TIMEOUT_S = 300.0


class CarryDeferred(ConflictError):
    """The thread cannot be carried now (a run is active or waits for tool outputs, or a turn holds it)."""


@dataclass(frozen=True)
class ThreadRead:
    carried: Carried
    active_run: dict[str, Any] | None
    reads: int
    """Upstream requests the read took."""


@dataclass(frozen=True)
class Outcome:
    thread_id: str
    conversation_id: str
    items: int
    lost: tuple[str, ...]
    resumed: bool
    requests: int


class Carrier:
    """Carries the threads of Foundry v2 routes that have `migrate_from` (one source and one target client each)."""

    def __init__(
        self,
        *,
        store: RedisStore,
        carry: CarryStore,
        sources: Mapping[str, AssistantsClient],
        targets: Mapping[str, FoundryClient],
        keep_source: Mapping[str, float],
        thread_ttl_s: float,
        tasks: BackgroundTasks,
        lease: LeasePolicy,
        lock_wait_s: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.carry_store = carry
        self.sources = sources
        self.targets = targets
        self.keep_source = keep_source
        self.thread_ttl_s = thread_ttl_s
        self.tasks = tasks
        self.lease = lease
        self.lock_wait_s = lock_wait_s
        self.metrics = metrics

    def migrating(self, route: str) -> bool:
        return route in self.sources and route in self.targets

    # -- reading -----------------------------------------------------------------------------------

    async def read(self, route: str, thread_id: str, deadline: float) -> ThreadRead:
        """The thread's messages (every page, oldest first), its runs, and the steps of each run that replied."""
        source = self.sources[route]
        runs, messages = await asyncio.gather(
            self._patient(lambda: source.thread_runs(thread_id, deadline), deadline),
            self._patient(lambda: source.thread_messages(thread_id, deadline), deadline),
        )
        active = next((r for r in reversed(runs) if r.get("status") in ACTIVE_RUN), None)
        # A run that had no tools made no tool calls: its steps hold only its message, which is listed already.
        toolless = {str(r["id"]) for r in runs if not r.get("tools")}
        wanted = [run for run in reply_runs(messages) if run not in toolless]
        wanted += [
            str(r["id"])
            for r in runs
            if r["id"] not in wanted and r["id"] not in toolless and r.get("status") not in ACTIVE_RUN
        ]
        listed = await asyncio.gather(
            *(self._patient(partial(source.run_steps, thread_id, run, deadline), deadline) for run in wanted)
        )
        steps = dict(zip(wanted, listed, strict=True))
        carried = carry_items(messages, steps, [str(r["id"]) for r in runs])
        pages = max(1, -(-len(messages) // 100)) + max(1, -(-len(runs) // 100))
        return ThreadRead(carried=carried, active_run=active, reads=pages + len(wanted))

    # -- one carry, under the thread's lock ----------------------------------------------------------

    async def ensure(self, thread_id: str, *, owner: str, route: str, deadline: float) -> str | None:
        """The conversation a thread continues on, carrying it first if needed (the lazy path).

        None when the bridge has no record of the thread for this owner and route (the caller starts afresh)."""
        done = await self.carry_store.carried(thread_id)
        if done is not None:
            return done.conversation_id if done.owner == owner and done.route == route else None
        record = await self.store.get_thread(thread_id, owner)
        if record is None or record.route != route:
            return None
        try:
            outcome = await self.carry(record, wait_s=self.lock_wait_s, cancel_waiting=True, deadline=deadline)
        except NotFoundError:
            log.warning("thread %s is gone upstream: its conversation starts afresh on v2", thread_id)
            return None
        if outcome is not None:
            return outcome.conversation_id
        done = await self.carry_store.carried(thread_id)  # carried by another turn or process meanwhile
        return done.conversation_id if done is not None and done.owner == owner else None

    async def carry(
        self, record: ThreadRecord, *, wait_s: float = 0.0, cancel_waiting: bool = False, deadline: float | None = None
    ) -> Outcome | None:
        """Carry one thread (None if it was carried meanwhile). Raises CarryDeferred when it cannot be now."""
        thread_id = record.thread_id
        token = await self.store.acquire_lock(thread_id, ttl_ms=self.lease.ttl_ms, wait_s=wait_s)
        if token is None:
            raise CarryDeferred(f"Conversation {thread_id} is in use; try again shortly.", code="conversation_busy")
        lease = Lease(self.store, self.tasks, self.lease, thread_id, token)
        try:
            if await self.carry_store.carried(thread_id) is not None:
                return None
            deadline = deadline if deadline is not None else time.monotonic() + CARRY_TIMEOUT_S
            return await self._carry(record, cancel_waiting=cancel_waiting, deadline=deadline)
        except CarryDeferred:
            raise
        except BridgeError:
            await self._count(record.route, "failed")
            raise
        finally:
            await lease.release(None)

    async def _carry(self, record: ThreadRecord, *, cancel_waiting: bool, deadline: float) -> Outcome:
        route, thread_id = record.route, record.thread_id
        target = self.targets[route]
        read = await self.read(route, thread_id, deadline)
        requests = read.reads
        if read.active_run is not None:
            if not cancel_waiting:
                raise CarryDeferred(
                    f"Conversation {thread_id} has a run that is {read.active_run.get('status')}: it is carried "
                    "once that run ends (a client's tool outputs finish it on the Assistants side).",
                    code="run_active",
                )
            # A new message while a run waits: the Assistants route would cancel that run too.
            await self._cancel(route, thread_id, read.active_run, deadline)
            read = await self.read(route, thread_id, deadline)
            requests += read.reads + 2
        carried = read.carried
        conversation = await self.carry_store.progress(thread_id)
        resumed = conversation is not None
        held = 0
        if conversation is not None:
            try:
                held = await self._count_items(target, conversation, deadline)
                requests += 1
            except NotFoundError:
                conversation, resumed = None, False
        if conversation is None:
            first = list(carried.items[:BATCH])
            body = {"items": first, "metadata": {"agent_bridge_thread": thread_id}}
            created = await self._patient(lambda: target.conversation_request("POST", None, json=body), deadline)
            conversation = str(created["id"])
            await self.carry_store.begin(thread_id, conversation)
            held, requests = len(first), requests + 1
        for batch in carried.batches(held):
            request = partial(target.conversation_request, "POST", conversation, "/items", json={"items": batch})
            await self._patient(request, deadline)
            requests += 1
        found = await self._count_items(target, conversation, deadline)
        requests += 1
        if found != len(carried.items):
            raise UpstreamError(
                f"Carrying {thread_id}: conversation {conversation} holds {found} items, {len(carried.items)} "
                "expected; the thread stays on its source (nothing was switched).",
                code="carry_unverified",
            )
        if not await self.store.record_conversation(conversation, record.owner):
            raise UpstreamError(f"Conversation {conversation} is recorded for another owner.", code="carry_owner")
        now = time.time()
        due = now + self.keep_source.get(route, 7 * 86400.0)
        await self.carry_store.switch(
            CarriedRecord(thread_id, conversation, record.owner, route, now),
            due=due,
            idle_score=due - self.thread_ttl_s,
            metadata=record.metadata,
        )
        if carried.lost:
            log.info("carried %s to %s; not carried: %s", thread_id, conversation, "; ".join(carried.lost))
        if self.metrics is not None:
            self.metrics.carried.labels("carried").inc()
        return Outcome(thread_id, conversation, len(carried.items), carried.lost, resumed, requests)

    async def _cancel(self, route: str, thread_id: str, run: dict[str, Any], deadline: float) -> None:
        source = self.sources[route]
        calls = (((run.get("required_action") or {}).get("submit_tool_outputs") or {}).get("tool_calls")) or []
        try:
            await source.cancel_run(thread_id, str(run["id"]), deadline)
        except BridgeError:
            pass  # it may have ended meanwhile: the status below says
        delay = 0.05
        while time.monotonic() < deadline:
            status = (await source.get_run(thread_id, str(run["id"]), deadline)).get("status")
            if status not in ACTIVE_RUN:
                break
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
        await self.store.delete_calls([str(c.get("id")) for c in calls])

    async def _count_items(self, target: FoundryClient, conversation: str, deadline: float) -> int:
        params: dict[str, str] = {"limit": "100", "order": "asc"}
        total = 0
        while True:
            page = await self._patient(
                partial(target.conversation_request, "GET", conversation, "/items", params=params), deadline
            )
            data = page.get("data") or []
            total += len(data)
            if not data or not page.get("has_more"):
                return total
            params = {**params, "after": str(data[-1]["id"])}

    async def _patient(self, call: Callable[[], Awaitable[T]], deadline: float) -> T:
        """A call whose 429s are waited out per Retry-After (past the upstream client's retries), to the deadline."""
        while True:
            try:
                return await call()
            except RateLimitError as exc:
                wait = exc.retry_after if exc.retry_after is not None else 1.0
                if time.monotonic() + wait >= deadline:
                    raise
                await asyncio.sleep(wait)

    async def _count(self, route: str, what: str) -> None:
        if self.metrics is not None:
            self.metrics.carried.labels(what).inc()
        try:
            await self.carry_store.count(route, what)
        except BridgeError:
            pass


def busy(exc: BaseException) -> bool:
    return isinstance(exc, (CarryDeferred, ConflictError))
