"""HTTP to Azure: auth headers, bounded retries, SSE parsing, error translation.

Two transports. An event stream (a turn's one upstream request) goes over `http1.StreamClient`, a lean
HTTP/1.1 client, unless the route goes through a proxy. Everything else goes over aiohttp, whose
connection pool stays flat as concurrency grows, where httpx's costs grow with every open connection
(about 20x the CPU per request at 64 concurrent streams, measured in `bench/`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from json import dumps, loads  # not `import json`: request() and stream() take a `json` argument
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson

from app.backends import http1
from app.backends.azure_auth import AuthProvider
from app.backends.retry import RetryPolicy, server_hint
from app.core import timing, tracing
from app.errors import (
    BridgeError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamTimeoutError,
)

log = logging.getLogger("agent_bridge.upstream")

# Calls without a deadline (the janitor, the admin API) still may not hang.
_UNBOUNDED = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=30.0)
# Failures after which the request certainly never reached Azure: safe to repeat even a create.
_NEVER_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, http1.ConnectFailed)
# Failures of the connection itself (not of an answer): worth another attempt where that is safe.
_TRANSPORT = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)


def http_session(*, max_connections: int = 2000, user_agent: str = "agent-bridge") -> aiohttp.ClientSession:
    """The connection pool every route shares (call inside the event loop that will use it).

    No `trust_env`: aiohttp would then read the proxy variables and ~/.netrc in a thread for every
    request (40% of the bridge's CPU under load, measured). The proxy is resolved once per route
    instead (`proxy_for`).
    """
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, keepalive_timeout=30.0)
    return aiohttp.ClientSession(
        connector=connector, timeout=_UNBOUNDED, headers={"User-Agent": user_agent}, raise_for_status=False
    )


def proxy_for(endpoint: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy for requests to `endpoint` from HTTPS_PROXY/HTTP_PROXY/ALL_PROXY and NO_PROXY, if any."""
    env = {k.lower(): v for k, v in (os.environ if environ is None else environ).items()}
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if _bypassed(host, env.get("no_proxy", "")):
        return None
    proxy = env.get(f"{parts.scheme}_proxy") or env.get("all_proxy")
    return proxy or None


def query_string(params: Mapping[str, str]) -> str:
    """`params` as a query string, encoded as `_stream_exchange` encodes them (for a URL that carries
    them itself)."""
    return urlencode(params)


def _bypassed(host: str, no_proxy: str) -> bool:
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.split(":")[0].lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str

    def json(self) -> Any:
        # orjson: a turn parses a dozen events, and the stdlib's decoder was the most of their cost.
        return orjson.loads(self.data)


def parse_event(block: bytes) -> SSEEvent | None:
    """One event from its lines (`\\n`-separated, without the blank line that ends it); None if it has no data."""
    # Azure's own shape, `event: <name>` then one `data: <json>` line, takes one decode and one find:
    # slices and `in` rather than more calls (a dozen events a turn). UTF-8 never has a newline
    # inside a character, so the block decodes as its two lines would.
    if block[:7] == b"event: " and b"\r" not in block:
        text = block.decode("utf-8", "replace")
        end = text.find("\n")
        if end > 7 and text[end + 1 : end + 7] == "data: " and "\n" not in text[end + 7 :] and text[7] != " ":
            return SSEEvent(text[7:end], text[end + 7 :])
    return parse_lines(block)


def parse_lines(block: bytes) -> SSEEvent | None:
    """`parse_event` for any shape the SSE spec allows: line by line."""
    name = ""
    data: list[str] = []
    for line in block.decode("utf-8", "replace").split("\n"):
        if not line or line[0] == ":":
            continue
        field, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    if not data:
        return None  # as in the SSE spec: an event without data is not dispatched
    return SSEEvent(name or "message", "\n".join(data))


class SSEDecoder:
    """Cuts events out of raw byte chunks at blank lines, whatever the chunking; CRLF, CR or LF line ends.

    Works on whole chunks (one `split` per chunk) rather than line by line: far less Python per event.
    """

    __slots__ = ("_buffer", "_cr")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._cr = False  # the last chunk ended in CR: maybe half of a CRLF

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._cr:
            chunk, self._cr = b"\r" + chunk, False
        if b"\r" in chunk:
            if chunk[-1:] == b"\r":
                chunk, self._cr = chunk[:-1], True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer
        buffer += chunk
        if b"\n\n" not in buffer:
            return []
        # One split for all the chunk's events, not a find (and an append) per event.
        *blocks, rest = bytes(buffer).split(b"\n\n")
        self._buffer = bytearray(rest)
        return [event for event in map(parse_event, blocks) if event is not None]

    def flush(self) -> list[SSEEvent]:
        """The last event when the stream ended without a blank line after it."""
        rest, self._buffer, self._cr = bytes(self._buffer), bytearray(), False
        event = parse_event(rest) if rest.strip() else None
        return [event] if event is not None else []


@dataclass(frozen=True, slots=True)
class ErrorFields:
    """What an Azure error body says: its message, param and code, and its reason when it gives one."""

    message: str
    param: str | None = None
    code: str | None = None
    details: list[Any] | None = None
    innererror: dict[str, Any] | None = None

    def reason(self) -> dict[str, Any]:
        """The keyword arguments that carry Azure's reason into a BridgeError."""
        return {"details": self.details, "innererror": self.innererror}


def error_fields(status: int, content: bytes) -> ErrorFields:
    """Azure's message, param, code, details[] and innererror from an error body of any of its shapes (or none).

    Azure OpenAI puts the refused parameter in `param`; Foundry project APIs in `details[]` (one entry
    per refused parameter) and a content filter's category in `innererror` (azure-as-it-is.md, 3).
    """
    try:
        body = loads(content) if content else None
    except ValueError:
        body = None
    if body is None:
        text = " ".join(content.decode("utf-8", "replace").split())[:300]
        return ErrorFields(text or f"HTTP {status}")
    error = body.get("error", body) if isinstance(body, dict) else body
    if not isinstance(error, dict):
        return ErrorFields(str(error)[:1000])
    message = error.get("message") or body.get("message") or f"HTTP {status}"
    param, code = error.get("param"), error.get("code")
    if param is None and isinstance(error.get("target"), str):
        param = error["target"]  # the Foundry shape names the field in `target`
    details = error.get("details")
    inner = error.get("innererror")
    return ErrorFields(
        str(message)[:1000],
        None if param is None else str(param),
        None if code is None else str(code),
        [d for d in details if isinstance(d, dict)][:50] if isinstance(details, list) and details else None,
        inner if isinstance(inner, dict) and inner else None,
    )


def translate(
    status: int, content: bytes, headers: Mapping[str, str], *, retry_after: float | None = None
) -> BridgeError:
    """The error a failed answer from Azure becomes (never with our request's headers in it)."""
    fields = error_fields(status, content)
    message, param, code, reason = fields.message, fields.param, fields.code, fields.reason()
    if status in (400, 422):
        if param is None and fields.details and len(fields.details) == 1:
            param = fields.details[0].get("param") or None  # one refused parameter: name it as OpenAI does
        return InvalidRequestError(message, param=param, code=code, **reason)
    if status in (401, 403):
        # Azure's words name the resource, the identity or the policy: the operator's business, not a caller's.
        log.error(
            "upstream: Azure refused the bridge's credentials (HTTP %s, request %s): %s",
            status,
            timing.request_id() or "-",
            message,
            extra={"request_id": timing.request_id() or None, "upstream_status": status},
        )
        return UpstreamAuthError(auth_refused(status))
    if status == 404:
        return NotFoundError(message, code="upstream_not_found", **reason)
    if status == 409:
        return ConflictError(message, code=code or "upstream_conflict", **reason)
    if status == 429:
        hint = server_hint(headers)
        return RateLimitError(message, retry_after=hint if hint is not None else retry_after, **reason)
    if status in (408, 504):  # Azure (or its gateway) gave up waiting: the client sees 504, as for our own deadline
        return UpstreamTimeoutError(f"Azure timed out (HTTP {status}): {message}", **reason)
    if status >= 500:
        return UpstreamError(message, **reason)
    return UpstreamError(f"Azure rejected the request (HTTP {status}): {message}", **reason)


def auth_refused(status: int | None = None) -> str:
    """What a client is told when Azure refused the bridge's own credentials (the details: the log)."""
    said = f" (HTTP {status})" if status is not None else ""
    return (
        f"upstream authentication failed{said}: Azure refused this bridge's credentials for the route; "
        f"an operator must check its auth. The bridge's log has the details{_under_request_id()}."
    )


def _under_request_id() -> str:
    request_id = timing.request_id()
    return f" under request id {request_id}" if request_id else ""


def translate_transport(exc: BaseException) -> BridgeError:
    """The error a failed exchange becomes when Azure gave no answer at all. The client gets a generic
    word: the exception's text names hosts, ports and proxies; it goes to the log with the request id."""
    detail = str(exc).strip()[:300]
    log.warning(
        "upstream: no answer from Azure (request %s): %s%s",
        timing.request_id() or "-",
        type(exc).__name__,
        f": {detail}" if detail else "",
        extra={"request_id": timing.request_id() or None},
    )
    if isinstance(exc, TimeoutError):
        return UpstreamTimeoutError(f"Azure did not answer in time{_under_request_id()}.")
    return UpstreamError(
        f"could not reach Azure (the connection failed); try again shortly. "
        f"The bridge's log has the details{_under_request_id()}.",
        code="upstream_unreachable",
    )


def _deadline_passed() -> UpstreamTimeoutError:
    return UpstreamTimeoutError("the request's deadline passed before Azure answered")


class UpstreamMetrics(Protocol):
    """What the client counts, as labelled prometheus counters (`app.metrics.Metrics` fits)."""

    upstream_requests: Any  # labels: operation, status (an HTTP status or an aiohttp error's name)
    upstream_retries: Any  # labels: operation


@dataclass(slots=True)
class _Answer:
    """Azure's answer to one attempt: its body when it was read, else the live response to stream."""

    status: int
    headers: Mapping[str, str]
    content: bytes
    live: aiohttp.ClientResponse | http1.Response | None = None


class UpstreamClient:
    """One route's way to Azure: its credentials, the shared connection pool and the retry policy."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        auth: AuthProvider,
        retry: RetryPolicy,
        *,
        name: str = "azure",
        metrics: UpstreamMetrics | None = None,
        proxy: str | None = None,
        streams: http1.StreamClient | None = None,
    ) -> None:
        self.http = http
        self.proxy = proxy
        # Streams through a proxy stay on aiohttp (the lean client speaks to Azure directly only).
        self.streams = streams if proxy is None else None
        self.auth = auth
        self.retry = retry
        self.name = name
        self.metrics = metrics

    async def request(
        self, method: str, url: str, *, json: Any = None, params: dict[str, str] | None = None,
        deadline: float | None = None, idempotent: bool = True, operation: str = "request",
    ) -> Any:  # fmt: skip
        """Send a request and return its parsed JSON body (None when empty)."""
        answer = await self._send(method, url, json, params, deadline, idempotent, operation, read=True)
        if not answer.content:
            return None
        try:
            return loads(answer.content)
        except ValueError as exc:
            raise UpstreamError("Azure answered with a body that is not JSON") from exc

    async def content(
        self, url: str, *, params: dict[str, str] | None = None, deadline: float | None = None,
        operation: str = "content",
    ) -> tuple[AsyncGenerator[bytes, None], str]:  # fmt: skip
        """GET a binary body (a file's content): its chunks as Azure sends them, and its media type.

        The status is checked first (an error is raised here, before any byte goes to a client); the
        chunks are read as the consumer asks, never the whole file at once. Closing the generator (or
        reading it to its end) gives the connection back."""
        answer = await self._send("GET", url, None, params, deadline, True, operation, read=False)
        response = answer.live
        assert response is not None
        readany = response.content.readany if isinstance(response, aiohttp.ClientResponse) else response.readany

        async def chunks() -> AsyncGenerator[bytes, None]:
            try:
                while chunk := await readany():
                    yield chunk
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise translate_transport(exc) from exc
            finally:
                response.close()

        return chunks(), answer.headers.get("Content-Type", "application/octet-stream")

    @asynccontextmanager
    async def stream(
        self, method: str, url: str, *, json: Any = None, params: dict[str, str] | None = None,
        deadline: float | None = None, idempotent: bool = False, operation: str = "stream",
    ) -> AsyncIterator[AsyncIterator[SSEEvent]]:  # fmt: skip
        """Send a request answered with an event stream; the status is checked before any event is yielded.

        The events simply stop when the stream ends, with or without a terminal event: the consumer decides.
        """
        answer = await self._send(method, url, json, params, deadline, idempotent, operation, read=False)
        response = answer.live
        assert response is not None
        events = self._events(response, deadline)
        try:
            yield events
        finally:
            await events.aclose()
            # Read to its end, the answer gave its connection back to the pool already (aiohttp does
            # at EOF); abandoned mid-stream, its connection is dropped, never reused half-read.
            response.close()

    async def _events(
        self, response: aiohttp.ClientResponse | http1.Response, deadline: float | None = None
    ) -> AsyncGenerator[SSEEvent, None]:
        decoder = SSEDecoder()
        current = timing.current()
        readany = response.content.readany if isinstance(response, aiohttp.ClientResponse) else response.readany
        while True:
            started = time.perf_counter()
            try:
                chunk = await readany()
            except TimeoutError as exc:
                raise UpstreamTimeoutError("Azure stopped sending the stream's events in time") from exc
            except aiohttp.ClientError as exc:
                raise UpstreamError(f"the upstream event stream broke: {type(exc).__name__}") from exc
            finally:
                if current is not None:
                    current.upstream_s += time.perf_counter() - started
            if not chunk:
                break
            for event in decoder.feed(chunk):
                yield event
            if deadline is not None and time.monotonic() >= deadline:
                raise _deadline_passed()
        for event in decoder.flush():
            yield event

    async def _send(
        self, method: str, url: str, body: Any, params: dict[str, str] | None, deadline: float | None,
        idempotent: bool, operation: str, *, read: bool,
    ) -> _Answer:  # fmt: skip
        """A successful answer (its body read when `read`), after as many attempts as the policy allows."""
        attempt, reauthenticated = 0, False
        while True:
            attempt += 1
            if attempt > 1 and self.metrics is not None:
                self.metrics.upstream_retries.labels(operation).inc()
            try:
                answer = await self._attempt(method, url, body, params, deadline, read)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._count(operation, type(exc).__name__)
                retryable = isinstance(exc, _TRANSPORT)
                if retryable and (idempotent or isinstance(exc, _NEVER_SENT)) and await self._pause(attempt, deadline):
                    continue
                raise translate_transport(exc) from exc
            status = answer.status
            self._count(operation, str(status))
            if status < 400:
                return answer
            if status == 401 and not reauthenticated and self.auth.invalidate():
                reauthenticated, attempt = True, attempt - 1  # a cached token may have been revoked: once more
                continue
            # An error answer means Azure did not act on the request: a retry is safe even for a create.
            if self.retry.retries(status) and await self._pause(attempt, deadline, answer.headers):
                continue
            raise translate(status, answer.content, answer.headers, retry_after=self.retry.backoff(attempt))

    async def _attempt(
        self, method: str, url: str, body: Any, params: dict[str, str] | None, deadline: float | None, read: bool
    ) -> _Answer:
        """One exchange, bounded by the deadline: the answer's headers, and its body when `read` or when it failed."""
        if deadline is None:
            return await self._exchange(method, url, body, params, _UNBOUNDED, read)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _deadline_passed()
        bounds = aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, remaining), sock_read=remaining)
        try:
            async with asyncio.timeout(remaining):
                return await self._exchange(method, url, body, params, bounds, read)
        except TimeoutError as exc:
            if isinstance(exc, aiohttp.ClientError):
                raise  # aiohttp's own connect timeout: the policy decides on it
            raise _deadline_passed() from exc

    async def _exchange(
        self,
        method: str,
        url: str,
        body: Any,
        params: dict[str, str] | None,
        bounds: aiohttp.ClientTimeout,
        read: bool,
    ) -> _Answer:
        headers = await self.auth.headers()
        if tracing.ENABLED:  # the attempt's span, its traceparent sent on to Azure
            headers = tracing.outgoing(headers, method, url)
        current = timing.current()
        if current is not None:
            current.upstream_requests += 1
        if not read and self.streams is not None:
            return await self._stream_exchange(method, url, body, params, headers, bounds, current)
        started = time.perf_counter()  # timing.upstream_wait(), inlined: it is half a dozen calls
        try:
            response = await self.http.request(
                method, url, json=body, params=params, headers=headers, timeout=bounds, proxy=self.proxy
            )
            if not read and response.status < 400:
                return _Answer(response.status, response.headers, b"", response)
            try:
                content = await response.read()
            finally:
                response.release()
        finally:
            if current is not None:
                current.upstream_s += time.perf_counter() - started
        return _Answer(response.status, response.headers, content)

    async def _stream_exchange(
        self,
        method: str,
        url: str,
        body: Any,
        params: dict[str, str] | None,
        headers: Mapping[str, str],
        bounds: aiohttp.ClientTimeout,
        current: timing.RequestTiming | None,
    ) -> _Answer:
        assert self.streams is not None
        target = f"{url}?{urlencode(params)}" if params else url
        payload = b"" if body is None else dumps(body).encode()
        started = time.perf_counter()  # timing.upstream_wait(), inlined (see _exchange)
        try:
            response = await self.streams.send(
                method, target, payload, headers, connect_s=bounds.sock_connect or 10.0, read_s=bounds.sock_read or 30.0
            )
            if response.status < 400:
                return _Answer(response.status, response.headers, b"", response)
            try:
                content = await response.read()
            finally:
                response.close()
        finally:
            if current is not None:
                current.upstream_s += time.perf_counter() - started
        return _Answer(response.status, response.headers, content)

    async def _pause(self, attempt: int, deadline: float | None, hint: Mapping[str, str] | None = None) -> bool:
        """Sleep before the next attempt; False when the policy says there should be none."""
        remaining = None if deadline is None else deadline - time.monotonic()
        wait = self.retry.next_delay(attempt, hint, remaining_s=remaining)
        if wait is None:
            return False
        with timing.upstream_wait():  # Azure asked for this wait (or failed): not the bridge's own time
            await asyncio.sleep(wait)
        return True

    def _count(self, operation: str, status: str) -> None:
        if tracing.ENABLED:  # Azure answered the attempt (or it failed): its span ends
            tracing.answered(status)
        if self.metrics is not None:
            self.metrics.upstream_requests.labels(operation, status).inc()

    def __repr__(self) -> str:
        return f"UpstreamClient(name={self.name!r}, auth={self.auth!r})"
