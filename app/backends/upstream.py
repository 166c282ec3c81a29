"""HTTP to Azure: auth headers, bounded retries, SSE parsing, error translation.

Every request goes through one httpx client (`http_client.http_client`); httpx's exceptions are
translated here, at the boundary, into app/errors.py's tree.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from json import loads  # not `import json`: request() and stream() take a `json` argument
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
import orjson

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

# Failures after which the request certainly never reached Azure: safe to repeat even a create
# (ProxyError: the proxy refused the tunnel).
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)
_JSON = {"Content-Type": "application/json"}


def query_string(params: Mapping[str, str]) -> str:
    """`params` as a query string, encoded as httpx encodes `params=` (for a URL that carries them itself)."""
    return urlencode(params)


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
    if 300 <= status < 400:  # never followed: a moved endpoint is the operator's to fix, not ours to guess
        where = (headers.get("location") or headers.get("Location") or "no Location")[:200]
        return UpstreamError(f"Azure redirected the request (HTTP {status} to {where}); check the route's endpoint")
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
        "upstream: no answer from Azure (request %s) at %s: %s%s",
        timing.request_id() or "-",
        _target(exc),
        type(exc).__name__,
        f": {detail}" if detail else "",
        extra={"request_id": timing.request_id() or None},
    )
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return UpstreamTimeoutError(f"Azure did not answer in time{_under_request_id()}.")
    return UpstreamError(
        f"could not reach Azure (the connection failed); try again shortly. "
        f"The bridge's log has the details{_under_request_id()}.",
        code="upstream_unreachable",
    )


def _target(exc: BaseException) -> str:
    """Where the failed request went (scheme, host, port, path; no query), for the operator's log."""
    try:
        url = exc.request.url if isinstance(exc, httpx.RequestError) else None
    except RuntimeError:  # an httpx error raised without its request
        url = None
    return "an unknown address" if url is None else f"{url.scheme}://{url.host}:{url.port or ''}{url.path}"


def _deadline_passed() -> UpstreamTimeoutError:
    return UpstreamTimeoutError("the request's deadline passed before Azure answered")


class UpstreamMetrics(Protocol):
    """What the client counts, as labelled prometheus counters (`app.metrics.Metrics` fits)."""

    upstream_requests: Any  # labels: operation, status (an HTTP status or an httpx error's name)
    upstream_retries: Any  # labels: operation


