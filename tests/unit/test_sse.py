"""Upstream SSE parsing: events cut at blank lines whatever the chunking, CRLF or LF, comments skipped."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.backends.azure_auth import ApiKeyAuth
from app.backends.retry import RetryPolicy
from app.backends.upstream import SSEEvent, UpstreamClient, parse_event

STREAM = (
    b": keep-alive\n\n"
    b'event: thread.run.created\ndata: {"id":"run_1"}\n\n'
    b'event: thread.message.delta\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
    b"event: done\ndata: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent("thread.run.created", '{"id":"run_1"}'),
    SSEEvent("thread.message.delta", '{"a":\n1}'),
    SSEEvent("done", "[DONE]"),
]


class Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


async def _events(chunks: list[bytes]) -> list[SSEEvent]:
    client = UpstreamClient(httpx.AsyncClient(), ApiKeyAuth("k"), RetryPolicy.testing())
    response = httpx.Response(200, stream=Chunks(chunks))
    return [event async for event in client._events(response)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, len(STREAM)])
async def test_events_survive_any_chunking(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert await _events(chunks) == EXPECTED


async def test_a_last_event_without_blank_line_is_kept() -> None:
    assert await _events([b"event: x\ndata: 1"]) == [SSEEvent("x", "1")]


def test_parse_event_fields() -> None:
    assert parse_event(b"data: only data") == SSEEvent("message", "only data")
    assert parse_event(b"event:tight\ndata:{}") == SSEEvent("tight", "{}")
    assert parse_event(b": just a comment") is None
    assert SSEEvent("e", '{"k": [1]}').json() == {"k": [1]}
