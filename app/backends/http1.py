"""A lean HTTP/1.1 client for Azure's event streams: keep-alive connections per origin, httptools-parsed.

Why not aiohttp for these: one streamed run through aiohttp costs about 330 us of CPU on the bench
machine against a local server, the same exchange through an asyncio protocol with httptools (the
parser uvicorn already uses) about 25. A turn's one upstream request is a stream, so it takes this
path; every other request (JSON calls, file contents, anything through a proxy) stays on aiohttp.

What it does, and no more: a request with a JSON body, an answer whose body is read as it arrives
(fixed length or chunked), a connection given back to its origin's idle list only when its answer was
read to the end and the server keeps it alive, and dropped otherwise. An idle connection older than
`keepalive_s`, or one the server closed, is never reused.

Timeouts: connecting is bounded by `connect_s`; reading by `read_s` for each wait for bytes (the
stream may last long, but a gap in it may not). Errors keep the distinction the retry policy needs:
`ConnectFailed` (nothing was sent: any request may be repeated) or `StreamBroken` (the request may
have reached Azure), both `aiohttp.ClientConnectionError`s, so callers handle both transports alike.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httptools
from multidict import CIMultiDict, CIMultiDictProxy

HIGH_WATER = 256 * 1024
"""Bytes read ahead of the consumer before the connection stops reading (TCP then slows the sender)."""


class ConnectFailed(aiohttp.ClientConnectionError):
    """No connection could be opened: nothing of the request was sent."""


class StreamBroken(aiohttp.ClientPayloadError):
    """The connection failed after the request went out, before its answer was read to the end."""


class ReadTimeout(aiohttp.ClientConnectionError, TimeoutError):
    """No byte arrived within the read timeout."""


class _Connection(asyncio.Protocol):
    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: Any = None
        self.open = False
        self.idle_since = 0.0
        self.response: Response | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.open = True

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        try:
            response.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response.fail(StreamBroken(f"Azure sent a malformed HTTP answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.response is not None and not self.response.complete:
            self.response.fail(StreamBroken("Azure closed the connection before the answer ended"))

    def pause_writing(self) -> None:  # a request body is one write; nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    def close(self) -> None:
        self.open = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Response:
    """An answer being read: `status` and `headers` once they arrived, then the body in pieces."""

    def __init__(self, conn: _Connection, read_s: float) -> None:
        self.conn = conn
        self.parser = httptools.HttpResponseParser(self)
        self.read_s = read_s
        self.status = 0
        self._raw: list[tuple[bytes, bytes]] = []
        self._headers: CIMultiDictProxy[str] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self.complete = False
        self.keep_alive = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._released = False

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.conn.transport is not None:
            self._paused = True
            self.conn.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        # Asked here: once the message is done the parser resets, and no longer knows.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        self._wake()

    # -- ours ------------------------------------------------------------------------------------

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """Case-insensitive, built when first asked for (a successful stream's headers rarely are)."""
        if self._headers is None:
            pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self._raw]
            self._headers = CIMultiDictProxy(CIMultiDict(pairs))
        return self._headers

    def fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: the opener reports it
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def readany(self) -> bytes:
        """What arrived since the last call (waiting for some), or b"" once the answer has ended."""
        while not self._chunks:
            if self.complete:
                self.release()
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()
        data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._paused and self.conn.transport is not None:
            self._paused = False
            self.conn.transport.resume_reading()
        return data

    async def read(self) -> bytes:
        """The rest of the body."""
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_at(loop.time() + self.read_s, self._timed_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self.fail(ReadTimeout(f"Azure sent nothing for {self.read_s:g} s"))
            self.conn.close()

    def release(self) -> None:
        """Done with the answer: its connection goes back to the idle list if it can be reused, else closes."""
        if self._released:
            return
        self._released = True
        conn = self.conn
        conn.response = None
        if self.complete and self.keep_alive and self._error is None and conn.open:
            conn.origin.give_back(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Abandon the answer (read to its end or not)."""
        self.release()


class Origin:
    """The keep-alive connections to one scheme://host:port."""

    def __init__(self, scheme: str, host: str, port: int, tls: ssl.SSLContext | None, keepalive_s: float) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.keepalive_s = keepalive_s
        self.host_header = host if port == (443 if scheme == "https" else 80) else f"{host}:{port}"
        self.idle: list[_Connection] = []
        self.opened = 0

    def take(self, now: float) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if conn.open and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.close()
        return None

    def give_back(self, conn: _Connection) -> None:
        now = conn.idle_since = asyncio.get_running_loop().time()
        idle = self.idle
        # The oldest sit at the bottom (connections are taken from the top): drop those the server
        # closed or that idled too long, so a burst's connections do not linger after it.
        while idle and (not idle[0].open or now - idle[0].idle_since >= self.keepalive_s):
            idle.pop(0).close()
        idle.append(conn)

    async def connect(self, connect_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(self)
        try:
            async with asyncio.timeout(connect_s):
                await loop.create_connection(
                    lambda: conn, self.host, self.port, ssl=self.tls, server_hostname=self.host if self.tls else None
                )
        except TimeoutError as exc:
            raise ConnectFailed(f"could not connect to {self.host_header} within {connect_s:g} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"could not connect to {self.host_header}: {type(exc).__name__}") from exc
        self.opened += 1
        return conn

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class StreamClient:
    """Requests answered with event streams, over keep-alive connections per origin."""

    def __init__(
        self, *, user_agent: str = "agent-bridge", keepalive_s: float = 30.0, tls: ssl.SSLContext | None = None
    ) -> None:
        """`tls`: how https origins are verified (default: the system's CAs, as aiohttp does)."""
        self.user_agent = user_agent
        self.keepalive_s = keepalive_s
        self._origins: dict[tuple[str, str, int], Origin] = {}
        self._tls = tls

    def _origin(self, scheme: str, host: str, port: int | None) -> Origin:
        key = (scheme, host, port or (443 if scheme == "https" else 80))
        origin = self._origins.get(key)
        if origin is None:
            tls = None
            if scheme == "https":
                tls = self._tls = self._tls or ssl.create_default_context()
            origin = self._origins[key] = Origin(scheme, host, key[2], tls, self.keepalive_s)
        return origin

    async def send(
        self,
        method: str,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_s: float,
        read_s: float,
    ) -> Response:
        """Send the request; return once the answer's status and headers arrived (its body streams after)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        origin = self._origin(parts.scheme, parts.hostname, parts.port)
        loop = asyncio.get_running_loop()
        conn = origin.take(loop.time()) or await origin.connect(connect_s)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {origin.host_header}", f"User-Agent: {self.user_agent}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}", "", ""]
        response = Response(conn, read_s)
        conn.response = response
        conn.transport.write("\r\n".join(lines).encode("latin-1") + body)
        wait = loop.call_at(loop.time() + read_s, response._timed_out, response.head)
        try:
            await response.head
        except BaseException:
            response.close()
            raise
        finally:
            wait.cancel()
        return response

    def close(self) -> None:
        for origin in self._origins.values():
            origin.close()
        self._origins.clear()
