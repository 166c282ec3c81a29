"""`POST /v1/responses`, `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from app.api import background, bodies, errors, sse, turn_routes, warnings
from app.api.deps import OwnerDep, ResponsesDep, authenticate
from app.api.turns import TurnStream, bound_headers, open_watched
from app.core import timing
from app.core.response_works import StreamEvent, final_response
from app.core.responses_service import ResponsesService
from app.errors import BridgeError
from app.wire.responses import ResponsesRequest

router = APIRouter()


def install(app: FastAPI) -> None:
    """`POST /v1/responses` as a plain Starlette route on the app itself (see `app.api.turn_routes`);
    the rest is `router`'s."""
    turn_routes.add(app, turn_routes.TurnRoute("/v1/responses", create_response, body=ResponsesRequest))
    app.include_router(router)
    app.include_router(background.router)


async def create_response(request: Request) -> JSONResponse | sse.EventStream:
    # The body, the key, then the body's fields: the order FastAPI checked them in.
    read = await bodies.read(request, ResponsesRequest)
    service: ResponsesService = request.app.state.responses
    principal = authenticate(request, bodies.header(request, b"authorization"))
    body = read.valid()
    request.state.model = body.model
    if request.app.state.settings.log_content:
        request.state.content = str(body.input)[:1000]
    principal.check_model(body.model)
    warnings.note(request, "responses", body)
    # What the client sent, extra fields included, for the Foundry pass-through.
    raw: dict[str, Any] = body.model_dump(exclude_unset=True)
    if body.background:
        return await background.create(request, body, raw, principal.name)
    turn = await service.respond(body, raw, owner=principal.name)
    bound, watch = await open_watched(request, turn, keep_watching=not body.stream)
    headers = bound_headers(bound)
    if body.stream:
        counter = _Sequence(request)
        frames = sse.guarded(_frames(turn.events(), counter), counter.error_frames)
        return TurnStream(frames, turn, headers, keepalive=request.app.state.settings.sse_keepalive)
    try:
        collected = [event async for event in turn.events()]
    finally:
        watch.stop()
        await turn.end()
    response = final_response(collected)
    current = timing.current()
    if current is not None:
        headers["x-agent-bridge-overhead-ms"] = f"{current.overhead_ms():.3f}"
    return JSONResponse(response, headers=headers)


@router.get("/v1/responses/{response_id}", response_model=None)
async def get_response(
    response_id: str, request: Request, service: ResponsesDep, owner: OwnerDep
) -> JSONResponse | sse.EventStream:
    if request.query_params.get("stream") == "true":
        return await background.stream(request, response_id, owner)
    return JSONResponse(await service.get(response_id, owner=owner))


@router.get("/v1/responses/{response_id}/input_items")
async def list_input_items(response_id: str, request: Request, service: ResponsesDep, owner: OwnerDep) -> JSONResponse:
    params = {k: v for k, v in request.query_params.items() if k in _LIST_PARAMS}
    return JSONResponse(await service.input_items(response_id, owner=owner, params=params))


_LIST_PARAMS = ("limit", "order", "after", "before", "include[]", "include")


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, service: ResponsesDep, owner: OwnerDep) -> JSONResponse:
    return JSONResponse(await service.delete(response_id, owner=owner))


class _Sequence:
    """Tracks the stream's sequence numbers so an in-stream error event continues them, and notes the
    code of an error the stream reports (the turn's own `error` event, a relayed `response.failed`)."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.last = 0
        self.failed = False

    def seen(self, event: StreamEvent) -> None:
        number = event.get("sequence_number")
        if isinstance(number, int):
            self.last = number
        kind = event.get("type")
        if kind == "error":
            # The error event says the code the client acts on; a response.failed around it, a coarser one.
            errors.note(self.request, event.get("code"))
            self.failed = True
        elif kind == "response.failed" and not self.failed:
            errors.note(self.request, (event.get("response", {}).get("error") or {}).get("code"))

    def error_frames(self, error: BridgeError) -> list[bytes]:
        errors.note(self.request, error.code)
        self.failed = True
        self.last += 1
        payload = {
            "type": "error",
            "sequence_number": self.last,
            "code": error.code,
            "message": error.message,
            "param": error.param,
        }
        return [sse.event("error", payload)]


async def _frames(events: AsyncIterator[StreamEvent], counter: _Sequence) -> AsyncIterator[bytes]:
    async for event in events:
        counter.seen(event)
        yield sse.event(str(event["type"]), event)
