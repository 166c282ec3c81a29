"""`agent-bridge serve | emulator | dev | check-config | threads | conversations | migrate | migrate-agent | usage`:
the command line."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from app import __version__, usage_cli
from app.errors import ConfigError
from app.settings import Settings, config_warnings, load_settings

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_SHUTDOWN_MARGIN_S = 5


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default, unless there is none to show (`None`, or off for a switch)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _load(path: str, *, require_routes: bool = False) -> Settings:
    """The settings, or exit 2 naming every problem. `require_routes`: for serving, so a config the server
    would refuse (no route; no key without `open_mode`) is refused here, before anything starts."""
    from app.core.keys import keys_problem

    try:
        settings = load_settings(path, require_routes=require_routes)
        problem = keys_problem(settings) if require_routes else None
        if problem is not None:
            raise ConfigError(f"{path}: keys: {problem}")
        return settings
    except ConfigError as exc:
        problems = str(exc).splitlines()
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        print(f"agent-bridge: invalid configuration ({count})\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.http_protocol import StepWriteProtocol
    from app.logs import configure

    settings = _load(args.config, require_routes=True)
    configure(args.log_level)
    common: dict[str, object] = {
        "host": args.host,
        "port": args.port,
        "log_config": None,
        "proxy_headers": True,
        # uvicorn's own grace outlasts the bridge's: the bridge ends its turns first, in OpenAI's format.
        "timeout_graceful_shutdown": int(settings.shutdown_grace) + _SHUTDOWN_MARGIN_S,
        "access_log": False,
        "http": StepWriteProtocol,
        "timeout_keep_alive": settings.server.keepalive_timeout,
    }
    if args.workers > 1:
        if settings.redis_url is None:
            print("agent-bridge: several workers need a shared Redis: set REDIS_URL.", file=sys.stderr)
            return 2
        from app.logs import LEVEL_ENV

        os.environ["AGENT_BRIDGE_CONFIG"] = args.config
        os.environ[LEVEL_ENV] = args.log_level
        uvicorn.run("app.main:create_app_from_env", factory=True, workers=args.workers, **common)  # type: ignore[arg-type]
        return 0
    from app.main import create_app
    from app.runtime import tune_gc

    app = create_app(settings)
    tune_gc()
    uvicorn.run(app, **common)  # type: ignore[arg-type]
    return 0


def _emulator(args: argparse.Namespace) -> int:
    import uvicorn

    from app.emulator import EmulatorOptions, create_emulator_app

    options = EmulatorOptions(
        latency_ms=args.latency_ms,
        token_delay_ms=args.token_delay_ms,
        run_expiry_s=args.run_expiry_s,
        empty=args.empty,
        accept_api_key_on_projects=args.accept_api_key_on_projects,
    )
    uvicorn.run(create_emulator_app(options), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    settings = _load(args.config, require_routes=True)
    print(f"{args.config}: OK, {len(settings.routes)} routes")
    for name, route in settings.routes.items():
        target = route.assistant_id if route.assistant_id else f"{route.agent.name}:{route.agent.version or 'latest'}"  # type: ignore[union-attr]
        print(f"  {name}: {route.backend} {target} at {route.endpoint} (auth {route.auth.type})")
    for warning in config_warnings(settings):
        print(f"warning: {args.config}: {warning}", file=sys.stderr)
    return 0


def _dev(args: argparse.Namespace) -> int:
    """The emulator and the bridge together, stopped together (`make run`).

    Project endpoints take Entra tokens only, so the bridge's Entra credential is pointed at the
    emulator's App Service managed-identity endpoint (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, which
    azure-identity's `ManagedIdentityCredential` reads, also inside `DefaultAzureCredential`).
    """
    # With the emulator, and only here, open mode is asked for on the operator's behalf (keys still win).
    os.environ.setdefault("AGENT_BRIDGE_OPEN_MODE", "true")
    _load(args.config, require_routes=True)
    exe = [sys.executable, "-m", "app.cli"]
    emulator = subprocess.Popen([*exe, "emulator", "--host", args.host, "--port", str(args.emulator_port)])
    identity = {
        "IDENTITY_ENDPOINT": f"http://{args.host}:{args.emulator_port}/msi/token",
        "IDENTITY_HEADER": "agent-bridge-dev",
    }
    bridge = subprocess.Popen(
        [*exe, "serve", "--config", args.config, "--host", args.host, "--port", str(args.port)],
        env={**os.environ, **identity},
    )
    children = [emulator, bridge]

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(
        f"agent-bridge: emulator on http://{args.host}:{args.emulator_port}, bridge on http://{args.host}:{args.port}"
        " (Ctrl-C stops both)",
        flush=True,
    )
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    codes = [child.returncode or 0 for child in children]
    return next((code for code in codes if code > 0), 0)


def _threads(args: argparse.Namespace) -> int:
    """Operate on the thread registry without the service: straight against Redis and Azure."""
    import asyncio
    import json

    from app.errors import BridgeError
    from app.main import components
    from app.settings import Seconds
    from app.state.threads_admin import ThreadFilter, record_json

    settings = _load(args.config)
    if settings.redis_url is None:
        print("agent-bridge threads: set REDIS_URL: the registry lives in the service's Redis.", file=sys.stderr)
        return 2

    def seconds(value: str | None) -> float | None:
        from pydantic import TypeAdapter

        return TypeAdapter(Seconds).validate_python(value) if value is not None else None

    def show(value: object) -> None:
        print(json.dumps(value, indent=2, sort_keys=True, default=str))

    async def run() -> int:
        async with components(settings) as built:
            admin = built.admin
            if args.action == "list":
                flt = ThreadFilter(route=args.route, owner=args.owner, idle_for_s=seconds(args.idle_for))
                _print_threads(await admin.list(flt, limit=args.limit, after=args.after), as_json=args.json)
            elif args.action == "show":
                show(record_json(await admin.show(args.thread_id)))
            elif args.action == "delete":
                await admin.delete(args.thread_id)
                show({"id": args.thread_id, "deleted": True})
            elif args.action == "purge":
                return await _purge(admin, args, seconds(args.older_than), show)
            elif args.action == "reconcile":
                return await _reconcile(built, args, show)
            elif args.action == "accept-loss":
                show({"restored": await built.watch.marker.restore("threads accept-loss")})
        return 0

    try:
        return asyncio.run(run())
    except BridgeError as exc:
        print(f"agent-bridge threads {args.action}: {exc.message}", file=sys.stderr)
        return 1


def _confirm(question: str, args: argparse.Namespace) -> bool:
    """On a terminal, ask (unless --yes); a script without a terminal goes on (its caller chose to run it)."""
    if args.yes or args.dry_run or not sys.stdin.isatty():
        return True
    answer = input(f"{question} [y/N] ")
    return answer.strip().lower() in ("y", "yes")


class _Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.live = sys.stderr.isatty()

    def __call__(self, done: int, of: int) -> None:
        if not self.live:
            return
        width = 30
        filled = int(width * of / self.total) if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {of * 100 // max(1, self.total):3d}%  {done} threads")
        sys.stderr.flush()

    def close(self) -> None:
        if self.live:
            sys.stderr.write("\n")


async def _purge(admin: Any, args: argparse.Namespace, older_than: float | None, show: Any) -> int:
    from app.state.keys import BUCKETS
    from app.state.threads_admin import ThreadFilter

    flt = ThreadFilter(route=args.route, owner=args.owner, idle_for_s=older_than)
    filters = (("route", args.route), ("owner", args.owner), ("idle", args.older_than))
    described = ", ".join(f"{name} {value}" for name, value in filters if value) or "no filter: ALL threads"
    if not _confirm(f"Delete every thread ({described}) on Azure and from the registry?", args):
        print("agent-bridge threads purge: nothing deleted.", file=sys.stderr)
        return 1
    progress = _Progress("dry run" if args.dry_run else "purging", BUCKETS)
    try:
        report = await admin.purge(flt, dry_run=args.dry_run, progress=progress)
    finally:
        progress.close()
    if args.dry_run:
        show({"dry_run": True, "would_delete": report.matched, "count": len(report.matched)})
        return 0
    show({"deleted": report.deleted, "failed": report.failed, "count": len(report.deleted)})
    return 1 if report.failed else 0


async def _reconcile(built: Any, args: argparse.Namespace, show: Any) -> int:
    listers = {name: client.list_threads for name, client in built.assistants_clients.items() if client.lists_threads}
    if not listers:
        print("agent-bridge threads reconcile: no route on a Foundry project (only those list threads).")
        return 0
    what = "record" if args.adopt else "delete on Azure"
    if not _confirm(f"Find threads the bridge created but has no record of, and {what} them?", args):
        print("agent-bridge threads reconcile: nothing changed.", file=sys.stderr)
        return 1
    progress = _Progress("reconciling", len(listers))
    try:
        result = await built.admin.reconcile(listers, adopt=args.adopt, dry_run=args.dry_run, progress=progress)
    finally:
        progress.close()
    # Every orphan adopted: the registry is whole again as far as Azure can tell, so a lost store's
    # marker is rewritten (and the bridge ready again). Not after a dry run, a deletion or a failure.
    restored = args.adopt and not args.dry_run and not result.failed
    show(
        {
            "orphans": result.orphans,
            "deleted": result.deleted,
            "adopted": result.adopted,
            "left_alone": result.foreign,
            "failed": result.failed,
            **({"dry_run": True} if args.dry_run else {}),
            **({"marker_restored": await built.watch.marker.restore("threads reconcile --adopt")} if restored else {}),
        }
    )
    return 1 if result.failed else 0


def _conversations(args: argparse.Namespace) -> int:
    """`conversations adopt`: an admin makes a conversation created outside the bridge a key's own."""
    import asyncio
    import json

    from app.errors import BridgeError
    from app.main import components

    settings = _load(args.config)
    if settings.redis_url is None:
        print("agent-bridge conversations: set REDIS_URL: ownership lives in the service's Redis.", file=sys.stderr)
        return 2

    async def run() -> int:
        async with components(settings) as built:
            found = await built.conversations.adopt(args.conversation_id, owner=args.owner, route=args.route)
        print(json.dumps({"id": found.get("id"), "owner": args.owner, "route": args.route, "adopted": True}))
        return 0

    try:
        return asyncio.run(run())
    except BridgeError as exc:
        print(f"agent-bridge conversations {args.action}: {exc.message}", file=sys.stderr)
        return 1


