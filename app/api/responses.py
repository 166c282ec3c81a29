"""`POST /v1/responses`, `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from app.api import sse
from app.api.deps import OwnerDep, PrincipalDep, ResponsesDep
from app.core import timing
from app.core.responses_service import StreamEvent, final_response
from app.errors import BridgeError, InvalidRequestError, UpstreamError
from app.wire.responses import ResponsesRequest

router = APIRouter()


@router.post("/v1/responses", response_model=None)
async def create_response(
    body: ResponsesRequest, request: Request, service: ResponsesDep, principal: PrincipalDep
) -> JSONResponse | StreamingResponse:
    request.state.model = body.model
    if request.app.state.settings.log_content:
        request.state.content = str(body.input)[:1000]
    principal.check_model(body.model)
    if body.background:
        raise InvalidRequestError("background responses are not supported by this bridge.", param="background")
    # What the client sent, extra fields included, for the Foundry pass-through.
    raw: dict[str, Any] = body.model_dump(exclude_unset=True)
    events = service.respond(body, raw, owner=principal.name)
    try:
        first = await anext(events)
    except StopAsyncIteration as exc:
        raise UpstreamError("The agent ended the response before it began.") from exc
    headers = _headers(first)
    if body.stream:
        counter = _Sequence(first)
        frames = sse.guarded(_frames(first, events, counter), counter.error_frames)
        return StreamingResponse(frames, media_type="text/event-stream", headers={**sse.HEADERS, **headers})
    collected = [first]
    async for event in events:
        collected.append(event)
    response = final_response(collected)
    current = timing.current()
    if current is not None:
        headers["x-agent-bridge-overhead-ms"] = f"{current.overhead_ms():.3f}"
    return JSONResponse(response, headers=headers)


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, service: ResponsesDep, owner: OwnerDep) -> JSONResponse:
    return JSONResponse(await service.get(response_id, owner=owner))


@router.get("/v1/responses/{response_id}/input_items")
async def list_input_items(response_id: str, request: Request, service: ResponsesDep, owner: OwnerDep) -> JSONResponse:
    params = {k: v for k, v in request.query_params.items() if k in _LIST_PARAMS}
    return JSONResponse(await service.input_items(response_id, owner=owner, params=params))


_LIST_PARAMS = ("limit", "order", "after", "before", "include[]", "include")


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, service: ResponsesDep, owner: OwnerDep) -> JSONResponse:
    return JSONResponse(await service.delete(response_id, owner=owner))


def _headers(first: StreamEvent) -> dict[str, str]:
    response = first.get("response") or {}
    return {"x-response-id": str(response["id"])} if response.get("id") else {}


class _Sequence:
    """Tracks the stream's sequence numbers so an in-stream error event continues them."""

    def __init__(self, first: StreamEvent) -> None:
        self.last = int(first.get("sequence_number", 0))

    def seen(self, event: StreamEvent) -> None:
        number = event.get("sequence_number")
        if isinstance(number, int):
            self.last = number

    def error_frames(self, error: BridgeError) -> list[bytes]:
        self.last += 1
        payload = {
            "type": "error",
            "sequence_number": self.last,
            "code": error.code,
            "message": error.message,
            "param": error.param,
        }
        return [sse.event("error", payload)]


async def _frames(first: StreamEvent, rest: AsyncIterator[StreamEvent], counter: _Sequence) -> AsyncIterator[bytes]:
    yield sse.event(str(first["type"]), first)
    async for event in rest:
        counter.seen(event)
        yield sse.event(str(event["type"]), event)
