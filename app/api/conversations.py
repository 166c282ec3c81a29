"""`/v1/conversations` (create, get, update, delete; items list, add, get, delete) on every route kind."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from app.api.deps import ConversationsDep, PrincipalDep
from app.core.conversations_service import ConversationsService
from app.core.keys import Principal

router = APIRouter()

_LIST_PARAMS = ("limit", "order", "after", "include")
JsonBody = Body(default_factory=dict)


@router.post("/v1/conversations")
async def create_conversation(
    service: ConversationsDep, principal: PrincipalDep, body: dict[str, Any] = JsonBody
) -> JSONResponse:
    return JSONResponse(await service.create(dict(body), owner=principal.name, may_use=principal.may_use))


@router.get("/v1/conversations/{conversation_id}")
async def get_conversation(
    conversation_id: str, request: Request, service: ConversationsDep, principal: PrincipalDep
) -> JSONResponse:
    return JSONResponse(await _call(service, principal, request, "GET", conversation_id))


@router.post("/v1/conversations/{conversation_id}")
async def update_conversation(
    conversation_id: str,
    request: Request,
    service: ConversationsDep,
    principal: PrincipalDep,
    body: dict[str, Any] = JsonBody,
) -> JSONResponse:
    return JSONResponse(await _call(service, principal, request, "POST", conversation_id, json=body))


@router.delete("/v1/conversations/{conversation_id}")
async def delete_conversation(
    conversation_id: str, request: Request, service: ConversationsDep, principal: PrincipalDep
) -> JSONResponse:
    return JSONResponse(await _call(service, principal, request, "DELETE", conversation_id))


@router.get("/v1/conversations/{conversation_id}/items")
async def list_items(
    conversation_id: str, request: Request, service: ConversationsDep, principal: PrincipalDep
) -> JSONResponse:
    params = {k: v for k, v in request.query_params.items() if k in _LIST_PARAMS}
    return JSONResponse(await _call(service, principal, request, "GET", conversation_id, "/items", params=params))


@router.post("/v1/conversations/{conversation_id}/items")
async def create_items(
    conversation_id: str,
    request: Request,
    service: ConversationsDep,
    principal: PrincipalDep,
    body: dict[str, Any] = JsonBody,
) -> JSONResponse:
    return JSONResponse(await _call(service, principal, request, "POST", conversation_id, "/items", json=body))


@router.get("/v1/conversations/{conversation_id}/items/{item_id}")
async def get_item(
    conversation_id: str, item_id: str, request: Request, service: ConversationsDep, principal: PrincipalDep
) -> JSONResponse:
    return JSONResponse(await _call(service, principal, request, "GET", conversation_id, f"/items/{item_id}"))


@router.delete("/v1/conversations/{conversation_id}/items/{item_id}")
async def delete_item(
    conversation_id: str, item_id: str, request: Request, service: ConversationsDep, principal: PrincipalDep
) -> JSONResponse:
    return JSONResponse(await _call(service, principal, request, "DELETE", conversation_id, f"/items/{item_id}"))


async def _call(
    service: ConversationsService,
    principal: Principal,
    request: Request,
    method: str,
    conversation_id: str,
    suffix: str = "",
    **kwargs: Any,
) -> dict[str, Any]:
    return await service.call(
        method,
        conversation_id,
        suffix,
        owner=principal.name,
        may_use=principal.may_use,
        model=request.query_params.get("model"),
        **kwargs,
    )
