"""Operator actions on the thread registry: list, show, delete, purge, reconcile (API and CLI share them).

Deleting always goes Azure first, registry second: a thread leaves the registry only once Azure
confirmed its deletion or answered 404 (DESIGN §3, invariant 2).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from app.core.records import ThreadRecord
from app.errors import BridgeError, NotFoundError
from app.metrics import Metrics
from app.state.store import RedisStore

ThreadDeleter = Callable[[str], Awaitable[None]]
ThreadLister = Callable[[], Awaitable[list[dict[str, Any]]]]
"""Lists a Foundry classic project's threads (id + metadata), all pages."""

BRIDGE_TAG = "agent-bridge"


@dataclass(frozen=True)
class ThreadFilter:
    route: str | None = None
    owner: str | None = None
    idle_for_s: float | None = None
    """Only threads unused for at least this long."""

    def matches(self, record: ThreadRecord, now: float) -> bool:
        return (
            (self.route is None or record.route == self.route)
            and (self.owner is None or record.owner == self.owner)
            and (self.idle_for_s is None or now - record.last_used_at >= self.idle_for_s)
        )


@dataclass
class PurgeReport:
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class ReconcileReport:
    orphans: list[str] = field(default_factory=list)
    """Threads tagged by the bridge on Azure but missing from the registry."""
    deleted: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    foreign: int = 0
    """Threads the bridge did not create (left alone)."""
    failed: dict[str, str] = field(default_factory=dict)


def record_json(record: ThreadRecord, now: float | None = None) -> dict[str, Any]:
    body = asdict(record)
    body["idle_s"] = round((now or time.time()) - record.last_used_at, 3)
    return body


class ThreadAdmin:
    def __init__(
        self, store: RedisStore, deleters: Mapping[str, ThreadDeleter], metrics: Metrics | None = None
    ) -> None:
        self.store = store
        self.deleters = deleters
        self.metrics = metrics

    async def list(self, flt: ThreadFilter, *, limit: int = 100, after: str | None = None) -> dict[str, Any]:
        """A page of records, most idle first; `next` is the cursor of the following page (or None)."""
        now = time.time()
        found: list[ThreadRecord] = []
        cursor = after
        while len(found) < limit:
            ids = await self.store.scan_threads(after=cursor, limit=200, owner=flt.owner)
            if not ids:
                return {"object": "list", "data": [record_json(r, now) for r in found], "next": None}
            for thread_id, record in zip(ids, await self.store.get_threads(ids), strict=True):
                cursor = thread_id
                if record is not None and flt.matches(record, now):
                    found.append(record)
                    if len(found) == limit:
                        break
        more = bool(await self.store.scan_threads(after=cursor, limit=1, owner=flt.owner))
        return {"object": "list", "data": [record_json(r, now) for r in found], "next": cursor if more else None}

    async def show(self, thread_id: str) -> ThreadRecord:
        record = await self.store.get_thread(thread_id)
        if record is None:
            raise NotFoundError(f"No thread '{thread_id}' in the registry.", param="thread_id")
        return record

    async def delete(self, thread_id: str) -> ThreadRecord:
        record = await self.show(thread_id)
        deleter = self.deleters.get(record.route)
        if deleter is None:
            raise BridgeError(f"The route {record.route!r} of this thread is no longer configured.")
        try:
            await deleter(thread_id)
        except NotFoundError:
            pass  # Azure no longer has it
        await self.store.forget_thread(thread_id)
        if self.metrics is not None:
            self.metrics.threads_deleted.labels("admin").inc()
        return record

    async def purge(self, flt: ThreadFilter) -> PurgeReport:
        report = PurgeReport()
        after: str | None = None
        matching: list[str] = []
        while True:
            page = await self.list(flt, limit=500, after=after)
            matching += [r["thread_id"] for r in page["data"]]
            after = page["next"]
            if after is None:
                break
        for thread_id in matching:
            try:
                await self.delete(thread_id)
                report.deleted.append(thread_id)
            except BridgeError as exc:
                report.failed[thread_id] = exc.message
        return report

    async def reconcile(
        self, listers: Mapping[str, ThreadLister], *, adopt: bool = False, dry_run: bool = False
    ) -> ReconcileReport:
        """Find threads the bridge tagged on Azure but has no record of (a crash between create and
        record) on routes whose API can list threads; delete them, or adopt them into the registry."""
        report = ReconcileReport()
        seen: set[str] = set()
        for route, lister in listers.items():
            for thread in await lister():
                thread_id = thread["id"]
                metadata = thread.get("metadata") or {}
                if metadata.get("created_by") != BRIDGE_TAG:
                    report.foreign += 1
                    continue
                if thread_id in seen or await self.store.get_thread(thread_id) is not None:
                    seen.add(thread_id)
                    continue
                seen.add(thread_id)
                report.orphans.append(thread_id)
                if dry_run:
                    continue
                try:
                    if adopt:
                        created = float(thread.get("created_at") or time.time())
                        await self.store.record_thread(
                            ThreadRecord(
                                thread_id=thread_id,
                                route=metadata.get("route") or route,
                                backend="assistants",
                                owner=metadata.get("owner") or "anonymous",
                                created_at=created,
                                last_used_at=created,
                                metadata={"adopted": "true"},
                            )
                        )
                        report.adopted.append(thread_id)
                    else:
                        try:
                            await self.deleters[route](thread_id)
                        except NotFoundError:
                            pass
                        report.deleted.append(thread_id)
                except BridgeError as exc:
                    report.failed[thread_id] = exc.message
        return report
