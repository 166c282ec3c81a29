"""`GET /v1/files/{file_id}/content`: files an agent's turn produced, relayed to the owner of that turn.

A file is whatever the agent's tools wrote (HTML, SVG, scripts...): it is served as an attachment
(`Content-Disposition: attachment`, `X-Content-Type-Options: nosniff`), so a browser saves it rather
than rendering it in the bridge's origin, and streamed from Azure as it arrives.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.api.deps import OwnerDep
from app.core.files import FileRelay

router = APIRouter()


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, request: Request, owner: OwnerDep) -> StreamingResponse:
    relay: FileRelay = request.app.state.files
    chunks, media_type = await relay.content(file_id, owner=owner)
    headers = {
        "Content-Disposition": "attachment",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    return StreamingResponse(chunks, media_type=media_type, headers=headers)
