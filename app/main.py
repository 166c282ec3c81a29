"""The composition root: `create_app()` and its lifespan build everything and put it on `app.state`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from app import __version__
from app.api import chat, errors, health, responses
from app.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from app.backends.assistants.backend import AssistantsBackend
from app.backends.assistants.client import AssistantsClient
from app.backends.azure_auth import AI_FOUNDRY_SCOPE, COGNITIVE_SERVICES_SCOPE, AuthProvider, build_auth
from app.backends.foundry.backend import FoundryBackend
from app.backends.foundry.client import FoundryClient
from app.backends.foundry.passthrough import FoundryPassthrough
from app.backends.polling import PollPolicy
from app.backends.retry import RetryPolicy
from app.backends.upstream import UpstreamClient
from app.core.background import BackgroundTasks
from app.core.keys import KeyRing
from app.core.responses_service import ResponsesService
from app.core.service import AgentBackend, TurnService
from app.settings import RouteSettings, Settings, load_settings
from app.state.connect import connect
from app.state.store import RedisStore

log = logging.getLogger("agent_bridge")


def _scope_for(route: RouteSettings) -> str:
    return AI_FOUNDRY_SCOPE if route.is_project else COGNITIVE_SERVICES_SCOPE


def create_app(
    settings: Settings,
    *,
    retry: RetryPolicy | None = None,
    poll: PollPolicy | None = None,
) -> FastAPI:
    """Build the bridge. `retry` and `poll` default to production policies (tests pass quicker ones)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.redis_url is None:
            log.warning(
                "REDIS_URL is not set: using an embedded in-process Redis. Thread records die with this "
                "process, and threads created now can be orphaned on Azure. Set REDIS_URL in production."
            )
        redis = connect(settings.redis_url)
        store = RedisStore(redis, prefix=settings.redis_prefix, thread_ttl_s=settings.threads.ttl)
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=10.0, read=None, write=30.0, pool=30.0),
            limits=httpx.Limits(max_connections=2000, max_keepalive_connections=200, keepalive_expiry=30.0),
        )
        tasks = BackgroundTasks()
        policy = retry or RetryPolicy()
        auths: list[AuthProvider] = []
        assistants_clients: dict[str, AssistantsClient] = {}
        foundry_clients: dict[str, FoundryClient] = {}
        for name, route in settings.routes.items():
            auth = build_auth(route.auth, _scope_for(route))
            auths.append(auth)
            upstream = UpstreamClient(http, auth, policy, name=name)
            if route.backend == "assistants":
                assistants_clients[name] = AssistantsClient(upstream, route)
            else:
                foundry_clients[name] = FoundryClient(upstream, route)
        backends: dict[str, AgentBackend] = {
            "assistants": AssistantsBackend(
                assistants_clients, store, tasks, lock_wait_s=settings.limits.lock_wait, poll=poll
            ),
            "foundry": FoundryBackend(foundry_clients, tasks),
        }
        app.state.settings = settings
        app.state.store = store
        app.state.tasks = tasks
        app.state.service = TurnService(settings, backends, store)
        app.state.responses = ResponsesService(settings, backends, store, FoundryPassthrough(foundry_clients))
        try:
            yield
        finally:
            await tasks.drain(within_s=10.0)
            await http.aclose()
            for auth in auths:
                close = getattr(auth, "aclose", None)
                if close is not None:
                    await close()
            await redis.aclose()

    app = FastAPI(title="Agent Bridge", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.started_at = time.time()
    app.state.keys = KeyRing(settings.keys)
    if app.state.keys.open_mode:
        log.warning(
            "No client keys are configured: the bridge is OPEN. Every caller is the single owner "
            "'anonymous' and may use every route and the admin API. Configure `keys` or AGENT_BRIDGE_API_KEYS."
        )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(chat.router)
    app.include_router(responses.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` (several workers): the config path comes from AGENT_BRIDGE_CONFIG."""
    return create_app(load_settings(os.environ.get("AGENT_BRIDGE_CONFIG", "config.yaml")))
