"""`GET /admin/usage` (admin keys only): turns, Azure's tokens and errors per owner and route, by UTC day."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request

from app.api.deps import AdminDep
from app.errors import InvalidRequestError
from app.state.accounting import Accounting

router = APIRouter(prefix="/admin")

MAX_DAYS = 400
"""Day buckets are kept 400 days (`app.state.accounting.USAGE_TTL_S`)."""
DEFAULT_DAYS = 30


def _date(value: str | None, param: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError as exc:
        raise InvalidRequestError(
            f"Invalid {param} {value!r}: use a UTC date such as 2026-12-01.", param=param
        ) from exc


def days_between(since: str | None, until: str | None, *, today: dt.date | None = None) -> list[str]:
    """The UTC days from `since` to `until`, both included (default: the 30 days up to today)."""
    last = _date(until, "until") or today or dt.datetime.now(dt.UTC).date()
    first = _date(since, "since") or last - dt.timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise InvalidRequestError("since is after until.", param="since")
    count = (last - first).days + 1
    if count > MAX_DAYS:
        raise InvalidRequestError(f"At most {MAX_DAYS} days at a time (usage is kept that long).", param="since")
    return [(first + dt.timedelta(days=n)).isoformat() for n in range(count)]


def grouping(group_by: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in group_by.split(",") if p.strip())
    unknown = [p for p in parts if p not in ("owner", "route")]
    if unknown:
        raise InvalidRequestError(f"Invalid group_by {group_by!r}: use owner, route or owner,route.", param="group_by")
    return parts


@router.get("/usage")
async def usage(
    request: Request,
    principal: AdminDep,
    since: str | None = None,
    until: str | None = None,
    group_by: str = "owner,route",
) -> dict[str, Any]:
    """Rows of `owner`, `route`, `turns`, `input_tokens`, `output_tokens`, `total_tokens`, `errors` (and
    `tool_rounds`, `background`), summed over the UTC days `since`..`until` (both included)."""
    days = days_between(since, until)
    accounting: Accounting = request.app.state.components.accounting
    rows = await accounting.usage(days, group_by=grouping(group_by))
    return {"object": "list", "since": days[0], "until": days[-1], "data": rows}
