"""`GET /v1/files/{file_id}/content`: files an agent's turn produced, relayed to the owner of that turn."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.deps import OwnerDep
from app.core.files import FileRelay

router = APIRouter()


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, request: Request, owner: OwnerDep) -> Response:
    relay: FileRelay = request.app.state.files
    content, media_type = await relay.content(file_id, owner=owner)
    return Response(content, media_type=media_type)
