"""Operator actions on the thread registry: list, show, delete, purge, reconcile (API and CLI share them).

Deleting always goes Azure first, registry second: a thread leaves the registry only once Azure
confirmed its deletion or answered 404 (DESIGN §3, invariant 2).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from app.core.records import ThreadRecord
from app.errors import BridgeError, InvalidRequestError, NotFoundError
from app.metrics import Metrics
from app.state.keys import BUCKETS
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


SCAN_BUDGET = 2000
"""Ids one admin page reads at most, whatever the filter matches."""
SCAN_STEP = 500


def parse_cursor(cursor: str | None) -> tuple[int, int, int]:
    """`<bucket>.<scan position>.<ids of that step already returned>`; raises InvalidRequestError."""
    if not cursor:
        return 0, 0, 0
    try:
        bucket, position, skip = (int(part) for part in cursor.split("."))
    except ValueError as exc:
        raise InvalidRequestError(
            f"Invalid cursor {cursor!r}: pass the `next` of a previous page.", param="after"
        ) from exc
    if not (0 <= bucket < BUCKETS and position >= 0 and skip >= 0):
        raise InvalidRequestError(f"Invalid cursor {cursor!r}: pass the `next` of a previous page.", param="after")
    return bucket, position, skip


def buckets_done(cursor: str | None) -> int:
    return BUCKETS if cursor is None else parse_cursor(cursor)[0]


@dataclass
class PurgeReport:
    deleted: list[str] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)
    """With dry_run: what would be deleted."""
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
        """A page of matching records and `next`, the cursor of the following page (None at the end).

        The registry is walked bucket by bucket (with `owner`, only that owner's index), and one page
        reads at most `SCAN_BUDGET` ids: a page may hold fewer than `limit` records, even none, while
        `next` is not None. Within a page, the most idle come first.
        """
        now = time.time()
        bucket, position, skip = parse_cursor(after)
        found: list[ThreadRecord] = []
        examined = 0
        while bucket < BUCKETS and len(found) < limit and examined < SCAN_BUDGET:
            ids, nxt = await self.store.scan_bucket(bucket, position, count=SCAN_STEP, owner=flt.owner)
            examined += max(1, len(ids))
            taken = skip
            for record in await self.store.get_threads(ids[skip:]) if ids[skip:] else []:
                taken += 1
                if record is not None and flt.matches(record, now):
                    found.append(record)
                    if len(found) == limit:
                        break
            if taken < len(ids):
                skip = taken  # the rest of this step's ids go on the next page (the same SCAN step again)
                break
            skip = 0
            bucket, position = (bucket + 1, 0) if nxt == 0 else (bucket, nxt)
        found.sort(key=lambda r: r.last_used_at)
        cursor = None if bucket >= BUCKETS else f"{bucket}.{position}.{skip}"
        return {"object": "list", "data": [record_json(r, now) for r in found], "next": cursor}

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

    async def purge(
        self,
        flt: ThreadFilter,
        *,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
        concurrency: int = 8,
    ) -> PurgeReport:
        """Delete every matching thread (Azure first), page by page; `progress(done, registry buckets
        done)` after each page. With `dry_run`, only report what would be deleted."""
        report = PurgeReport()
        after: str | None = None
        slots = asyncio.Semaphore(concurrency)

        async def one(thread_id: str) -> None:
            async with slots:
                try:
                    await self.delete(thread_id)
                    report.deleted.append(thread_id)
                except NotFoundError:
                    pass  # gone meanwhile (the janitor, or a page seen twice)
                except BridgeError as exc:
                    report.failed[thread_id] = exc.message

        while True:
            page = await self.list(flt, limit=500, after=after)
            ids = [r["thread_id"] for r in page["data"]]
            if dry_run:
                report.matched += ids
            else:
                async with asyncio.TaskGroup() as group:
                    for thread_id in ids:
                        group.create_task(one(thread_id))
            after = page["next"]
            if progress is not None:
                progress(len(report.matched) if dry_run else len(report.deleted), buckets_done(after))
            if after is None:
                return report

    async def reconcile(
        self,
        listers: Mapping[str, ThreadLister],
        *,
        adopt: bool = False,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> ReconcileReport:
        """Find threads the bridge tagged on Azure but has no record of (a crash between create and
        record) on routes whose API can list threads; delete them, or adopt them into the registry."""
        report = ReconcileReport()
        seen: set[str] = set()
        for done, (route, lister) in enumerate(listers.items(), start=1):
            if progress is not None:
                progress(len(report.orphans), done - 1)
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
        if progress is not None:
            progress(len(report.orphans), len(listers))
        return report
