"""A turn over HTTP: opened while the client is watched for a hang-up, then rendered as JSON or SSE.

The routes render; this module makes sure that whatever happens on the HTTP side (the client hangs
up before or after the headers, the response is never started) the turn still gets its one end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from starlette.types import Receive, Scope, Send

from app.api import sse
from app.core import tracing
from app.core.events import ThreadBound
from app.core.lifetime import Turn
from app.core.metering import RATE_HEADERS
from app.errors import ClientDisconnectedError


class HangUpWatch:
    """Ends the turn (its run cancelled, its lock freed) when the client disconnects, streamed or not."""

    __slots__ = ("_task",)

    def __init__(self, request: Request, turn: Turn[Any]) -> None:
        receive = request.receive

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        self._task = asyncio.ensure_future(disconnected())
        self._task.add_done_callback(
            lambda task: (
                None
                if task.cancelled() or task.exception() is not None
                else turn.abort(ClientDisconnectedError("The client closed the connection."))
            )
        )

    def stop(self) -> None:
        self._task.cancel()


async def open_watched(request: Request, turn: Turn[Any], *, keep_watching: bool) -> tuple[ThreadBound, HangUpWatch]:
    """Open the turn; a hang-up during `open` ends it too (and so do errors: the turn ends itself)."""
    if tracing.ENABLED:
        tracing.accept(request.headers)  # the client's traceparent: the turn's span continues its trace
    watch = HangUpWatch(request, turn)
    try:
        bound = await turn.open()
    except BaseException:
        watch.stop()
        raise
    if not keep_watching:
        watch.stop()  # from here Starlette listens for the disconnect of a stream itself
    return bound, watch


def bound_headers(bound: ThreadBound) -> dict[str, str]:
    """The turn's own headers: where it runs, and its key's x-ratelimit-* (set when the turn was admitted)."""
    rate = RATE_HEADERS.get()
    headers: dict[str, str] = {} if rate is None else dict(rate)
    if bound.thread_id:
        headers["x-thread-id"] = bound.thread_id
    if bound.response_id:
        headers["x-response-id"] = bound.response_id
    return headers


class TurnStream(sse.EventStream):
    """A streamed turn: the turn is ended when the response is over, even if its body never started."""

    def __init__(
        self, frames: AsyncIterator[bytes], turn: Turn[Any], headers: dict[str, str], *, keepalive: float
    ) -> None:
        super().__init__(frames, headers=headers, keepalive=keepalive)
        self.turn = turn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.turn.end()
