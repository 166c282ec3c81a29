"""The bridge's HTTP/1.1 server protocol: uvicorn's httptools protocol, with one send() per event-loop step.

uvicorn writes a response's status line and headers, then its body, as two `transport.write` calls,
and each is a send() system call at once. On loopback and in VMs a send() costs about as much as all
of a turn's Python work put together (it runs the receiver's TCP processing and wakes it), so a
non-streamed answer paid for two. Here the writes made in one step of the event loop are joined and
leave together at the end of that step: a JSON answer is one send(), and SSE frames produced together
leave together. Nothing waits longer than the current step, so streams are not delayed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class StepWriter:
    """A transport wrapper whose writes within one event-loop step leave in one `write` at its end."""

    __slots__ = ("_loop", "_pending", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self.transport.is_closing():
            self.transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + sum(len(p) for p in self._pending)

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def close(self) -> None:
        self.flush()  # what was written before close() is still owed to the peer
        self.transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self.transport.abort()

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, pause_reading, ...) is the transport's own.
        return getattr(self.transport, name)


class StepWriteProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a `StepWriter` (pass as uvicorn's `http=`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(StepWriter(transport, self.loop))  # type: ignore[arg-type]
