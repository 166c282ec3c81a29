"""HTTP to Azure: auth headers, bounded retries, SSE parsing, error translation.

Retries cover 408/429/5xx answers and connection failures, honour `retry-after-ms`/`retry-after`,
and never sleep past the turn's deadline. A request that creates something (a run, tool outputs)
is repeated only when it certainly did not reach Azure: a refused connection, or an answer that
says it was not processed (429/5xx). Every failure leaves as an `app.errors` error.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from app.backends.azure_auth import AuthProvider
from app.backends.retry import RetryPolicy, server_hint
from app.core import timing
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
from app.metrics import Metrics

# Calls without a turn deadline (the janitor, the admin API) still may not hang.
_UNBOUNDED_CALL_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


def parse_event(block: bytes) -> SSEEvent | None:
    """One SSE event from its lines (without the blank line that ends it)."""
    name = ""
    data: list[str] = []
    for raw in block.split(b"\n"):
        if not raw or raw[:1] == b":":
            continue
        field, _, value = raw.decode("utf-8").partition(":")
        if value[:1] == " ":
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    if not data and not name:
        return None
    return SSEEvent(name or "message", "\n".join(data))


def _error_fields(response: httpx.Response) -> tuple[str, str | None, str | None]:
    """Azure's message, param and code from an error body of any of its shapes."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()[:500]
        return text or f"HTTP {response.status_code}", None, None
    error = body.get("error", body) if isinstance(body, dict) else {}
    if not isinstance(error, dict):
        return str(error)[:500], None, None
    message = str(error.get("message") or f"HTTP {response.status_code}")
    param = error.get("param")
    code = error.get("code")
    return message, str(param) if param is not None else None, str(code) if code is not None else None


def translate(response: httpx.Response) -> BridgeError:
    status = response.status_code
    message, param, code = _error_fields(response)
    if status in (400, 422):
        return InvalidRequestError(message, param=param, code=code)
    if status in (401, 403):
        return UpstreamAuthError(f"Upstream authentication failed (HTTP {status}): {message}")
    if status == 404:
        return NotFoundError(message, code="upstream_not_found")
    if status == 409:
        return ConflictError(message, code=code or "upstream_conflict")
    if status == 429:
        return RateLimitError(
            f"Azure is rate limiting this agent: {message}", retry_after=server_hint(response.headers)
        )
    if status in (408, 504):
        return UpstreamTimeoutError(f"Azure timed out: {message}")
    return UpstreamError(f"Azure answered HTTP {status}: {message}", code=code or "upstream_error")


class UpstreamClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        auth: AuthProvider,
        retry: RetryPolicy,
        *,
        name: str = "azure",
        metrics: Metrics | None = None,
    ) -> None:
        self.http = http
        self.auth = auth
        self.retry = retry
        self.name = name
        self.metrics = metrics

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        deadline: float | None = None,
        idempotent: bool = True,
        operation: str = "request",
    ) -> Any:
        """Send a request and return its JSON body (None when empty)."""
        response = await self._send(method, url, json, params, deadline, idempotent, operation)
        try:
            with timing.upstream_wait():
                content = await response.aread()
        except httpx.TimeoutException as exc:
            raise UpstreamTimeoutError("Azure did not finish its answer in time.") from exc
        except httpx.TransportError as exc:
            raise UpstreamError(f"The connection to Azure broke: {type(exc).__name__}.") from exc
        finally:
            await response.aclose()
        if not content:
            return None
        try:
            return json_loads(content)
        except ValueError as exc:
            raise UpstreamError("Azure answered with a body that is not JSON.") from exc

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        deadline: float | None = None,
        idempotent: bool = False,
        operation: str = "stream",
    ) -> AsyncIterator[AsyncIterator[SSEEvent]]:
        """Send a request whose answer is an event stream; yields its events as they arrive."""
        response = await self._send(method, url, json, params, deadline, idempotent, operation)
        try:
            yield self._events(response)
        finally:
            await response.aclose()

    async def _events(self, response: httpx.Response) -> AsyncIterator[SSEEvent]:
        """Events cut from raw byte chunks at blank lines: far less Python per event than line by line."""
        chunks = response.aiter_bytes()
        current = timing.current()
        buffer = b""
        while True:
            started = time.perf_counter()
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except httpx.TimeoutException as exc:
                raise UpstreamTimeoutError("Azure stopped sending the run's events.") from exc
            except httpx.TransportError as exc:
                raise UpstreamError(f"The event stream from Azure broke: {type(exc).__name__}.") from exc
            finally:
                if current is not None:
                    current.upstream_s += time.perf_counter() - started
            buffer += chunk
            held = b""
            if b"\r" in buffer:
                if buffer.endswith(b"\r"):  # maybe half of a CRLF split across chunks
                    buffer, held = buffer[:-1], b"\r"
                buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            *blocks, buffer = buffer.split(b"\n\n")
            buffer += held
            for block in blocks:
                event = parse_event(block)
                if event is not None:
                    yield event
        if buffer.strip():
            event = parse_event(buffer)
            if event is not None:
                yield event

    async def _send(
        self,
        method: str,
        url: str,
        body: Any,
        params: dict[str, str] | None,
        deadline: float | None,
        idempotent: bool,
        operation: str,
    ) -> httpx.Response:
        attempt = 0
        reauthenticated = False
        while True:
            attempt += 1
            if attempt > 1 and self.metrics is not None:
                self.metrics.upstream_retries.labels(operation).inc()
            headers = await self.auth.headers()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise UpstreamTimeoutError("The turn's deadline passed before Azure answered.")
            request = self.http.build_request(
                method,
                url,
                json=body,
                params=params,
                headers=headers,
                timeout=httpx.Timeout(remaining, connect=min(10.0, remaining))
                if remaining is not None
                else _UNBOUNDED_CALL_TIMEOUT,
            )
            current = timing.current()
            if current is not None:
                current.upstream_requests += 1
            try:
                with timing.upstream_wait():
                    response = await self.http.send(request, stream=True)
            except httpx.TransportError as exc:
                self._count(operation, type(exc).__name__)
                if await self._retry_transport(exc, attempt, deadline, idempotent):
                    continue
                raise _transport_error(exc) from exc
            self._count(operation, str(response.status_code))
            if response.status_code < 400:
                return response
            with timing.upstream_wait():
                await response.aread()
            await response.aclose()
            if response.status_code == 401 and not reauthenticated and self.auth.invalidate():
                # A cached token may have been revoked: fetch a new one, once.
                reauthenticated = True
                attempt -= 1
                continue
            if self.retry.retries(response.status_code) and await self._pause(
                attempt, server_hint(response.headers), deadline
            ):
                continue
            raise translate(response)

    def _count(self, operation: str, status: str) -> None:
        if self.metrics is not None:
            self.metrics.upstream_requests.labels(operation, status).inc()

    async def _retry_transport(
        self, exc: httpx.TransportError, attempt: int, deadline: float | None, idempotent: bool
    ) -> bool:
        # A request that never left is safe to repeat even when it creates something.
        never_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
        return (never_sent or idempotent) and await self._pause(attempt, None, deadline)

    async def _pause(self, attempt: int, hint: float | None, deadline: float | None) -> bool:
        """Sleep before the next attempt; False when attempts are used up or the wait outlasts the deadline."""
        if attempt >= self.retry.max_attempts:
            return False
        if hint is not None and hint > self.retry.max_delay_s:
            return False  # a long wait is the client's call: it gets the 429 with Retry-After
        delay = self.retry.delay(attempt, hint)
        if deadline is not None and time.monotonic() + delay >= deadline:
            return False
        await asyncio.sleep(delay)
        return True


def _transport_error(exc: httpx.TransportError) -> BridgeError:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return UpstreamError(f"Could not reach Azure ({type(exc).__name__}).", code="upstream_unreachable")
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeoutError("Azure did not answer in time.")
    return UpstreamError(f"The connection to Azure broke: {type(exc).__name__}.")


def json_loads(content: bytes) -> Any:
    return json.loads(content)
