"""What routes get from the composition root, as `Annotated[..., Depends()]` aliases (and `authenticate`,
for the turn routes that read their request themselves, see `app.api.bodies`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import Depends, Header, Request

from app.core.conversations_service import ConversationsService
from app.core.keys import KeyRing, Principal
from app.core.responses_service import ResponsesService
from app.core.service import TurnService
from app.settings import Settings
from app.state.store import RedisStore


async def _service(request: Request) -> TurnService:
    service: TurnService = request.app.state.service
    return service


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _store(request: Request) -> RedisStore:
    store: RedisStore = request.app.state.store
    return store


def authenticate(request: Request, authorization: str | None) -> Principal:
    """The caller's principal (401 without a valid key), noted for the access line."""
    keys: KeyRing = request.app.state.keys
    principal = keys.authenticate(authorization)
    request.state.owner = principal.name
    return principal


async def _principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    return authenticate(request, authorization)


async def _owner(principal: Annotated[Principal, Depends(_principal)]) -> str:
    return principal.name


async def _admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    keys: KeyRing = request.app.state.keys
    principal = keys.authenticate_admin(authorization, "This endpoint")
    request.state.owner = principal.name
    return principal


async def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


ServiceDep = Annotated[TurnService, Depends(_service)]
SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[RedisStore, Depends(_store)]
PrincipalDep = Annotated[Principal, Depends(_principal)]
OwnerDep = Annotated[str, Depends(_owner)]
AdminDep = Annotated[Principal, Depends(_admin)]
RequestIdDep = Annotated[str, Depends(_request_id)]


async def _responses(request: Request) -> ResponsesService:
    service: ResponsesService = request.app.state.responses
    return service


ResponsesDep = Annotated[ResponsesService, Depends(_responses)]


def access(setting: Literal["metrics_auth", "openapi_auth"]) -> Callable[..., Awaitable[None]]:
    """A dependency that lets a request through as `server.<setting>` says: open, any key, admin key."""

    async def check(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
        settings: Settings = request.app.state.settings
        level = getattr(settings.server, setting)
        if level == "open":
            return
        keys: KeyRing = request.app.state.keys
        if level == "admin":
            keys.authenticate_admin(authorization, f"{request.url.path} on this bridge")
        else:
            keys.authenticate(authorization)

    return check


async def _conversations(request: Request) -> ConversationsService:
    service: ConversationsService = request.app.state.conversations
    return service


ConversationsDep = Annotated[ConversationsService, Depends(_conversations)]
