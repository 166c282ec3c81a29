"""The upstream client against a raw loopback server sending what gateways in front of Azure send.

Close-delimited errors with Retry-After, 1xx before the answer, chunked bodies with trailers,
Content-Length bodies, keep-alive connections the server closed, redirects, and proxies from the
environment (HTTP_PROXY/NO_PROXY with IPs and `*.domain`). Every byte is written by hand here, so
each case is exactly what a gateway may send, whatever the app's HTTP library would prefer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from app.backends.azure_auth import ApiKeyAuth
from app.backends.http_client import http_client
from app.backends.retry import RetryPolicy
from app.backends.upstream import UpstreamClient
from app.errors import RateLimitError, UpstreamError

Reply = Callable[[asyncio.StreamWriter, bytes, int], Awaitable[bool]]
"""Answers one request (its head and body) on a connection; the int counts requests on that connection
from 0. Returns whether to keep reading requests on the connection."""

JSON_OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
SSE = b"event: thread.run.created\ndata: {}\n\nevent: done\ndata: [DONE]\n\n"


def chunked(*parts: bytes, trailers: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n" + trailers + b"\r\n"


class RawServer:
    """A loopback server answering each request with `reply`; it records each request and its connection."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[tuple[int, bytes]] = []
        """(connection number, request head and body) for every request, in order."""
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number, self.connections = self.connections, self.connections + 1
        self._writers.append(writer)
        try:
            for count in range(1000):
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                length = next((int(x.split(b":")[1]) for x in lines if x.lower().startswith(b"content-length")), 0)
                request = head + await reader.readexactly(length)
                self.requests.append((number, request))
                if not await self.reply(writer, request, count):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()


