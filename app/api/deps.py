"""What routes get from the composition root, as `Annotated[..., Depends()]` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.core.responses_service import ResponsesService
from app.core.service import TurnService
from app.settings import Settings
from app.state.store import RedisStore


def _service(request: Request) -> TurnService:
    service: TurnService = request.app.state.service
    return service


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _store(request: Request) -> RedisStore:
    store: RedisStore = request.app.state.store
    return store


def _owner(request: Request) -> str:
    # Client keys arrive with the isolation issue; until then every caller is one owner.
    return "anonymous"


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


ServiceDep = Annotated[TurnService, Depends(_service)]
SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[RedisStore, Depends(_store)]
OwnerDep = Annotated[str, Depends(_owner)]
RequestIdDep = Annotated[str, Depends(_request_id)]


def _responses(request: Request) -> ResponsesService:
    service: ResponsesService = request.app.state.responses
    return service


ResponsesDep = Annotated[ResponsesService, Depends(_responses)]
