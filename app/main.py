"""The composition root: `create_app()` and its lifespan build everything and put it on `app.state`.

`components()` builds what the bridge runs on (Redis store, Azure clients, backends, services, the
janitor); the FastAPI lifespan and the operator CLI (`agent-bridge threads ...`) both use it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from app import __version__, telemetry
from app.api.application import build_api
from app.backends.assistants.backend import AssistantsBackend
from app.backends.assistants.client import AssistantsClient
from app.backends.assistants.conversations import AssistantsThreads
from app.backends.assistants.takeover import AssistantsTakeover
from app.backends.azure_auth import AI_FOUNDRY_SCOPE, COGNITIVE_SERVICES_SCOPE, AuthProvider, build_auth
from app.backends.carry import Carrier
from app.backends.foundry.backend import FoundryBackend
from app.backends.foundry.client import FoundryClient
from app.backends.foundry.definitions import AgentDefinitions, DefinitionPolicy
from app.backends.foundry.endpoint import EndpointBackend
from app.backends.foundry.endpoint_takeover import EndpointTakeover
from app.backends.http_client import http_client
from app.backends.lease import LeasePolicy
from app.backends.migration import Migrations, refuse_flip_back
from app.backends.polling import PollPolicy
from app.backends.retry import RetryPolicy
from app.backends.upstream import UpstreamClient
from app.core import tracing
from app.core.background import BackgroundTasks
from app.core.background_responses import BackgroundResponses, FinalResponses
from app.core.background_runs import BackgroundRuns
from app.core.conversations_service import ConversationsService
from app.core.files import Fetch, FileRelay
from app.core.held_conversations import HeldConversations
from app.core.keys import KeyRing, keys_problem
from app.core.lifetime import InFlight
from app.core.metering import Meter
from app.core.migration import ToolSchemas
from app.core.responses_service import ResponsesService
from app.core.service import AgentBackend, TurnService
from app.errors import ConfigError, StoreUnavailableError
from app.metrics import Metrics
from app.settings import RouteSettings, Settings, config_warnings, load_settings
from app.state.accounting import Accounting
from app.state.carry_store import CarryStore
from app.state.commands import Commands
from app.state.connect import build as build_redis
from app.state.connect import check_mode
from app.state.janitor import Janitor, JanitorPolicy
from app.state.migrate import migrate
from app.state.run_log import RedisRunLog
from app.state.store import RedisStore
from app.state.threads_admin import ThreadAdmin
from app.state.traced import TracedCommands
from app.state.watch import StoreWatch

log = logging.getLogger("agent_bridge")


def _scope_for(route: RouteSettings) -> str:
    return AI_FOUNDRY_SCOPE if route.is_project else COGNITIVE_SERVICES_SCOPE


@dataclass
class Components:
    settings: Settings
    store: RedisStore
    tasks: BackgroundTasks
    inflight: InFlight
    assistants_clients: dict[str, AssistantsClient]
    foundry_clients: dict[str, FoundryClient]
    auths: dict[str, AuthProvider]
    service: TurnService
    responses: ResponsesService
    background: BackgroundResponses
    files: FileRelay
    conversations: ConversationsService
    admin: ThreadAdmin
    janitor: Janitor
    metrics: Metrics
    carry_store: CarryStore
    carrier: Carrier
    migrations: Migrations
    accounting: Accounting
    watch: StoreWatch


@asynccontextmanager
async def components(
    settings: Settings,
    *,
    retry: RetryPolicy | None = None,
    poll: PollPolicy | None = None,
    lease: LeasePolicy | None = None,
    definition_policy: DefinitionPolicy | None = None,
) -> AsyncIterator[Components]:
    metrics = Metrics()
    connection = build_redis(settings.redis_url, settings.redis)
    commands: Commands = TracedCommands(connection.commands) if tracing.ENABLED else connection.commands
    try:
        await check_mode(connection.client, settings.redis_url)
    except BaseException:
        await connection.aclose()
        raise
    store = RedisStore(
        connection.client,
        prefix=settings.redis_prefix,
        thread_ttl_s=settings.threads.ttl,
        response_ttl_s=settings.responses.ttl,
        on_error=metrics.store_errors.inc,
        commands=commands,
    )
    accounting = Accounting(
        connection.client,
        prefix=settings.redis_prefix,
        # A turn cannot outlive its route's timeout: an in-flight entry lapses a minute after the longest.
        in_flight_lapse_s=max((r.timeout for r in settings.routes.values()), default=300.0) + 60.0,
        on_error=metrics.store_errors.inc,
        commands=commands,
    )
    meter = Meter(accounting, settings, metrics)
    try:
        await migrate(store)
    except StoreUnavailableError:
        log.warning("redis: the registry layout could not be checked at start-up (Redis unavailable)")
    http = http_client(user_agent=f"agent-bridge/{__version__}")
    tasks = BackgroundTasks()
    inflight = InFlight()
    policy = retry or RetryPolicy()
    auths: dict[str, AuthProvider] = {}
    assistants_clients: dict[str, AssistantsClient] = {}
    foundry_clients: dict[str, FoundryClient] = {}
    for name, route in settings.routes.items():
        auths[name] = build_auth(route.auth, _scope_for(route))
        upstream = UpstreamClient(http, auths[name], policy, name=name, metrics=metrics)
        if route.backend == "assistants":
            assistants_clients[name] = AssistantsClient(upstream, route)
        else:
            foundry_clients[name] = FoundryClient(upstream, route)
        source = route.source_route()
        if source is not None:  # the Assistants agent this route served before: its threads are carried
            auths[f"{name}@source"] = build_auth(source.auth, _scope_for(source))
            upstream = UpstreamClient(http, auths[f"{name}@source"], policy, name=name, metrics=metrics)
            assistants_clients[name] = AssistantsClient(upstream, source)
    lease_policy = lease or LeasePolicy.for_ttl(settings.limits.lock_lease)
    foundry = FoundryBackend(foundry_clients, tasks, metrics, AgentDefinitions(definition_policy))
    backends: dict[str, AgentBackend] = {
        "assistants": AssistantsBackend(
            assistants_clients,
            store,
            tasks,
            lock_wait_s=settings.limits.lock_wait,
            poll=poll,
            lease=lease_policy,
            metrics=metrics,
        ),
        "foundry": foundry,
        "endpoint": EndpointBackend(foundry, store, max_items=settings.limits.max_history_items),
    }
    carry_store = CarryStore(store, ttl_ms=int(max(settings.threads.ttl, settings.responses.ttl) * 1000))
    migrating = {name for name, route in settings.routes.items() if route.migrate_from is not None}
    carrier = Carrier(
        store=store,
        carry=carry_store,
        sources={name: assistants_clients[name] for name in migrating},
        targets={name: foundry_clients[name] for name in migrating},
        keep_source={
            name: route.migrate_from.keep_source for name, route in settings.routes.items() if route.migrate_from
        },
        thread_ttl_s=settings.threads.ttl,
        tasks=tasks,
        lease=lease_policy,
        lock_wait_s=settings.limits.lock_wait,
        metrics=metrics,
    )
    tool_schemas = ToolSchemas(carry_store)
    assistants = backends["assistants"]
    assert isinstance(assistants, AssistantsBackend)
    responses = ResponsesService(
        settings,
        backends,
        store,
        foundry,
        conversations=store,
        tasks=tasks,
        inflight=inflight,
        files=store,
        carry=carrier,
        calls=store,
        tool_schemas=tool_schemas,
        meter=meter,
        held=store,
    )
    runs = BackgroundRuns(
        RedisRunLog(store, ttl_s=settings.responses.background_ttl),
        FinalResponses(responses),
        tasks,
        {"assistants": AssistantsTakeover(assistants, settings), "endpoint": EndpointTakeover()},
        lease_s=settings.limits.lock_lease,
        max_events=settings.responses.background_max_events,
    )
    responses.background = runs
    deleters = {name: client.delete_thread for name, client in assistants_clients.items()}
    fetchers: dict[str, Fetch] = {name: client.file_content for name, client in assistants_clients.items()}
    fetchers.update({name: client.file_content for name, client in foundry_clients.items()})
    built = Components(
        settings=settings,
        store=store,
        tasks=tasks,
        inflight=inflight,
        assistants_clients=assistants_clients,
        foundry_clients=foundry_clients,
        auths=auths,
        service=TurnService(
            settings,
            backends,
            store,
            tasks=tasks,
            inflight=inflight,
            files=store,
            carry=carrier,
            calls=store,
            tool_schemas=tool_schemas,
            meter=meter,
            held=store,
            items=store,
        ),
        responses=responses,
        background=BackgroundResponses(responses, runs, tasks),
        files=FileRelay(store, fetchers, max_id_length=settings.limits.max_id_length),
        conversations=ConversationsService(
            settings,
            {name: client for name, client in foundry_clients.items() if client.route.backend == "foundry"},
            store,
            HeldConversations(
                store, AssistantsThreads(assistants_clients, store), max_history_items=settings.limits.max_history_items
            ),
        ),
        admin=ThreadAdmin(store, deleters, metrics),
        janitor=Janitor(
            store,
            deleters,
            JanitorPolicy(
                ttl_s=settings.threads.ttl,
                interval_s=settings.threads.sweep_interval,
                retry_base_s=settings.threads.retry_base,
                concurrency=settings.threads.janitor_concurrency,
            ),
            metrics,
        ),
        metrics=metrics,
        carry_store=carry_store,
        carrier=carrier,
        migrations=Migrations(store, carrier),
        accounting=accounting,
        watch=StoreWatch(store, metrics, require_noeviction=settings.redis.require_noeviction),
    )
    try:
        yield built
    finally:
        inflight.close()
        await runs.hand_over()  # background runs go on upstream; another replica follows them
        inflight.end_all()  # whatever uvicorn's own grace left running ends in OpenAI's format too
        await tasks.drain(within_s=10.0)
        await http.aclose()
        for auth in auths.values():
            await auth.aclose()
        await connection.aclose()


def create_app(
    settings: Settings,
    *,
    retry: RetryPolicy | None = None,
    poll: PollPolicy | None = None,
    definitions: DefinitionPolicy | None = None,
) -> Any:
    """Build the bridge. `retry`, `poll` and `definitions` default to production policies (tests pass quicker ones)."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        if settings.redis_url is None:
            log.warning(
                "REDIS_URL is not set: using an embedded in-process Redis. Thread records die with this "
                "process, and threads created now can be orphaned on Azure. Set REDIS_URL in production."
            )
        async with components(settings, retry=retry, poll=poll, definition_policy=definitions) as built:
            try:
                await refuse_flip_back(built.carry_store, settings)
            except StoreUnavailableError:
                log.warning("redis: carried conversations could not be checked at start-up (Redis unavailable)")
            restore = _on_termination(lambda: built.inflight.begin_shutdown(settings.shutdown_grace))
            app.state.components = built
            app.state.store = built.store
            app.state.tasks = built.tasks
            app.state.service = built.service
            app.state.migrations = built.migrations
            app.state.responses = built.responses
            app.state.background = built.background
            app.state.files = built.files
            app.state.conversations = built.conversations
            app.state.admin = built.admin
            app.state.janitor = built.janitor
            app.state.inflight = built.inflight
            app.state.watch = built.watch
            try:
                await built.watch.check()  # logs an evicting policy or a lost store; /readyz reports them
            except StoreUnavailableError:
                log.warning("redis: the eviction policy and the registry marker could not be read at start-up")
            stop = asyncio.Event()
            sweeper = asyncio.create_task(built.janitor.run(stop)) if settings.threads.janitor else None
            try:
                yield
            finally:
                restore()
                stop.set()
                if sweeper is not None:
                    await sweeper
                if traces_owned:
                    telemetry.shutdown()  # what is batched goes out before the process ends

    problem = keys_problem(settings)
    if problem is not None:
        raise ConfigError(f"refusing to start: {problem}")
    traces_owned = telemetry.setup()
    for warning in config_warnings(settings):
        log.warning("%s", warning)
    keys = KeyRing(settings.keys)
    if keys.open_mode:
        log.warning(
            "open_mode is set and no client keys are configured: the bridge is OPEN. Every caller is the "
            "single owner 'anonymous' and may use every route; the admin API answers 401. Configure `keys` "
            "or AGENT_BRIDGE_API_KEYS for anything but a local trial."
        )
    return build_api(
        lifespan=lifespan,
        max_body_bytes=settings.limits.max_body_bytes,
        state={"settings": settings, "started_at": time.time(), "keys": keys},
    )


def _on_termination(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` on the event loop when SIGTERM/SIGINT arrives, then let uvicorn's handler run.

    uvicorn starts its graceful shutdown on the signal but tells the app nothing until its grace
    is over and it cancels the requests' tasks (then a plain request gets its bare 500). Knowing the
    moment, the bridge ends its turns itself, in OpenAI's format, before uvicorn's grace runs out.
    Returns how to put the previous handlers back. Signals reach only the main thread: elsewhere
    (the bridge in a test thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        loop.call_soon_threadsafe(callback)
        before = previous.get(signum)
        if callable(before):
            before(signum, frame)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)

    return restore


def create_app_from_env() -> Any:
    """Factory for `uvicorn --factory` (several workers): the config path comes from AGENT_BRIDGE_CONFIG.
    Each worker is a fresh process, so it sets up its own JSON logging (`serve` passes the level)."""
    from app.logs import LEVEL_ENV, configure
    from app.runtime import tune_gc

    configure(os.environ.get(LEVEL_ENV, "info"))
    app = create_app(load_settings(os.environ.get("AGENT_BRIDGE_CONFIG", "config.yaml")))
    tune_gc()
    return app