class UpstreamClient:
    """One route's way to Azure: its credentials, the shared httpx client and the retry policy."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        auth: AuthProvider,
        retry: RetryPolicy,
        *,
        name: str = "azure",
        metrics: UpstreamMetrics | None = None,
    ) -> None:
        self.http = http
        self.auth = auth
        self.retry = retry
        self.name = name
        self.metrics = metrics
        # The client's own headers (User-Agent, Accept, ...), taken once: each request is built as an
        # httpx.Request from them (httpx's `client.send` API) rather than by `build_request`, which merges
        # the client's headers, cookies, params and base URL again for every request.
        self._headers = dict(http.headers)
        self._timeout = http.timeout.as_dict()

    async def request(
        self, method: str, url: str, *, json: Any = None, params: dict[str, str] | None = None,
        deadline: float | None = None, idempotent: bool = True, operation: str = "request",
    ) -> Any:  # fmt: skip
        """Send a request and return its parsed JSON body (None when empty)."""
        response = await self._send(method, url, json, params, deadline, idempotent, operation, read=True)
        if not response.content:
            return None
        try:
            return loads(response.content)
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
        response = await self._send("GET", url, None, params, deadline, True, operation, read=False)

        async def chunks() -> AsyncGenerator[bytes, None]:
            try:
                async for chunk in response.aiter_bytes():
                    yield chunk
            except httpx.HTTPError as exc:
                raise translate_transport(exc) from exc
            finally:
                await response.aclose()

        return chunks(), response.headers.get("Content-Type", "application/octet-stream")

    @asynccontextmanager
    async def stream(
        self, method: str, url: str, *, json: Any = None, params: dict[str, str] | None = None,
        deadline: float | None = None, idempotent: bool = False, operation: str = "stream",
    ) -> AsyncIterator[AsyncIterator[SSEEvent]]:  # fmt: skip
        """Send a request answered with an event stream; the status is checked before any event is yielded.

        The events simply stop when the stream ends, with or without a terminal event: the consumer decides.
        """
        response = await self._send(method, url, json, params, deadline, idempotent, operation, read=False)
        events = self._events(response, deadline)
        try:
            yield events
        finally:
            await events.aclose()
            # Read to its end, the answer's connection goes back to the pool; abandoned mid-stream,
            # it is closed, never reused half-read.
            await response.aclose()

    async def _events(self, response: httpx.Response, deadline: float | None = None) -> AsyncGenerator[SSEEvent, None]:
        decoder = SSEDecoder()
        current = timing.current()
        chunks = response.aiter_raw()
        while True:
            started = time.perf_counter()
            try:
                chunk = await anext(chunks, b"")
            except httpx.TimeoutException as exc:
                raise UpstreamTimeoutError("Azure stopped sending the stream's events in time") from exc
            except httpx.HTTPError as exc:
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
    ) -> httpx.Response:  # fmt: skip
        """A successful answer (its body read when `read`), after as many attempts as the policy allows."""
        attempt, reauthenticated = 0, False
        content = None if body is None else orjson.dumps(body)
        while True:
            attempt += 1
            if attempt > 1 and self.metrics is not None:
                self.metrics.upstream_retries.labels(operation).inc()
            try:
                response = await self._attempt(method, url, content, params, deadline, read)
            except httpx.HTTPError as exc:
                self._count(operation, type(exc).__name__)
                retryable = isinstance(exc, httpx.TransportError)
                if retryable and (idempotent or isinstance(exc, _NEVER_SENT)) and await self._pause(attempt, deadline):
                    continue
                raise translate_transport(exc) from exc
            status = response.status_code
            self._count(operation, str(status))
            if status < 300:
                return response
            if status == 401 and not reauthenticated and self.auth.invalidate():
                reauthenticated, attempt = True, attempt - 1  # a cached token may have been revoked: once more
                continue
            # An error answer means Azure did not act on the request: a retry is safe even for a create.
            if self.retry.retries(status) and await self._pause(attempt, deadline, response.headers):
                continue
            raise translate(status, response.content, response.headers, retry_after=self.retry.backoff(attempt))

    async def _attempt(
        self, method: str, url: str, content: bytes | None, params: dict[str, str] | None, deadline: float | None,
        read: bool,
    ) -> httpx.Response:  # fmt: skip
        """One exchange, bounded by the deadline: the answer's headers, and its body when `read` or when it failed."""
        if deadline is None:
            return await self._exchange(method, url, content, params, None, read)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _deadline_passed()
        # httpx bounds each phase (a gap in a stream may not outlast the deadline); asyncio the whole.
        # The request's `timeout` extension, as httpx.Timeout(remaining, connect=...).as_dict() gives it.
        bounds: dict[str, float | None] = {
            "connect": min(10.0, remaining),
            "read": remaining,
            "write": remaining,
            "pool": remaining,
        }
        try:
            async with asyncio.timeout(remaining):
                return await self._exchange(method, url, content, params, bounds, read)
        except TimeoutError as exc:
            raise _deadline_passed() from exc

    async def _exchange(
        self,
        method: str,
        url: str,
        content: bytes | None,
        params: dict[str, str] | None,
        bounds: dict[str, float | None] | None,
        read: bool,
    ) -> httpx.Response:
        headers = await self.auth.headers()
        if tracing.ENABLED:  # the attempt's span, its traceparent sent on to Azure
            headers = tracing.outgoing(headers, method, url)
        if content is not None:
            headers.update(_JSON)
        current = timing.current()
        if current is not None:
            current.upstream_requests += 1
        http = self.http
        request = httpx.Request(
            method,
            url,
            params=params,
            content=content,
            headers={**self._headers, **headers},
            extensions={"timeout": bounds if bounds is not None else self._timeout},
        )
        started = time.perf_counter()  # timing.upstream_wait(), inlined: it is half a dozen calls
        try:
            response = await http.send(request, stream=True)
            if not read and response.status_code < 300:
                return response
            try:
                await response.aread()
            finally:
                await response.aclose()
        finally:
            if current is not None:
                current.upstream_s += time.perf_counter() - started
        return response

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
