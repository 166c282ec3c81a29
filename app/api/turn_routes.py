"""The turn endpoints as plain Starlette routes, and what FastAPI would have said about them in `/openapi.json`.

The turn endpoints read their requests themselves (`app.api.bodies`) and return Starlette responses, so
FastAPI's per-route machinery does nothing for them: dependency solving over no dependencies, two exit
stacks, response handling, and four frames more each time the request's task resumes (about seven
times a chat follow-up). A `TurnRoute` is Starlette's own `Route` serving its endpoint directly; it
sets `scope["route"]` as FastAPI's routes do (the access line and the metrics name the endpoint by
it) and writes its OpenAPI operation as FastAPI writes one.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from app.api import bodies


class TurnRoute(Route):
    """`POST path` served by `endpoint(request)`, its body a `body` (JSON) and its headers `headers`."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[[Request], Awaitable[Response]],
        *,
        body: type[BaseModel],
        headers: Sequence[bodies.Header] = (),
    ) -> None:
        super().__init__(path, endpoint, methods=["POST"])
        self.body = body
        self.documented_headers = tuple(headers)
        self._endpoint = endpoint
        # Not Starlette's request_response(): its exception wrapper repeats the app's (ExceptionMiddleware
        # renders what the endpoint raises with the same handlers), and it is three frames to this one.
        self.app = self._serve

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope

    def operation(self) -> dict[str, Any]:
        """The route's OpenAPI operation, named as FastAPI names one (summary and id from the endpoint)."""
        operation_id = re.sub(r"\W", "_", f"{self.name}{self.path_format}") + "_post"
        responses = {"200": {"description": "Successful Response", "content": {"application/json": {"schema": {}}}}}
        return {
            "summary": self.name.replace("_", " ").title(),
            "operationId": operation_id,
            **bodies.documented(self.body, *self.documented_headers),
            "responses": responses,
        }


def add(app: FastAPI, route: TurnRoute) -> None:
    """Put `route` on the app itself, after the turn routes already there and ahead of every other route
    (a request is matched against the routes in order, each check a few calls).

    A turn route runs no FastAPI dependency: an app-level `dependencies=` (FastAPI copies it into its
    own routes only) would silently skip it, so it is refused here; a router's is refused by
    tests/unit/test_turn_route_dependencies.py."""
    if app.router.dependencies:
        raise RuntimeError(
            "app-level dependencies= would not run for the plain turn routes (app.api.turn_routes): "
            "check in the endpoints themselves, or in app.api.middleware, instead"
        )
    routes = app.router.routes
    at = next((i for i, r in enumerate(routes) if not isinstance(r, TurnRoute)), len(routes))
    routes.insert(at, route)


def document(app: FastAPI, schema: dict[str, Any]) -> None:
    """Add the app's turn routes and their bodies to an OpenAPI document FastAPI generated."""
    routes = [r for r in app.routes if isinstance(r, TurnRoute)]
    paths = schema.setdefault("paths", {})
    for route in routes:
        paths[route.path] = {"post": route.operation()}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(bodies.schemas(*(r.body for r in routes)))
