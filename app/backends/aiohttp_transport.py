"""httpx-aiohttp's transport with aiohttp's errors told apart as httpx tells them: the only module that imports aiohttp.

httpx-aiohttp 0.2 maps `aiohttp.ClientConnectionError` and every subclass of it to `httpx.ConnectTimeout`
(its table's broad entry matches first and a sibling never replaces it; reported on the copy openai-python
vendors, openai/openai-python#3594). A refused connection then reads as a timeout, and, worse for the
retry policy, so does a connection the server dropped after the request went out: a "connect" failure
says the request never left, so a create would be sent twice. Here the aiohttp exception the library
keeps as `__cause__` is mapped again by its most specific class; everything else is the library's.
Drop this module when httpx-aiohttp maps them itself (tests/integration/test_upstream_framing.py shows it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from aiohttp.payload import TOO_LARGE_BYTES_BODY
from httpx_aiohttp import AiohttpTransport, HttpxAiohttpClient

_CHUNK = 1 << 16

# Most specific first: the first class the cause is an instance of decides.
_MAPPING: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # DNS, refused, TLS, the proxy unreachable: nothing sent
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientConnectionError, httpx.ReadError),  # reset, broken pipe: the request may have gone out
)


def _remapped(exc: httpx.TransportError) -> httpx.TransportError:
    cause = exc.__cause__
    for source, target in _MAPPING:
        if isinstance(cause, source):
            return exc if type(exc) is target else target(str(exc) or type(cause).__name__)
    return exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx.TransportError as exc:
            raise _remapped(exc) from exc.__cause__

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Chunks(httpx.AsyncByteStream):
    """A body sent in slices: aiohttp warns (ResourceWarning) that a raw bytes body past 1 MiB may hold the
    event loop while it is written, and takes an async iterable as a stream instead."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        view = memoryview(self._body)
        for start in range(0, len(view), _CHUNK):
            yield bytes(view[start : start + _CHUNK])


class Transport(AiohttpTransport):
    def get_client(self) -> aiohttp.ClientSession:
        """The library's session, but keeping no cookies (see http_client.NoCookies)."""
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0, keepalive_timeout=self.limits.keepalive_expiry, ssl=self.ssl_context
        )
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = request.content
        if len(content) > TOO_LARGE_BYTES_BODY:  # a large body (up to limits.max_body_bytes) goes as a stream
            request = httpx.Request(
                request.method,
                request.url,
                headers=request.headers,
                stream=_Chunks(content),
                extensions=request.extensions,
            )
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError as exc:
            raise _remapped(exc) from exc.__cause__
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Body(response.stream)
        return response


class Client(HttpxAiohttpClient):
    """httpx-aiohttp's client with `Transport` for direct and proxied requests alike."""

    # httpx's own hooks for the transports of a client built with `trust_env` (HttpxAiohttpClient's too).
    def _init_transport(self, *args: Any, transport: httpx.AsyncBaseTransport | None = None, **kwargs: Any) -> Any:
        return transport or Transport(*args, **kwargs)

    def _init_proxy_transport(self, proxy: httpx.Proxy, *args: Any, **kwargs: Any) -> Any:
        return Transport(*args, **{**kwargs, "proxy": proxy})