def _print_threads(page: dict[str, object], *, as_json: bool) -> None:
    import json

    from app.tables import threads_table

    print(json.dumps(page, indent=2, sort_keys=True, default=str) if as_json else threads_table(page))


def parser() -> argparse.ArgumentParser:
    formatter = _Help
    root = argparse.ArgumentParser(
        prog="agent-bridge", description="An OpenAI-compatible proxy for Azure agents.", formatter_class=formatter
    )
    root.add_argument("--version", action="version", version=f"agent-bridge {__version__}")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=formatter)

    config_help = "the config file (env AGENT_BRIDGE_CONFIG)"
    serve = command("serve", "run the bridge")
    serve.add_argument("--config", default=os.environ.get("AGENT_BRIDGE_CONFIG", "config.yaml"), help=config_help)
    serve.add_argument(
        "--host",
        default=os.environ.get("AGENT_BRIDGE_HOST", "127.0.0.1"),
        help="address to listen on (env AGENT_BRIDGE_HOST)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("AGENT_BRIDGE_PORT", "8000")),
        help="port (env AGENT_BRIDGE_PORT)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("AGENT_BRIDGE_WORKERS", "1")),
        help="worker processes; more than one needs REDIS_URL (env AGENT_BRIDGE_WORKERS)",
    )
    serve.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="lowest level logged")
    serve.set_defaults(run=_serve)

    emulator = command("emulator", "run the local Azure emulator")
    emulator.add_argument("--host", default="127.0.0.1", help="address to listen on")
    emulator.add_argument("--port", type=int, default=8100, help="port")
    emulator.add_argument("--latency-ms", type=float, default=0.0, help="latency added to every request")
    emulator.add_argument("--token-delay-ms", type=float, default=0.0, help="spacing of streamed deltas")
    emulator.add_argument("--run-expiry-s", type=float, default=600.0, help="how long a run waits for tool outputs")
    emulator.add_argument("--empty", action="store_true", help="start without the demo agents")
    emulator.add_argument(
        "--accept-api-key-on-projects",
        action="store_true",
        help="accept api-key on project endpoints, as a key-taking gateway in front of Azure would",
    )
    emulator.add_argument("--log-level", default="warning", choices=LOG_LEVELS, help="lowest level logged")
    emulator.set_defaults(run=_emulator)

    dev = command("dev", "run the emulator and the bridge together (what `make run` runs)")
    dev.add_argument("--config", default="config.yaml", help="the bridge's config file")
    dev.add_argument("--host", default="127.0.0.1", help="address both listen on")
    dev.add_argument("--port", type=int, default=8000, help="the bridge's port")
    dev.add_argument("--emulator-port", type=int, default=8100, help="the emulator's port")
    dev.set_defaults(run=_dev)

    threads = command("threads", "the thread registry, straight against Redis and Azure (needs REDIS_URL)")
    threads.add_argument("--config", default=os.environ.get("AGENT_BRIDGE_CONFIG", "config.yaml"), help=config_help)
    actions = threads.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=text, description=text, formatter_class=formatter)

    listing = action("list", "list registered threads, most idle first")
    listing.add_argument("--route", help="only threads of this route (model name)")
    listing.add_argument("--owner", help="only threads of this owner (key name)")
    listing.add_argument("--idle-for", help="only threads idle at least this long (30s, 5m, 7d)")
    listing.add_argument("--limit", type=int, default=100, help="at most this many threads")
    listing.add_argument("--after", help="the cursor the previous page printed, to read the next one")
    listing.add_argument("--json", action="store_true", help="print the page as JSON (for scripts)")
    for name, text in (
        ("show", "show one thread's record"),
        ("delete", "delete one thread on Azure, then its record"),
    ):
        one = action(name, text)
        one.add_argument("thread_id", help="the thread's id (thread_...)")
    purge = action("purge", "delete every matching thread on Azure and from the registry")
    purge.add_argument("--route", help="only threads of this route (model name)")
    purge.add_argument("--owner", help="only threads of this owner (key name)")
    purge.add_argument("--older-than", help="only threads idle at least this long (30s, 5m, 7d)")
    purge.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation (for scripts)")
    reconcile = action("reconcile", "find threads the bridge created on Foundry projects but has no record of")
    reconcile.add_argument("--adopt", action="store_true", help="record them instead of deleting them")
    reconcile.add_argument("--dry-run", action="store_true", help="only report them")
    reconcile.add_argument("--yes", action="store_true", help="do not ask for confirmation (for scripts)")
    action(
        "accept-loss",
        "after a lost store: rewrite the registry marker, so the bridge is ready again (what reconcile --adopt "
        "could not bring back stays lost)",
    )
    threads.set_defaults(run=_threads)

    usage_cli.add_parser(command, config_help, os.environ.get("AGENT_BRIDGE_CONFIG", "config.yaml"))
    conversations = command("conversations", "Foundry v2 conversations' ownership (needs REDIS_URL)")
    config_default = os.environ.get("AGENT_BRIDGE_CONFIG", "config.yaml")
    conversations.add_argument("--config", default=config_default, help=config_help)
    conversation_actions = conversations.add_subparsers(dest="action", required=True, metavar="ACTION")
    adopt = conversation_actions.add_parser(
        "adopt", help="make a conversation created outside the bridge a key's own", formatter_class=formatter
    )
    adopt.add_argument("conversation_id", help="the conversation's id (conv_...)")
    adopt.add_argument("--owner", required=True, help="the key name that will own it")
    adopt.add_argument("--route", required=True, help="a Foundry v2 route (model name) on the conversation's project")
    conversations.set_defaults(run=_conversations)

    check = command("check-config", "validate a config file without starting; reports every problem")
    check.add_argument("--config", default=os.environ.get("AGENT_BRIDGE_CONFIG", "config.yaml"), help=config_help)
    check.set_defaults(run=_check_config)

    from app.migrate_cli import add_commands

    add_commands(command, os.environ.get("AGENT_BRIDGE_CONFIG", "config.yaml"), config_help)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
