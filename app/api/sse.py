"""Server-sent events to clients: framing, and errors after the first byte as in-stream error events."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from app.errors import BridgeError

log = logging.getLogger("agent_bridge.sse")

DONE = b"data: [DONE]\n\n"
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
