"""The admin API (admin keys only): the thread registry, listed, shown, deleted and purged."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, ValidationError

from app.api.deps import AdminDep
from app.core import ids
from app.errors import InvalidRequestError, NotFoundError
from app.settings import Seconds
from app.state.threads_admin import ThreadAdmin, ThreadFilter, record_json

router = APIRouter(prefix="/admin")


def _admin(request: Request) -> ThreadAdmin:
    admin: ThreadAdmin = request.app.state.admin
    return admin


def _thread_id(request: Request, thread_id: str) -> str:
    """A thread id outside the id grammar is the 404 of one the registry does not hold."""
    return ids.path_id(thread_id, request.app.state.settings.limits.max_id_length, _unknown_thread)


def _unknown_thread(thread_id: str) -> NotFoundError:
    return NotFoundError(f"No thread '{thread_id}' in the registry.", param="thread_id")


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    route: str | None = None
    owner: str | None = None
    older_than: Seconds | None = None
    """Only threads idle at least this long (a duration: 30s, 5m, 7d)."""
    dry_run: bool = False
    """Only report what would be deleted."""


class _Duration(BaseModel):
    value: Seconds


@router.get("/threads")
async def list_threads(
    request: Request,
    principal: AdminDep,
    route: str | None = None,
    owner: str | None = None,
    idle_for: Annotated[str | None, Query(description="a duration: 30s, 5m, 7d")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(description="the `next` of the previous page")] = None,
) -> dict[str, Any]:
    """A page of the registry. Each page reads a bounded part of it, so a page may be short or even
    empty while `next` is not null: keep going until `next` is null."""
    try:
        idle = _Duration(value=idle_for).value if idle_for is not None else None
    except ValidationError as exc:
        raise InvalidRequestError(
            f"Invalid idle_for {idle_for!r}: use a duration such as 30s, 5m or 7d.", param="idle_for"
        ) from exc
    flt = ThreadFilter(route=route, owner=owner, idle_for_s=idle)
    return await _admin(request).list(flt, limit=limit, after=after)


@router.get("/threads/{thread_id}")
async def show_thread(request: Request, principal: AdminDep, thread_id: str) -> dict[str, Any]:
    return record_json(await _admin(request).show(_thread_id(request, thread_id)))


@router.delete("/threads/{thread_id}")
async def delete_thread(request: Request, principal: AdminDep, thread_id: str) -> dict[str, Any]:
    await _admin(request).delete(_thread_id(request, thread_id))
    return {"id": thread_id, "object": "thread.deleted", "deleted": True}


@router.post("/threads/purge")
async def purge_threads(request: Request, principal: AdminDep, body: PurgeRequest) -> dict[str, Any]:
    flt = ThreadFilter(route=body.route, owner=body.owner, idle_for_s=body.older_than)
    report = await _admin(request).purge(flt, dry_run=body.dry_run)
    if body.dry_run:
        return {"dry_run": True, "would_delete": report.matched, "count": len(report.matched)}
    return {"deleted": report.deleted, "failed": report.failed, "count": len(report.deleted)}
