"""Builds the emulator's ASGI app: every surface, the test hooks, and the middleware around them."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from app.emulator import assistants, foundry_v2, identity
from app.emulator.hooks import EmulatorContext, EmulatorMiddleware, hook_routes
from app.emulator.http import EmulatorHTTPError
from app.emulator.options import EmulatorOptions


async def _emulator_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EmulatorHTTPError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return EmulatorHTTPError(404, "Resource not found.", code="404").response()
    if exc.status_code == 405:
        return EmulatorHTTPError(405, f"The requested method {request.method} is not allowed.", code="405").response()
    return EmulatorHTTPError(exc.status_code, str(exc.detail)).response()


def create_emulator_app(options: EmulatorOptions | None = None) -> Starlette:
    ctx = EmulatorContext(options=options or EmulatorOptions())
    routes = [
        *hook_routes(ctx),
        *identity.build(ctx),
        # Foundry v2 first: its mounts are longer prefixes of the project mount of the classic surface.
        *foundry_v2.build(ctx),
        *assistants.build(ctx),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(EmulatorMiddleware, ctx=ctx)],
        exception_handlers={EmulatorHTTPError: _emulator_error, HTTPException: _http_error},
    )
    app.state.ctx = ctx
    return app
