"""The bridge describing itself: `GET /version`, `/openapi.json` and, when turned on, `/docs`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from app import __version__
from app.api.deps import PrincipalDep, SettingsDep, access
from app.settings import RouteSettings

router = APIRouter()
docs_router = APIRouter()


@router.get("/version")
async def version(settings: SettingsDep, principal: PrincipalDep) -> dict[str, Any]:
    """The version, and the backend behind each route the caller's key may use."""
    return {
        "version": __version__,
        "routes": {
            name: {
                "backend": route.backend,
                "agent": _agent(route),
                "upstream": route.upstream if route.backend == "assistants" else "stream",
            }
            for name, route in settings.routes.items()
            if principal.may_use(name)
        },
    }


def _agent(route: RouteSettings) -> str:
    if route.agent is not None:
        return f"{route.agent.name}:{route.agent.version or 'latest'}"
    return route.assistant_id or ""


@router.get("/openapi.json", include_in_schema=False, dependencies=[Depends(access("openapi_auth"))])
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@docs_router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="Agent Bridge")
