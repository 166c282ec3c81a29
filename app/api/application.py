"""The FastAPI application: routes, middleware and error rendering around a lifespan the root provides."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app import __version__
from app.api import (
    admin,
    chat,
    conversations,
    errors,
    files,
    health,
    meta,
    migrations,
    responses,
    turn_routes,
    usage,
)
from app.api.middleware import RequestContextMiddleware

Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]


def build_api(*, lifespan: Lifespan, max_body_bytes: int, state: dict[str, Any]) -> FastAPI:
    # `/openapi.json` and `/docs` are routes of `meta`, so that settings can guard or enable them.
    # FastAPI's native OpenTelemetry is off: the bridge reports through its own metrics and access line,
    # and left on, FastAPI looks up the global tracer, meter and logger providers on every request.
    app = FastAPI(
        title="Agent Bridge",
        version=__version__,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    for name, value in state.items():
        setattr(app.state, name, value)
    errors.install(app)
    # The turn routes first: a request is matched against the routes in order, each a few calls.
    chat.install(app)
    responses.install(app)
    app.include_router(health.router)
    app.include_router(files.router)
    app.include_router(conversations.router)
    app.include_router(admin.router)
    app.include_router(migrations.router)
    app.include_router(usage.router)
    app.include_router(meta.router)
    if state["settings"].server.docs:
        app.include_router(meta.docs_router)
    app.add_middleware(RequestContextMiddleware, max_bytes=max_body_bytes)

    def openapi() -> dict[str, Any]:
        # The turn routes are Starlette's: FastAPI leaves them out, `turn_routes` documents them.
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            turn_routes.document(app, schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
