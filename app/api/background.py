"""Background responses over HTTP: the create's answer, `GET /v1/responses/{id}?stream=true`, `POST .../cancel`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api import sse
from app.api.deps import OwnerDep
from app.core.background_responses import BackgroundResponses
from app.core.response_works import StreamEvent
from app.errors import BridgeError, InvalidRequestError
from app.wire.responses import ResponsesRequest

router = APIRouter()


def _service(request: Request) -> BackgroundResponses:
    service: BackgroundResponses = request.app.state.background
    return service


async def create(
    request: Request, body: ResponsesRequest, raw: dict[str, Any], owner: str
) -> JSONResponse | sse.EventStream:
    """`background: true`: the Response at once (`queued`/`in_progress`), or, streamed, its events live."""
    service = _service(request)
    response = await service.create(body, raw, owner=owner)
    headers = {"x-response-id": str(response["id"])}
    if not body.stream:
        return JSONResponse(response, headers=headers)
    events = await service.stream(str(response["id"]), owner=owner, after=-1)
    return _event_stream(request, events, headers)


def _event_stream(request: Request, events: AsyncIterator[StreamEvent], headers: dict[str, str]) -> sse.EventStream:
    last = [-1]

    async def frames() -> AsyncIterator[bytes]:
        async for event in events:
            if isinstance(event.get("sequence_number"), int):
                last[0] = event["sequence_number"]
            yield sse.event(str(event["type"]), event)

    def error_frames(error: BridgeError) -> list[bytes]:
        last[0] += 1
        payload = {
            "type": "error",
            "sequence_number": last[0],
            "code": error.code,
            "message": error.message,
            "param": error.param,
        }
        return [sse.event("error", payload)]

    keepalive = request.app.state.settings.sse_keepalive
    return sse.EventStream(sse.guarded(frames(), error_frames), headers=headers, keepalive=keepalive)


async def stream(request: Request, response_id: str, owner: str) -> sse.EventStream:
    """`GET /v1/responses/{id}?stream=true[&starting_after=N]`: the events after N, then live to the end."""
    raw = request.query_params.get("starting_after")
    try:
        after = -1 if raw is None else int(raw)
    except ValueError as exc:
        raise InvalidRequestError(
            "Invalid 'starting_after': expected an integer.", param="starting_after", code="invalid_type"
        ) from exc
    events = await _service(request).stream(response_id, owner=owner, after=after)
    return _event_stream(request, events, {"x-response-id": response_id})


@router.post("/v1/responses/{response_id}/cancel")
async def cancel_response(response_id: str, request: Request, owner: OwnerDep) -> JSONResponse:
    return JSONResponse(await _service(request).cancel(response_id, owner=owner))
