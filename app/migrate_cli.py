"""`agent-bridge migrate` and `agent-bridge migrate-agent`: moving a route from Assistants to Foundry v2."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

from app.errors import BridgeError

if TYPE_CHECKING:
    from app.backends.migration import Plan, Summary


def _print_plan(plan: Plan) -> None:
    print(f"route {plan.route}: {plan.conversations} conversations to carry ({plan.already} carried before)")
    for owner, counts in sorted(plan.owners.items()):
        waiting = f", {counts.waiting} with a run active or waiting (carried when it ends)" if counts.waiting else ""
        counted = f"{counts.conversations} conversations, {counts.messages} messages -> {counts.items} items"
        print(f"  {owner}: {counted}{waiting}")
    if plan.lost:
        print(f"not carried ({sum(len(v) for v in plan.lost.values())} things in {len(plan.lost)} threads):")
        for thread_id, lines in sorted(plan.lost.items()):
            for line in lines:
                print(f"  {thread_id}: {line}")
    for thread_id, message in sorted(plan.unreadable.items()):
        print(f"  unreadable {thread_id}: {message}")
    print(f"upstream requests: about {plan.requests}")


def _print_summary(summary: Summary) -> None:
    print(
        f"carried {summary.carried} of {summary.total} conversations ({summary.resumed} resumed), "
        f"{len(summary.deferred)} deferred, {len(summary.failed)} failed, {summary.requests} upstream requests"
    )
    for thread_id, message in sorted(summary.deferred.items()):
        print(f"  deferred {thread_id}: {message}")
    for thread_id, message in sorted(summary.failed.items()):
        print(f"  failed {thread_id}: {message}", file=sys.stderr)


def migrate(args: argparse.Namespace) -> int:
    """Plan, confirm, carry, summarise. Idempotent: run it again to carry what was deferred or failed."""
    from app.backends.migration import Migration
    from app.cli import _confirm, _load, _Progress
    from app.main import components

    settings = _load(args.config)
    if settings.redis_url is None:
        print("agent-bridge migrate: set REDIS_URL: the registry lives in the service's Redis.", file=sys.stderr)
        return 2

    async def run() -> int:
        async with components(settings) as built:
            migration = Migration(built.store, built.carrier, args.route)
            bar = _Progress("reading", 1)
            plan = await migration.plan(concurrency=args.concurrency, limit=args.limit, progress=_bar(bar))
            bar.close()
            if args.json and (args.dry_run or not plan.conversations):
                print(json.dumps({"plan": plan.json()}, indent=2, sort_keys=True))
            elif not args.json:
                _print_plan(plan)
            if args.dry_run or not plan.conversations:
                return 0
            if not _confirm(f"Carry {plan.conversations} conversations of route {args.route} to Foundry v2?", args):
                print("nothing carried")
                return 1
            bar = _Progress("carrying", 1)
            summary = await migration.run(concurrency=args.concurrency, limit=args.limit, progress=_bar(bar))
            bar.close()
            if args.json:
                print(json.dumps({"plan": plan.json(), "summary": summary.json()}, indent=2, sort_keys=True))
            else:
                _print_summary(summary)
            return 1 if summary.failed else 0

    try:
        return asyncio.run(run())
    except BridgeError as exc:
        print(f"agent-bridge migrate: {exc.message}", file=sys.stderr)
        return 1


def _bar(bar: Any) -> Any:
    def update(done: int, total: int) -> None:
        bar.total = total
        bar(done, done)

    return update


def migrate_agent(args: argparse.Namespace) -> int:
    """Create (or check) the v2 agent version a route names, from the Assistants agent of its `migrate_from`."""
    from app.agent_migration import migrate_agent as run_agent
    from app.cli import _load
    from app.main import components

    settings = _load(args.config)

    async def run() -> int:
        async with components(settings) as built:
            report = await run_agent(built, args.route, dry_run=args.dry_run)
            print(json.dumps(report, indent=2, sort_keys=True))
            return 0 if report.get("ok") else 1

    try:
        return asyncio.run(run())
    except BridgeError as exc:
        print(f"agent-bridge migrate-agent: {exc.message}", file=sys.stderr)
        return 1


def add_commands(command: Any, config_default: str, config_help: str) -> None:
    """The two subcommands, on the root parser's `command(name, help)` factory."""
    mig = command("migrate", "carry a route's Assistants threads to Foundry v2 conversations (needs REDIS_URL)")
    mig.add_argument("--route", required=True, help="the route (model name) whose threads to carry")
    mig.add_argument("--config", default=config_default, help=config_help)
    mig.add_argument("--dry-run", action="store_true", help="only read the threads and print the plan")
    mig.add_argument("--yes", action="store_true", help="do not ask for confirmation (for scripts)")
    mig.add_argument("--concurrency", type=int, default=16, help="threads read or carried at once")
    mig.add_argument("--limit", type=int, help="carry at most this many (the oldest first); run again for more")
    mig.add_argument("--json", action="store_true", help="print the plan and summary as JSON")
    mig.set_defaults(run=migrate)
    agent = command("migrate-agent", "create or check the v2 agent version from the route's Assistants agent")
    agent.add_argument("--route", required=True, help="the route (model name) with migrate_from")
    agent.add_argument("--config", default=config_default, help=config_help)
    agent.add_argument("--dry-run", action="store_true", help="only report what would be created")
    agent.set_defaults(run=migrate_agent)
