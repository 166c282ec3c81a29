"""The admin API's migrations (admin keys only): start a route's bulk migration to Foundry v2, read its status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import AdminDep
from app.backends.migration import Migrations
from app.errors import NotFoundError

router = APIRouter(prefix="/admin")


class MigrationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    route: str
    dry_run: bool = False
    """Only read the threads and report the plan."""
    concurrency: int = Field(default=16, ge=1, le=256)


def _migrations(request: Request) -> Migrations:
    migrations: Migrations = request.app.state.migrations
    return migrations


@router.post("/migrations", status_code=202)
async def start_migration(request: Request, principal: AdminDep, body: MigrationRequest) -> dict[str, Any]:
    """Starts carrying the route's threads (or, with dry_run, planning it); poll `GET /admin/migrations/{id}`."""
    migrations = _migrations(request)
    summary = migrations.start(body.route, dry_run=body.dry_run, concurrency=body.concurrency)
    return {"id": migrations.id_of(summary), "object": "migration", **summary.json()}


@router.get("/migrations/{migration_id}")
async def migration_status(request: Request, principal: AdminDep, migration_id: str) -> dict[str, Any]:
    migrations = _migrations(request)
    summary = migrations.status(migration_id)
    if summary is None:
        raise NotFoundError(f"Migration '{migration_id}' not found (statuses live in the replica that ran it).")
    stats = await migrations.carrier.carry_store.stats(summary.route) if migrations.carrier else {}
    return {"id": migration_id, "object": "migration", **summary.json(), "route_totals": stats}
