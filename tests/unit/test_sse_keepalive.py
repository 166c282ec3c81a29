"""The SSE keep-alive wrapper: comments while the source is quiet, the source never interrupted,
one owner for the pump (outcomes only; no durations are asserted)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.api.sse import KEEPALIVE, KeepAlive


class Source:
    """Frames released one by one by the test; records how it ended."""

    def __init__(self) -> None:
        self.release: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.ended: str | None = None

    async def frames(self) -> AsyncIterator[bytes]:
        try:
            while (frame := await self.release.get()) is not None:
                yield frame
            self.ended = "finished"
        except asyncio.CancelledError:
            self.ended = "cancelled"
            raise


async def test_a_quiet_source_gets_comments_and_its_frames_still_arrive_whole() -> None:
    source = Source()
    stream = KeepAlive(source.frames(), 0.01)
    assert await anext(stream) == KEEPALIVE
    assert await anext(stream) == KEEPALIVE
    await source.release.put(b"data: 1\n\n")
    frames = [await anext(stream)]
    while frames[-1] == KEEPALIVE:
        frames.append(await anext(stream))
    assert frames[-1] == b"data: 1\n\n"
    await source.release.put(None)
    rest = [frame async for frame in stream]
    assert set(rest) <= {KEEPALIVE}
    assert source.ended == "finished"  # the comments never cancelled the pending read
    await stream.aclose()


async def test_a_busy_source_passes_through_unchanged() -> None:
    async def frames() -> AsyncIterator[bytes]:
        for i in range(50):
            yield b"data: %d\n\n" % i

    got = [frame async for frame in KeepAlive(frames(), 3600)]
    assert got == [b"data: %d\n\n" % i for i in range(50)]


async def test_aclose_cancels_the_source_once_and_stops_the_stream() -> None:
    source = Source()
    stream = KeepAlive(source.frames(), 3600)
    await source.release.put(b"data: 1\n\n")
    assert await anext(stream) == b"data: 1\n\n"
    await stream.aclose()
    assert source.ended == "cancelled"
    await stream.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_aclose_before_the_first_read_closes_the_source() -> None:
    started = False

    async def frames() -> AsyncIterator[bytes]:
        nonlocal started
        started = True
        yield b"x"

    source = frames()
    stream = KeepAlive(source, 1)
    await stream.aclose()
    assert not started
    with pytest.raises(StopAsyncIteration):
        await anext(source)


async def test_a_source_error_reaches_the_reader() -> None:
    async def frames() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        raise ValueError("boom")

    stream = KeepAlive(frames(), 3600)
    assert await anext(stream) == b"data: 1\n\n"
    with pytest.raises(ValueError, match="boom"):
        await anext(stream)


async def test_cancelling_the_reader_leaves_the_pump_to_its_owner() -> None:
    source = Source()
    stream = KeepAlive(source.frames(), 3600)
    reader = asyncio.create_task(anext(stream))
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert source.ended is None  # still owned, still running
    await stream.aclose()
    assert source.ended == "cancelled"
