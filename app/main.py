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

from app import __version__
from app.api.application import build_api
from app.backends.assistants.backend import AssistantsBackend
from app.backends.assistants.client import AssistantsClient
from app.backends.azure_auth import AI_FOUNDRY_SCOPE, COGNITIVE_SERVICES_SCOPE, AuthProvider, build_auth
from app.backends.foundry.backend import FoundryBackend
from app.backends.foundry.client import FoundryClient
from app.backends.foundry.definitions import AgentDefinitions, DefinitionPolicy
from app.backends.http_client import http_client
from app.backends.lease import LeasePolicy
from app.backends.polling import PollPolicy
from app.backends.retry import RetryPolicy
from app.backends.upstream import UpstreamClient
from app.core.background import BackgroundTasks
from app.core.conversations_service import ConversationsService
from app.core.files import Fetch, FileRelay
from app.core.keys import KeyRing
from app.core.lifetime import InFlight
from app.core.responses_service import ResponsesService
from app.core.service import AgentBackend, TurnService
from app.errors import StoreUnavailableError
from app.metrics import Metrics
from app.settings import RouteSettings, Settings, config_warnings, load_settings
from app.state.connect import build as build_redis
from app.state.connect import check_mode
from app.state.janitor import Janitor, JanitorPolicy
from app.state.migrate import migrate
from app.state.store import RedisStore
from app.state.threads_admin import ThreadAdmin

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
    files: FileRelay
    conversations: ConversationsService
    admin: ThreadAdmin
    janitor: Janitor
    metrics: Metrics


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
        commands=connection.commands,
    )
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
    foundry = FoundryBackend(foundry_clients, tasks, metrics, AgentDefinitions(definition_policy))
    backends: dict[str, AgentBackend] = {
        "assistants": AssistantsBackend(
            assistants_clients,
            store,
            tasks,
            lock_wait_s=settings.limits.lock_wait,
            poll=poll,
            lease=lease or LeasePolicy.for_ttl(settings.limits.lock_lease),
            metrics=metrics,
        ),
        "foundry": foundry,
    }
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
        service=TurnService(settings, backends, store, tasks=tasks, inflight=inflight, files=store),
        responses=ResponsesService(
            settings, backends, store, foundry, conversations=store, tasks=tasks, inflight=inflight, files=store
        ),
        files=FileRelay(store, fetchers),
        conversations=ConversationsService(settings, foundry_clients, store),
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
    )
    try:
        yield built
    finally:
        inflight.close()
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
            restore = _on_termination(lambda: built.inflight.begin_shutdown(settings.shutdown_grace))
            app.state.components = built
            app.state.store = built.store
            app.state.tasks = built.tasks
            app.state.service = built.service
            app.state.responses = built.responses
            app.state.files = built.files
            app.state.conversations = built.conversations
            app.state.admin = built.admin
            app.state.janitor = built.janitor
            app.state.inflight = built.inflight
            stop = asyncio.Event()
            sweeper = asyncio.create_task(built.janitor.run(stop)) if settings.threads.janitor else None
            try:
                yield
            finally:
                restore()
                stop.set()
                if sweeper is not None:
                    await sweeper

    for warning in config_warnings(settings):
        log.warning("%s", warning)
    keys = KeyRing(settings.keys)
    if keys.open_mode:
        log.warning(
            "No client keys are configured: the bridge is OPEN. Every caller is the single owner "
            "'anonymous' and may use every route and the admin API. Configure `keys` or AGENT_BRIDGE_API_KEYS."
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
