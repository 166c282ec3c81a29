"""`POST /v1/chat/completions`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.api import bodies, errors, sse, turn_routes, warnings
from app.api.deps import authenticate
from app.api.turns import TurnStream, bound_headers, open_watched
from app.core import approvals, chat_codec, timing
from app.core.annotations import chat_annotation
from app.core.events import ApprovalRequired, Cited, TextDelta, ToolCallsRequired, TurnCompleted, TurnEvent
from app.core.service import TurnService
from app.core.turn import ToolCall
from app.errors import BridgeError, UpstreamError
from app.wire.chat import ChatCompletionRequest

_CONVERSATION_ID = bodies.Header("x-conversation-id", max_length=256)


def install(app: FastAPI) -> None:
    """A plain Starlette route on the app itself (see `app.api.turn_routes`)."""
    route = turn_routes.TurnRoute(
        "/v1/chat/completions", chat_completions, body=ChatCompletionRequest, headers=[_CONVERSATION_ID]
    )
    turn_routes.add(app, route)


async def chat_completions(request: Request) -> JSONResponse | sse.EventStream:
    # The body, the key, then the header and the body's fields: the order FastAPI checked them in.
    read = await bodies.read(request, ChatCompletionRequest)
    service: TurnService = request.app.state.service
    principal = authenticate(request, bodies.header(request, b"authorization"))
    problems: list[Any] = []
    x_conversation_id = _CONVERSATION_ID.read(request, problems)
    body = read.valid(problems)
    request.state.model = body.model
    if request.app.state.settings.log_content:
        request.state.content = _tail(body.messages[-1].content)
    principal.check_model(body.model)
    warnings.note(request, "chat", body)
    turn = await service.chat(body, owner=principal.name, conversation_id=x_conversation_id)
    # Up to Azure's first answer errors are plain HTTP errors; the route renders, the turn owns its end.
    bound, watch = await open_watched(request, turn, keep_watching=not body.stream)
    headers = bound_headers(bound)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        renderer = chat_codec.ChunkRenderer(body.model, include_usage=include_usage)
        frames = sse.guarded(_chunks(renderer, turn.events(), request), lambda e: _stream_error(request, e))
        return TurnStream(frames, turn, headers, keepalive=request.app.state.settings.sse_keepalive)
    try:
        return await _complete(body.model, turn.events(), headers, request)
    finally:
        watch.stop()
        await turn.end()


async def _complete(
    model: str, events: AsyncIterator[TurnEvent], headers: dict[str, str], request: Request
) -> JSONResponse:
    parts: list[str] = []
    calls: tuple[ToolCall, ...] = ()
    cited: list[dict[str, object]] = []
    done: TurnCompleted | None = None
    async for event in events:
        if isinstance(event, TextDelta):
            parts.append(event.text)
        elif isinstance(event, Cited):
            files_url = _files_url(request)
            cited += [chat_annotation(a, files_url) for a in event.annotations]
        elif isinstance(event, ToolCallsRequired):
            calls = event.calls
        elif isinstance(event, ApprovalRequired):
            calls = tuple(approvals.as_tool_call(r) for r in event.requests)
        elif isinstance(event, TurnCompleted):
            done = event
    if done is None:
        raise UpstreamError("The turn ended without an answer from the agent.")
    completion = chat_codec.render_completion(
        completion_id=chat_codec.new_completion_id(),
        model=model,
        created=int(time.time()),
        text="".join(parts),
        tool_calls=calls,
        finish_reason=done.finish_reason,
        usage=done.usage,
        annotations=cited,
    )
    current = timing.current()
    if current is not None:
        headers["x-agent-bridge-overhead-ms"] = f"{current.overhead_ms():.3f}"
    return JSONResponse(completion, headers=headers)


async def _chunks(
    renderer: chat_codec.ChunkRenderer, events: AsyncIterator[TurnEvent], request: Request
) -> AsyncIterator[bytes]:
    yield sse.data(renderer.role())
    async for event in events:
        if isinstance(event, TextDelta):
            yield sse.data(renderer.text(event.text))
        elif isinstance(event, Cited):
            files_url = _files_url(request)
            yield sse.data(renderer.annotations([chat_annotation(a, files_url) for a in event.annotations]))
        elif isinstance(event, ToolCallsRequired):
            yield sse.data(renderer.tool_calls(event.calls))
        elif isinstance(event, ApprovalRequired):
            yield sse.data(renderer.tool_calls(tuple(approvals.as_tool_call(r) for r in event.requests)))
        elif isinstance(event, TurnCompleted):
            yield sse.data(renderer.finish(event.finish_reason))
            if renderer.include_usage:
                yield sse.data(renderer.usage(event.usage))
    yield sse.DONE


def _files_url(request: Request) -> str:
    """Where a cited file is fetched from, on this bridge; built only for a turn that cites (two dozen calls)."""
    return f"{str(request.base_url).rstrip('/')}/v1/files"


def _tail(content: object) -> str:
    return str(content)[:1000]


def _stream_error(request: Request, error: BridgeError) -> list[bytes]:
    errors.note(request, error.code)
    return [sse.data(error.envelope()), sse.DONE]