@pytest.fixture(params=["aiohttp", "httpx"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Reply], Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def start(reply: Reply) -> RawServer:
        server = RawServer(reply)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def http(transport: str) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(transport=transport) as client:  # type: ignore[arg-type]
        yield client


def upstream(http: httpx.AsyncClient, **policy: float) -> UpstreamClient:
    return UpstreamClient(http, ApiKeyAuth("k"), dataclasses.replace(RetryPolicy.testing(), **policy))


async def write(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def test_a_close_delimited_429_is_retried_after_its_retry_after(
    serve: Callable[[Reply], Awaitable[RawServer]], http: httpx.AsyncClient
) -> None:
    async def reply(writer: asyncio.StreamWriter, request: bytes, count: int) -> bool:
        if len(server.requests) == 1:  # a gateway's throttle: no length, the body ends when the connection does
            await write(writer, b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
            await write(writer, b'{"error":{"code":"429","message":"slow down"}}')
            return False
        await write(writer, JSON_OK)
        return True

    server = await serve(reply)
    started = time.monotonic()
    assert await upstream(http, max_delay_s=2.0).request("POST", f"{server.url}/runs", json={}, idempotent=False) == {
        "ok": True
    }
    assert time.monotonic() - started >= 1.0  # Retry-After's second, not the policy's 5 ms
    assert [number for number, _ in server.requests] == [0, 1]


async def test_a_persistent_close_delimited_502_keeps_its_body_and_a_429_its_retry_after(
    serve: Callable[[Reply], Awaitable[RawServer]], http: httpx.AsyncClient
) -> None:
    async def reply(writer: asyncio.StreamWriter, request: bytes, count: int) -> bool:
        if b"/throttled" in request:
            await write(writer, b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\n\r\nbusy")
        else:
            await write(writer, b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n\r\n<h1>502 Bad Gateway</h1>")
        return False

    server = await serve(reply)
    with pytest.raises(UpstreamError) as info:
        await upstream(http).request("GET", f"{server.url}/runs")
    assert info.value.message == "<h1>502 Bad Gateway</h1>"
    assert len(server.requests) == RetryPolicy.testing().max_attempts
    with pytest.raises(RateLimitError) as throttled:
        await upstream(http).request("GET", f"{server.url}/throttled")
    assert throttled.value.message == "busy" and throttled.value.headers["Retry-After"] == "30"
    assert len(server.requests) == RetryPolicy.testing().max_attempts + 1  # 30 s is the client's wait to make


async def test_1xx_answers_before_the_final_one_are_skipped(
    serve: Callable[[Reply], Awaitable[RawServer]], http: httpx.AsyncClient
) -> None:
    async def reply(writer: asyncio.StreamWriter, request: bytes, count: int) -> bool:
        await write(writer, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n")
        if b"/stream" in request:
            await write(writer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(SSE))
        else:
            await write(writer, JSON_OK)
        return True

    server = await serve(reply)
    client = upstream(http)
    assert await client.request("GET", f"{server.url}/thread") == {"ok": True}
    async with client.stream("POST", f"{server.url}/stream", json={}) as events:
        assert [event.event async for event in events] == ["thread.run.created", "done"]
    assert [number for number, _ in server.requests] == [0, 0]  # and the connection stayed usable


@pytest.mark.parametrize("framing", ["chunked with trailers", "content-length"])
async def test_a_stream_arrives_whole_and_its_connection_is_reused(
    serve: Callable[[Reply], Awaitable[RawServer]], http: httpx.AsyncClient, framing: str
) -> None:
    async def reply(writer: asyncio.StreamWriter, request: bytes, count: int) -> bool:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        if framing == "content-length":
            await write(writer, head + b"Content-Length: %d\r\n\r\n" % len(SSE) + SSE)
        else:
            await write(writer, head + b"Transfer-Encoding: chunked\r\nTrailer: X-Done\r\n\r\n")
            await write(writer, chunked(SSE[:20], SSE[20:], trailers=b"X-Done: yes\r\n"))
        return True

    server = await serve(reply)
    client = upstream(http)
    for _ in range(3):
        async with client.stream("POST", f"{server.url}/runs", json={"stream": True}) as events:
            assert [event.event async for event in events] == ["thread.run.created", "done"]
    assert [number for number, _ in server.requests] == [0, 0, 0]
    assert server.requests[0][1].endswith(b'\r\n\r\n{"stream":true}')


async def test_a_keep_alive_connection_the_server_closed_is_not_reused(
    serve: Callable[[Reply], Awaitable[RawServer]], http: httpx.AsyncClient
) -> None:
    async def reply(writer: asyncio.StreamWriter, request: bytes, count: int) -> bool:
        await write(writer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(SSE))
        await asyncio.sleep(0.05)
        return False  # a gateway's idle timeout: it closes without saying so in the answer

    server = await serve(reply)
    client = upstream(http)
    for _ in range(3):
        async with client.stream("POST", f"{server.url}/runs", json={}) as events:
            assert [event.event async for event in events][-1] == "done"
        await asyncio.sleep(0.2)
    assert [number for number, _ in server.requests] == [0, 1, 2]  # each create went out once, whole


async def test_a_request_met_by_a_closing_connection_is_repeated_only_when_idempotent(
    serve: Callable[[Reply], Awaitable[RawServer]], http: httpx.AsyncClient
) -> None:
    async def reply(writer: asyncio.StreamWriter, request: bytes, count: int) -> bool:
        if count == 0:
            await write(writer, JSON_OK)
            return True
        writer.transport.abort()  # the race: the request arrived as the gateway closed the connection
        return False

    server = await serve(reply)
    client = upstream(http)
    assert await client.request("GET", f"{server.url}/a") == {"ok": True}
    with pytest.raises(UpstreamError, match="could not reach Azure"):
        await client.request("POST", f"{server.url}/runs", json={}, idempotent=False)
    posts = [request for _, request in server.requests if request.startswith(b"POST")]
    assert len(posts) == 1  # it may have reached Azure: never sent twice
    assert await client.request("GET", f"{server.url}/a") == {"ok": True}


async def test_no_cookie_from_one_answer_rides_on_another_request(
    serve: Callable[[Reply], Awaitable[RawServer]], http: httpx.AsyncClient
) -> None:
    """One client serves every route and key: a cookie Azure (or a gateway) sets is not kept."""

    async def reply(writer: asyncio.StreamWriter, request: bytes, count: int) -> bool:
        await write(writer, JSON_OK.replace(b"\r\n\r\n", b"\r\nSet-Cookie: ARRAffinity=abc; Path=/\r\n\r\n", 1))
        return True

    server = await serve(reply)
    client = upstream(http)
    for _ in range(2):
        assert await client.request("GET", f"{server.url}/thread") == {"ok": True}
    assert all(b"\r\ncookie:" not in request.lower() for _, request in server.requests)


@pytest.mark.parametrize("status", [301, 307, 308])
async def test_a_redirect_is_an_error_and_not_followed(
    serve: Callable[[Reply], Awaitable[RawServer]], http: httpx.AsyncClient, status: int
) -> None:
    async def reply(writer: asyncio.StreamWriter, request: bytes, count: int) -> bool:
        location = f"{server.url}/elsewhere".encode()
        await write(writer, b"HTTP/1.1 %d Moved\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % (status, location))
        return True

    server = await serve(reply)
    client = upstream(http)
    with pytest.raises(UpstreamError) as info:
        await client.request("GET", f"{server.url}/thread")
    assert info.value.message == (
        f"Azure redirected the request (HTTP {status} to {server.url}/elsewhere); check the route's endpoint"
    )
    with pytest.raises(UpstreamError, match="redirected"):
        async with client.stream("POST", f"{server.url}/runs", json={}) as events:
            [event async for event in events]
    assert [request.split(b" ")[1] for _, request in server.requests] == [b"/thread", b"/runs"]


@pytest.mark.parametrize(
    ("no_proxy", "host", "proxied"),
    [
        ("", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.1", False),  # an IP
        ("10.0.0.1,127.0.0.1:{port}", "127.0.0.1", False),  # an IP with its port
        ("localhost", "localhost", False),
        ("*.example.test", "azure.example.test", False),  # curl's `*.domain`
        ("*.example.test", "example.test", True),  # ... its subdomains only
        (".example.test", "example.test", False),  # a leading dot: the name and its subdomains
        ("example.test", "a.b.example.test", False),
        ("example.test", "notexample.test", True),
        ("*", "azure.example.test", False),
    ],
)
async def test_proxies_come_from_the_environment(
    serve: Callable[[Reply], Awaitable[RawServer]],
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
    no_proxy: str,
    host: str,
    proxied: bool,
) -> None:
    """A request goes through HTTP_PROXY unless NO_PROXY names its host; a direct one to a name that
    does not resolve fails to connect, which proves it did not go to the proxy."""

    async def answer(writer: asyncio.StreamWriter, request: bytes, count: int) -> bool:
        await write(writer, JSON_OK)
        return True

    proxy, origin = await serve(answer), await serve(answer)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("no_proxy", no_proxy.format(port=origin.port))
    url = f"http://{host}:{origin.port}/thread"
    async with http_client(transport=transport) as http:  # type: ignore[arg-type]
        client = upstream(http, max_attempts=1)
        if proxied:
            assert await client.request("GET", url) == {"ok": True}
            assert proxy.requests[0][1].startswith(f"GET {url} HTTP/1.1".encode())  # a forward proxy's form
        elif host in ("127.0.0.1", "localhost"):
            assert await client.request("GET", url) == {"ok": True}
            assert origin.requests[0][1].startswith(b"GET /thread HTTP/1.1")
        else:
            with pytest.raises(UpstreamError, match="could not reach Azure"):
                await client.request("GET", url)
    assert bool(proxy.requests) == proxied


@pytest.mark.parametrize(("no_proxy", "proxied"), [("", True), ("*.example.test", False), ("10.0.0.1", True)])
async def test_https_goes_through_https_proxy_as_a_tunnel_unless_no_proxy_names_it(
    serve: Callable[[Reply], Awaitable[RawServer]],
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
    no_proxy: str,
    proxied: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The proxy refuses every tunnel: a proxied request fails at the proxy (and, never sent to
    Azure, is retried); a direct one fails to resolve the name. The client is told neither (the log is)."""

    async def refuse(writer: asyncio.StreamWriter, request: bytes, count: int) -> bool:
        await write(writer, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        return False

    proxy = await serve(refuse)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    async with http_client(transport=transport) as http:  # type: ignore[arg-type]
        with pytest.raises(UpstreamError) as info:
            await upstream(http, max_attempts=2).request(
                "POST", "https://azure.example.test/runs", json={}, idempotent=False
            )
    assert info.value.message.startswith("could not reach Azure (the connection failed)")
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "agent_bridge.upstream")
    if proxied:
        assert "ProxyError" in logged
        assert [request.split(b"\r\n")[0] for _, request in proxy.requests] == [
            b"CONNECT azure.example.test:443 HTTP/1.1"
        ] * 2  # refused by the proxy, never sent to Azure: retried even as a create
    else:
        assert "ConnectError" in logged
        assert proxy.requests == []
