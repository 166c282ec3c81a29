"""Human output of the operator CLI: thread tables with local times and idle durations."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def duration(seconds: float) -> str:
    """`93784` -> `1d 2h`: the two largest units, which is what a person reads at a glance."""
    if seconds < 1:
        return "0s"
    parts = []
    rest = int(seconds)
    for unit, size in _UNITS:
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def local_time(epoch: float) -> str:
    """An epoch time in this machine's zone, to the minute (`2025-03-01 14:05`)."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, the header first."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def threads_table(page: Mapping[str, Any]) -> str:
    """A page of `ThreadAdmin.list` as a table, with the cursor of the next page under it."""
    data = page["data"]
    if not data:
        return "No registered threads match."
    rows = [
        [
            t["thread_id"],
            t["route"],
            t["owner"],
            str(t["turns"]),
            local_time(t["created_at"]),
            local_time(t["last_used_at"]),
            duration(t["idle_s"]),
        ]
        for t in data
    ]
    out = table(["THREAD", "ROUTE", "OWNER", "TURNS", "CREATED", "LAST USED", "IDLE FOR"], rows)
    out += f"\n{len(data)} thread{'s' if len(data) != 1 else ''}"
    if page.get("next"):
        out += f"; more with --after {page['next']}"
    return out
