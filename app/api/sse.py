"""Server-sent events to clients: framing, keep-alive comments on a quiet stream, and errors after
the first byte as in-stream error events."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.errors import BridgeError

log = logging.getLogger("agent_bridge.sse")

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
"""An SSE comment: every client ignores it (WHATWG HTML, "Server-sent events", lines starting with
a colon), every idle-timeout proxy sees bytes."""
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def data(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def event(name: str, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return b"event: " + name.encode() + b"\ndata: " + body + b"\n\n"


async def guarded(frames: AsyncIterator[bytes], on_error: Callable[[BridgeError], list[bytes]]) -> AsyncIterator[bytes]:
    """Relay `frames`; an error once streaming has begun becomes the frames `on_error` renders, and the
    stream then ends cleanly instead of being cut."""
    try:
        async for frame in frames:
            yield frame
    except BridgeError as exc:
        for frame in on_error(exc):
            yield frame
    except Exception:
        log.exception("unexpected error inside a stream")
        for frame in on_error(
            BridgeError("The bridge hit an internal error; it has been logged.", code="internal_error")
        ):
            yield frame


@dataclass(frozen=True, slots=True)
class _End:
    error: BaseException | None = None


class KeepAlive:
    """Relays SSE frames, and sends `KEEPALIVE` whenever `interval` seconds pass without a frame.

    The source is read by one pump task that this object owns: the first read starts it, `aclose()`
    cancels it and waits for it. A quiet source is therefore never interrupted to make room for a
    comment (cancelling its pending read would cancel the turn). Frames pass one at a time (a queue
    of one), so a slow client still slows the source down.

    Quiet is watched by one timer per stream, not a timeout per frame: a busy stream pays one clock
    read per frame, and the timer, when it finds `interval` passed since the last frame, queues the
    comment the reader then takes like any frame.
    """

    def __init__(self, frames: AsyncIterator[bytes], interval: float) -> None:
        self._frames = frames
        self._interval = interval
        self._queue: asyncio.Queue[bytes | _End] = asyncio.Queue(maxsize=1)
        self._pump: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._closed = False

    def __aiter__(self) -> KeepAlive:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        if self._pump is None:
            self._loop = loop = asyncio.get_running_loop()
            self._pump = loop.create_task(self._run(), name="sse-keepalive-pump")
            self._last = loop.time()
            self._timer = loop.call_at(self._last + self._interval, self._quiet)
        item = await self._queue.get()
        if isinstance(item, _End):
            self._stop()
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        if item is not KEEPALIVE and self._loop is not None:
            self._last = self._loop.time()
        return item

    def _quiet(self) -> None:
        """The timer: queue a comment if `interval` passed since the last frame, and re-arm."""
        loop = self._loop
        if self._closed or self._timer is None or loop is None:
            return
        now = loop.time()
        due = self._last + self._interval
        if now >= due:
            if self._queue.empty():
                self._queue.put_nowait(KEEPALIVE)
            self._last = now  # the comment counts as the stream's last bytes
            due = now + self._interval
        self._timer = loop.call_at(due, self._quiet)

    def _stop(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _run(self) -> None:
        try:
            async for frame in self._frames:
                await self._queue.put(frame)
        except Exception as exc:
            await self._queue.put(_End(exc))
            return
        await self._queue.put(_End())

    async def aclose(self) -> None:
        """End the pump (and with it the source) if it still runs; safe to call more than once."""
        self._stop()
        pump, self._pump = self._pump, None
        if pump is None:
            closer = getattr(self._frames, "aclose", None)
            if closer is not None:
                await closer()
            return
        if not pump.done():
            pump.cancel()
            # wait() does not raise the pump's CancelledError, only this task's own.
            await asyncio.wait({pump})


class EventStream(StreamingResponse):
    """A `text/event-stream` response with keep-alive comments every `keepalive` seconds of quiet
    (0: none). The response owns its `KeepAlive`: whatever ends the response ends the pump."""

    def __init__(self, frames: AsyncIterator[bytes], *, headers: dict[str, str], keepalive: float) -> None:
        self.keepalive = KeepAlive(frames, keepalive) if keepalive > 0 else None
        super().__init__(
            self.keepalive if self.keepalive is not None else frames,
            media_type="text/event-stream",
            headers={**HEADERS, **headers},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.keepalive is not None:
                await self.keepalive.aclose()
