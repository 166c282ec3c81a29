"""`agent-bridge usage`: turns, Azure's tokens and errors per owner and route, read straight from Redis."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from app.tables import table

COLUMNS = ("owner", "route", "turns", "input_tokens", "output_tokens", "total_tokens", "errors")


def usage_table(report: Mapping[str, Any]) -> str:
    """The rows as a table, numbers right-aligned, a total line under them."""
    rows: Sequence[Mapping[str, Any]] = report["data"]
    body = [[str(r[c]) for c in COLUMNS] for r in rows]
    totals = ["total", "", *(str(sum(int(r[c]) for r in rows)) for c in COLUMNS[2:])]
    widths = [max(len(h), *(len(line[i]) for line in [*body, totals])) for i, h in enumerate(COLUMNS)]
    numeric = range(2, len(COLUMNS))

    def cells(line: Sequence[str]) -> list[str]:
        return [cell.rjust(widths[i]) if i in numeric else cell for i, cell in enumerate(line)]

    out = table(cells(list(COLUMNS)), [cells(line) for line in [*body, totals]])
    return f"usage {report['since']} .. {report['until']} (UTC days)\n{out}"


def add_parser(command: Any, config_help: str, default_config: str) -> None:
    usage = command("usage", "turns, tokens and errors per owner (key) and route, by UTC day, from Redis")
    usage.add_argument("--config", default=default_config, help=config_help)
    usage.add_argument("--since", help="first UTC day (YYYY-MM-DD; default: 29 days before --until)")
    usage.add_argument("--until", help="last UTC day, included (default: today)")
    usage.add_argument("--group-by", default="owner,route", help="owner, route or owner,route")
    usage.add_argument("--json", action="store_true", help="print {since, until, data: [rows]} as JSON")
    usage.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from app.api.usage import days_between, grouping
    from app.errors import BridgeError
    from app.settings import load_settings
    from app.state.accounting import Accounting
    from app.state.connect import build

    settings = load_settings(args.config)
    if settings.redis_url is None:
        print("agent-bridge usage: set REDIS_URL: usage lives in the service's Redis.", file=sys.stderr)
        return 2

    async def read() -> dict[str, Any]:
        days = days_between(args.since, args.until)
        connection = build(settings.redis_url, settings.redis)
        try:
            accounting = Accounting(connection.client, prefix=settings.redis_prefix, in_flight_lapse_s=60.0)
            rows = await accounting.usage(days, group_by=grouping(args.group_by))
        finally:
            await connection.aclose()
        return {"object": "list", "since": days[0], "until": days[-1], "data": rows}

    try:
        report = asyncio.run(read())
    except BridgeError as exc:
        print(f"agent-bridge usage: {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else usage_table(report))
    return 0
