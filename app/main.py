"""The composition root: `create_app()` and its lifespan build everything and put it on `app.state`.

`components()` builds what the bridge runs on (Redis store, Azure clients, backends, services, the
janitor); the FastAPI lifespan and the operator CLI (`agent-bridge threads ...`) both use it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
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
from app.backends.foundry.passthrough import FoundryPassthrough
from app.backends.polling import PollPolicy
from app.backends.retry import RetryPolicy
from app.backends.upstream import UpstreamClient, http_session, proxy_for
from app.core.background import BackgroundTasks
from app.core.files import Fetch, FileRelay
from app.core.keys import KeyRing
from app.core.responses_service import ResponsesService
from app.core.service import AgentBackend, TurnService
from app.metrics import Metrics
from app.settings import RouteSettings, Settings, load_settings
from app.state.connect import connect
from app.state.janitor import Janitor, JanitorPolicy
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
    assistants_clients: dict[str, AssistantsClient]
    foundry_clients: dict[str, FoundryClient]
    auths: dict[str, AuthProvider]
    service: TurnService
    responses: ResponsesService
    files: FileRelay
    admin: ThreadAdmin
    janitor: Janitor
    metrics: Metrics


@asynccontextmanager
async def components(
    settings: Settings, *, retry: RetryPolicy | None = None, poll: PollPolicy | None = None
) -> AsyncIterator[Components]:
    metrics = Metrics()
    redis = connect(settings.redis_url)
    store = RedisStore(
        redis, prefix=settings.redis_prefix, thread_ttl_s=settings.threads.ttl, on_error=metrics.store_errors.inc
    )
    http = http_session(user_agent=f"agent-bridge/{__version__}")
    tasks = BackgroundTasks()
    policy = retry or RetryPolicy()
    auths: dict[str, AuthProvider] = {}
    assistants_clients: dict[str, AssistantsClient] = {}
    foundry_clients: dict[str, FoundryClient] = {}
    for name, route in settings.routes.items():
        auths[name] = build_auth(route.auth, _scope_for(route))
        upstream = UpstreamClient(
            http, auths[name], policy, name=name, metrics=metrics, proxy=proxy_for(route.endpoint)
        )
        if route.backend == "assistants":
            assistants_clients[name] = AssistantsClient(upstream, route)
        else:
            foundry_clients[name] = FoundryClient(upstream, route)
    backends: dict[str, AgentBackend] = {
        "assistants": AssistantsBackend(
            assistants_clients, store, tasks, lock_wait_s=settings.limits.lock_wait, poll=poll, metrics=metrics
        ),
        "foundry": FoundryBackend(foundry_clients, tasks, metrics),
    }
    deleters = {name: client.delete_thread for name, client in assistants_clients.items()}
    fetchers: dict[str, Fetch] = {name: client.file_content for name, client in assistants_clients.items()}
    fetchers.update({name: client.file_content for name, client in foundry_clients.items()})
    built = Components(
        settings=settings,
        store=store,
        tasks=tasks,
        assistants_clients=assistants_clients,
        foundry_clients=foundry_clients,
        auths=auths,
        service=TurnService(settings, backends, store, files=store),
        responses=ResponsesService(
            settings, backends, store, FoundryPassthrough(foundry_clients, metrics), conversations=store, files=store
        ),
        files=FileRelay(store, fetchers),
        admin=ThreadAdmin(store, deleters, metrics),
        janitor=Janitor(
            store,
            deleters,
            JanitorPolicy(
                ttl_s=settings.threads.ttl,
                interval_s=settings.threads.sweep_interval,
                retry_base_s=settings.threads.retry_base,
            ),
            metrics,
        ),
        metrics=metrics,
    )
    try:
        yield built
    finally:
        await tasks.drain(within_s=10.0)
        await http.close()
        for auth in auths.values():
            await auth.aclose()
        await redis.aclose()


def create_app(
    settings: Settings,
    *,
    retry: RetryPolicy | None = None,
    poll: PollPolicy | None = None,
) -> Any:
    """Build the bridge. `retry` and `poll` default to production policies (tests pass quicker ones)."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        if settings.redis_url is None:
            log.warning(
                "REDIS_URL is not set: using an embedded in-process Redis. Thread records die with this "
                "process, and threads created now can be orphaned on Azure. Set REDIS_URL in production."
            )
        async with components(settings, retry=retry, poll=poll) as built:
            app.state.components = built
            app.state.store = built.store
            app.state.tasks = built.tasks
            app.state.service = built.service
            app.state.responses = built.responses
            app.state.files = built.files
            app.state.admin = built.admin
            app.state.janitor = built.janitor
            stop = asyncio.Event()
            sweeper = asyncio.create_task(built.janitor.run(stop)) if settings.threads.janitor else None
            try:
                yield
            finally:
                stop.set()
                if sweeper is not None:
                    await sweeper

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


def create_app_from_env() -> Any:
    """Factory for `uvicorn --factory` (several workers): the config path comes from AGENT_BRIDGE_CONFIG."""
    return create_app(load_settings(os.environ.get("AGENT_BRIDGE_CONFIG", "config.yaml")))
