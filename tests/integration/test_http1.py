"""The lean HTTP/1.1 stream client against a raw loopback server: reuse, stalls, closes, big bodies."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from app.backends.http1 import ConnectFailed, ReadTimeout, StreamBroken, StreamClient
from tests.support.servers import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    return head + await reader.readexactly(length)


def _chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"


class Server:
    def __init__(self) -> None:
        self.peers: list[int] = []
        self.requests: list[bytes] = []
        self.handler: Handler | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.append(writer.get_extra_info("peername")[1])
        self.writers.append(writer)
        try:
            while True:
                self.requests.append(await _request(reader))
                assert self.handler is not None
                await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    state = Server()
    listener = await asyncio.start_server(state.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        for writer in state.writers:
            writer.close()
        listener.close()


async def _body(client: StreamClient, url: str, read_s: float = 5.0) -> bytes:
    response = await client.send("POST", url, b'{"stream":true}', {"api-key": "k"}, connect_s=5, read_s=read_s)
    try:
        return await response.read()
    finally:
        response.close()


async def test_a_stream_read_to_its_end_reuses_its_connection(server: tuple[Server, str]) -> None:
    state, url = server

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"\r\n" + _chunked(b"data: 1\n\n", b"data: 2\n\n"))
        await writer.drain()

    state.handler = answer
    client = StreamClient(user_agent="t")
    try:
        assert [await _body(client, f"{url}/runs?api-version=x") for _ in range(3)] == [b"data: 1\n\ndata: 2\n\n"] * 3
    finally:
        client.close()
    assert len(state.peers) == 1  # one keep-alive connection for all three
    request = state.requests[0]
    assert request.startswith(b"POST /runs?api-version=x HTTP/1.1\r\n")
    assert b"\r\napi-key: k\r\n" in request and b"\r\nContent-Length: 15\r\n" in request
    assert request.endswith(b'\r\n\r\n{"stream":true}')


async def test_connection_close_and_idle_expiry_open_a_new_connection(server: tuple[Server, str]) -> None:
    state, url = server
    close = True

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        extra = b"Connection: close\r\n" if close else b""
        writer.write(SSE_HEAD + extra + b"\r\n" + _chunked(b"data: x\n\n"))
        await writer.drain()

    state.handler = answer
    client = StreamClient(keepalive_s=0.2)
    try:
        await _body(client, url)
        close = False
        await _body(client, url)  # the server said close: a new connection
        await asyncio.sleep(0.3)
        await _body(client, url)  # idle past keep-alive: a new connection again
        await _body(client, url)  # fresh: reused
    finally:
        client.close()
    assert len(state.peers) == 3


async def test_a_stall_mid_stream_is_a_read_timeout_and_the_connection_is_dropped(server: tuple[Server, str]) -> None:
    state, url = server
    stall = True

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"\r\n" + b"9\r\ndata: 1\n\n\r\n")  # one event, then silence
        await writer.drain()
        if stall:
            await asyncio.sleep(30)
        writer.write(b"0\r\n\r\n")

    state.handler = answer
    client = StreamClient()
    try:
        response = await client.send("POST", url, b"{}", {}, connect_s=5, read_s=0.3)
        assert await response.readany() == b"data: 1\n\n"
        with pytest.raises(ReadTimeout):
            await asyncio.wait_for(response.readany(), 5)
        response.close()
        stall = False
        assert await _body(client, url) == b"data: 1\n\n"
    finally:
        client.close()
    assert len(state.peers) == 2  # the stalled connection was never handed out again


async def test_a_reset_mid_stream_is_a_broken_stream(server: tuple[Server, str]) -> None:
    state, url = server

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"\r\n" + b"9\r\ndata: 1\n\n\r\n")
        await writer.drain()
        writer.transport.abort()

    state.handler = answer
    client = StreamClient()
    try:
        response = await client.send("POST", url, b"{}", {}, connect_s=5, read_s=5)
        with pytest.raises(StreamBroken):
            await asyncio.wait_for(response.read(), 5)
        response.close()
    finally:
        client.close()


async def test_a_body_larger_than_the_read_ahead_arrives_whole_to_a_slow_reader(server: tuple[Server, str]) -> None:
    state, url = server
    parts = [bytes([65 + n % 26]) * 65536 for n in range(40)]  # 2.5 MiB, ten times the read-ahead

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"\r\n" + _chunked(*parts))
        await writer.drain()

    state.handler = answer
    client = StreamClient()
    try:
        response = await client.send("POST", url, b"{}", {}, connect_s=5, read_s=5)
        received = bytearray()
        async with asyncio.timeout(20):  # a read-ahead never resumed would hang here
            while chunk := await response.readany():
                received += chunk
                await asyncio.sleep(0.001)
        assert bytes(received) == b"".join(parts)
    finally:
        client.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate (and its key, in one file) for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed")
    pem = tmp_path_factory.mktemp("tls") / "server.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    subprocess.run(
        ["openssl", *request, "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(pem), "-out", str(pem)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return pem


async def test_https_origins_are_verified(certificate: Path) -> None:
    state = Server()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"\r\n" + _chunked(b"data: tls\n\n"))
        await writer.drain()

    state.handler = answer
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(certificate)
    listener = await asyncio.start_server(state.serve, "127.0.0.1", 0, ssl=served)
    url = f"https://127.0.0.1:{listener.sockets[0].getsockname()[1]}/runs"
    trusting = StreamClient(tls=ssl.create_default_context(cafile=str(certificate)))
    default = StreamClient()  # the system's CAs, which never signed this certificate
    try:
        assert await _body(trusting, url) == b"data: tls\n\n"
        assert await _body(trusting, url) == b"data: tls\n\n"
        assert len(state.peers) == 1  # kept alive over TLS too
        with pytest.raises(ConnectFailed, match="SSL"):
            await _body(default, url)
    finally:
        trusting.close()
        default.close()
        for writer in state.writers:
            writer.close()
        listener.close()


async def test_nothing_listening_is_connect_failed() -> None:
    client = StreamClient()
    try:
        with pytest.raises(ConnectFailed):
            await client.send("POST", f"http://127.0.0.1:{free_port()}/x", b"{}", {}, connect_s=2, read_s=2)
    finally:
        client.close()
