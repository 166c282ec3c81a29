"""ASGI middleware: request ids, per-request timing and the access line, and the body size limit."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import notices, timing
from app.errors import PayloadTooLargeError

access = logging.getLogger("agent_bridge.access")
# Probes and scrapes: not worth a log line or a request metric each.
_UNMEASURED = frozenset({"/healthz", "/readyz", "/metrics"})
CLIENT_CLOSED = 499
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:/=+-]{1,128}$")
_WARNING_HEADER = notices.HEADER.encode()


_BODYLESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


class _Facts:
    """What the access line says about the exchange, gathered as its messages pass."""

    __slots__ = ("complete", "hung_up", "started", "status", "thread_id")

    def __init__(self) -> None:
        self.status = 500
        self.thread_id: str | None = None
        self.started = False
        self.complete = False
        self.hung_up = False


class RequestContextMiddleware:
    """Takes `x-request-id` from the client (or mints one) and returns it; times the request; at its
    end counts it in the metrics and writes one JSON access line (no keys, tokens or content): an
    error's OpenAI code (the in-stream error's, for a stream that failed after its first byte), and
    499 when the client hung up before the answer was complete.

    It also refuses bodies over `max_bytes` with 413: by Content-Length up front, else while reading
    a chunked body (which is then replayed to the app). One layer for both: every layer of the stack
    is a frame each time the request's task resumes.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        declared = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and request_id is None:
                candidate = value.decode("latin-1")
                request_id = candidate if _SAFE_ID.match(candidate) else ""  # "": the first one was unsafe
            elif name == b"content-length" and declared is None:
                declared = value
        if not request_id:
            request_id = "req_" + os.urandom(12).hex()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        clock = timing.begin(request_id)
        warnings = notices.begin()
        raw_id = request_id.encode()
        facts = _Facts()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                facts.started = True
                facts.status = message["status"]
                headers = list(message.get("headers", ()))
                for key, value in headers:
                    if key == b"x-thread-id":
                        facts.thread_id = value.decode()
                headers.append((b"x-request-id", raw_id))
                if warnings:
                    warning = notices.header_value(warnings)
                    if warning is not None:
                        headers.append((_WARNING_HEADER, warning.encode()))
                message["headers"] = headers
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                facts.complete = True
            await send(message)

        async def receive_watching() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not facts.complete:
                facts.hung_up = True
            return message

        try:
            if scope["method"] in _BODYLESS:
                await self.app(scope, receive_watching, send_with_id)
            elif declared is not None:
                if declared.isdigit() and int(declared) > self.max_bytes:
                    await self._refuse(scope, receive_watching, send_with_id)
                else:
                    await self.app(scope, receive_watching, send_with_id)
            else:
                await self._chunked(scope, receive_watching, send_with_id)
        finally:
            self._account(scope, state, clock, facts, warnings)

    async def _chunked(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A body without Content-Length: read it whole (refused once it grows too big), then replay it."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLargeError(f"The request body is larger than this bridge accepts ({self.max_bytes} bytes).")
        scope.setdefault("state", {})["error_code"] = error.code
        response = JSONResponse(error.envelope(), status_code=error.status)
        await response(scope, receive, send)

    @staticmethod
    def _account(
        scope: Scope, state: dict[str, Any], clock: timing.RequestTiming, facts: _Facts, warnings: list[str]
    ) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        if endpoint in _UNMEASURED:
            return
        total = time.perf_counter() - clock.started
        overhead_s = clock.overhead_ms() / 1000.0
        app_state = scope["app"].state
        components = getattr(app_state, "components", None)
        metrics = getattr(components, "metrics", None)
        model = state.get("model", "")
        # 499 (nginx's convention): the client hung up before the whole answer was sent.
        status = CLIENT_CLOSED if facts.hung_up else facts.status
        if metrics is not None:
            metrics.requests.labels(endpoint, _model_label(app_state, model), str(status)).inc()
            metrics.request_seconds.labels(endpoint).observe(total)
            metrics.overhead_seconds.labels(endpoint).observe(overhead_s)
        if not access.isEnabledFor(logging.INFO):
            return  # the line below is a dozen calls to build, for nobody
        extra = {
            "request_id": state.get("request_id"),
            "method": scope["method"],
            "path": scope["path"],
            "endpoint": endpoint,
            "status": status,
            "model": model[:256] or None,
            "owner": state.get("owner"),
            "thread_id": facts.thread_id,
            "total_ms": round(total * 1000, 3),
            "upstream_ms": round(clock.upstream_s * 1000, 3),
            "overhead_ms": round(overhead_s * 1000, 3),
            "upstream_requests": clock.upstream_requests,
        }
        code = state.get("error_code")
        if facts.hung_up:
            extra["error_code"] = "client_closed"
            extra["client_closed"] = True
            extra["sent_status"] = facts.status if facts.started else None
        elif status >= 400:
            # An exception that escaped every handler is answered 500 internal_error further out.
            extra["error_code"] = code or "internal_error"
        elif code is not None:
            # After the first byte an error goes out as an in-stream event: the status stays the one sent.
            extra["error_code"] = code
        if warnings:
            extra["warnings"] = list(warnings)
        if "content" in state:
            extra["content"] = state["content"]
        access.info("%s %s %s", scope["method"], scope["path"], status, extra=extra)


def _model_label(app_state: Any, model: str) -> str:
    """A configured model name, or `unknown`: a label copied from the request would let any caller
    create Prometheus series without bound."""
    if not model:
        return ""
    settings = getattr(app_state, "settings", None)
    return model if settings is not None and model in settings.routes else "unknown"
