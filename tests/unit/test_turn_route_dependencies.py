"""The plain turn routes run no FastAPI dependency: an app- or router-level `dependencies=` would skip them.

FastAPI copies app-level and router-level `dependencies=` into the routes it builds (`APIRoute`); the
turn routes (`app.api.turn_routes`) are Starlette's and never see them, so such a dependency (an auth
check, say) would silently not run for a chat turn. Route-level `dependencies=` on FastAPI's own
routes are fine: they name the route they guard.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel

from app.api import turn_routes

API = Path(__file__).resolve().parents[2] / "app" / "api"


def broad_dependencies(source: str) -> list[str]:
    """`FastAPI(...)`, `APIRouter(...)` and `include_router(...)` calls in `source` that pass `dependencies=`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name in ("FastAPI", "APIRouter", "include_router") and any(k.arg == "dependencies" for k in node.keywords):
            found.append(f"line {node.lineno}: {name}(dependencies=...)")
    return found


def test_no_app_or_router_level_dependencies_in_the_api() -> None:
    offenders = {p.name: broad_dependencies(p.read_text()) for p in API.glob("*.py")}
    assert {name: found for name, found in offenders.items() if found} == {}, (
        "app- or router-level dependencies= never run for the plain turn routes (app/api/turn_routes.py)"
    )


@pytest.mark.parametrize(
    "source",
    [
        "app = FastAPI(title='x', dependencies=[Depends(check)])",
        "router = APIRouter(prefix='/v1', dependencies=[Depends(check)])",
        "app.include_router(router, dependencies=[Depends(check)])",
    ],
)
def test_the_check_finds_each_broad_form(source: str) -> None:
    assert broad_dependencies(source) != []


def test_a_route_level_dependency_is_not_flagged() -> None:
    assert broad_dependencies("@router.get('/metrics', dependencies=[Depends(check)])\ndef f(): ...") == []


class Body(BaseModel):
    pass


async def endpoint(request: object) -> None:
    raise AssertionError("never called")


def test_a_turn_route_refuses_an_app_with_app_level_dependencies() -> None:
    async def check() -> None:
        pass

    app = FastAPI(dependencies=[Depends(check)])
    with pytest.raises(RuntimeError, match="app-level dependencies"):
        turn_routes.add(app, turn_routes.TurnRoute("/v1/chat/completions", endpoint, body=Body))  # type: ignore[arg-type]
    turn_routes.add(FastAPI(), turn_routes.TurnRoute("/v1/chat/completions", endpoint, body=Body))  # type: ignore[arg-type]
