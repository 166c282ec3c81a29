"""The server protocol's writer: what one event-loop step writes leaves in one write, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from app.http_protocol import StepWriter


class Transport(asyncio.Transport):
    """A transport that keeps what it is given (the socket side is not what is under test)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else default


async def test_writes_of_one_step_leave_together_and_later_steps_apart() -> None:
    transport = Transport()
    writer = StepWriter(transport, asyncio.get_running_loop())
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    writer.write(b"{}")
    assert transport.sent == [] and writer.get_write_buffer_size() == 40
    await asyncio.sleep(0)
    assert transport.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    writer.writelines([b"data: 1\n\n", memoryview(b"data: 2\n\n")])
    await asyncio.sleep(0)
    writer.write(b"")  # nothing to send schedules nothing
    writer.write(b"data: [DONE]\n\n")
    await asyncio.sleep(0)
    assert transport.sent[1:] == [b"data: 1\n\ndata: 2\n\n", b"data: [DONE]\n\n"]


async def test_close_sends_what_was_written_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    transport = Transport()
    writer = StepWriter(transport, loop)
    writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    writer.close()
    assert transport.sent == [b"HTTP/1.1 400 Bad Request\r\n\r\n"] and transport.closed
    await asyncio.sleep(0)  # the flush scheduled by the write finds nothing left
    assert len(transport.sent) == 1

    other = Transport()
    writer = StepWriter(other, loop)
    writer.write(b"partial")
    writer.abort()
    await asyncio.sleep(0)
    assert other.sent == [] and other.aborted
    assert writer.get_extra_info("sockname") == ("127.0.0.1", 8000)  # the rest is the transport's own


async def test_a_transport_closed_by_the_peer_gets_no_late_write() -> None:
    transport = Transport()
    writer = StepWriter(transport, asyncio.get_running_loop())
    writer.write(b"late")
    transport.closed = True  # the connection was lost within the step
    await asyncio.sleep(0)
    assert transport.sent == []
