"""What the tests see of the emulator: request stats, injected faults, and the `/_emulator/` routes."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.emulator.http import EmulatorHTTPError
from app.emulator.options import EmulatorOptions

# Path segments that are object ids, replaced by a placeholder to name the operation.
_ID_SEGMENT = re.compile(r"^(asst|thread|msg|run|step|call|resp|conv|fc|cntr|cfile)_[A-Za-z0-9]+$")
_PLACEHOLDER = {
    "asst": "{assistant_id}",
    "thread": "{thread_id}",
    "msg": "{message_id}",
    "run": "{run_id}",
    "step": "{step_id}",
    "call": "{call_id}",
    "resp": "{response_id}",
    "conv": "{conversation_id}",
    "fc": "{item_id}",
    "cntr": "{container_id}",
    "cfile": "{file_id}",
}
_PROJECT = re.compile(r"^/api/projects/[^/]+")
_AGENT_NAME = re.compile(r"^(/api/projects/\{project\}/agents/)([^/]+)")
_VERSION = re.compile(r"(/versions/)([^/]+)")


def operation_of(method: str, path: str) -> str:
    """`POST /openai/threads/thread_abc/runs` -> `POST /openai/threads/{thread_id}/runs`."""
    path = _PROJECT.sub("/api/projects/{project}", path)
    path = _AGENT_NAME.sub(r"\1{agent_name}", path)
    path = _VERSION.sub(r"\1{version}", path)
    parts = []
    for segment in path.split("/"):
        m = _ID_SEGMENT.match(segment)
        parts.append(_PLACEHOLDER[m.group(1)] if m else segment)
    return f"{method} {'/'.join(parts)}"


@dataclass
class RecordedRequest:
    method: str
    path: str
    operation: str
    query: str
    body: Any
    status: int = 0
    traceparent: str | None = None
    """The caller's W3C `traceparent` (w3.org/TR/trace-context), as Azure's own SDKs send it on every request
    (azure-core's DistributedTracingPolicy); Azure takes it as any header. Recorded here for tests only."""


class Stats:
    """Requests counted by operation, plus a bounded log of the last requests with their bodies."""

    def __init__(self, log_size: int = 2000) -> None:
        self.by_operation: Counter[str] = Counter()
        self.log: deque[RecordedRequest] = deque(maxlen=log_size)

    def record(self, entry: RecordedRequest) -> None:
        self.by_operation[entry.operation] += 1
        self.log.append(entry)

    def reset(self) -> None:
        self.by_operation.clear()
        self.log.clear()

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": sum(self.by_operation.values()),
            "by_operation": dict(self.by_operation),
            "requests": [
                {
                    "method": r.method,
                    "path": r.path,
                    "operation": r.operation,
                    "query": r.query,
                    "status": r.status,
                    "body": r.body,
                    "traceparent": r.traceparent,
                }
                for r in self.log
            ],
        }


@dataclass
class FaultRule:
    path: re.Pattern[str]
    status: int | None
    remaining: int
    method: str | None = None
    retry_after: str | None = None
    retry_after_ms: str | None = None
    message: str | None = None
    latency_ms: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.remaining > 0 and (self.method is None or self.method == method) and self.path.search(path) is not None
        )


class Faults:
    """Make the next N requests whose path matches a regex answer a status (and/or wait)."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []

    def add(self, spec: dict[str, Any]) -> FaultRule:
        try:
            rule = FaultRule(
                path=re.compile(str(spec["path"])),
                status=int(spec["status"]) if spec.get("status") is not None else None,
                remaining=int(spec.get("count", 1)),
                method=str(spec["method"]).upper() if spec.get("method") else None,
                retry_after=str(spec["retry_after"]) if spec.get("retry_after") is not None else None,
                retry_after_ms=str(spec["retry_after_ms"]) if spec.get("retry_after_ms") is not None else None,
                message=spec.get("message"),
                latency_ms=float(spec.get("latency_ms", 0.0)),
            )
        except (KeyError, TypeError, ValueError, re.error) as exc:
            raise EmulatorHTTPError(400, f"Invalid fault: {exc!r}") from exc
        self.rules.append(rule)
        return rule

    def take(self, method: str, path: str) -> FaultRule | None:
        for rule in self.rules:
            if rule.matches(method, path):
                rule.remaining -= 1
                return rule
        return None

    def reset(self) -> None:
        self.rules.clear()


@dataclass
class EmulatorContext:
    """Everything the emulator's surfaces share; built once per app."""

    options: EmulatorOptions
    stats: Stats = field(default_factory=Stats)
    faults: Faults = field(default_factory=Faults)
    resets: list[Callable[[], None]] = field(default_factory=list)
    """Each surface registers how to forget its state (called by `/_emulator/reset`)."""
    threads_view: Callable[[], list[dict[str, Any]]] | None = None
    """Set by the Assistants surface: every thread ever created, deleted or not."""
    minted: OrderedDict[str, str] = field(default_factory=OrderedDict)
    """Tokens the managed-identity endpoint issued, and the resource each is for (the newest 10000)."""

    def mint(self, token: str, resource: str) -> None:
        self.minted[token] = resource
        while len(self.minted) > 10000:
            self.minted.popitem(last=False)


_FAULT_MESSAGES = {
    401: "Access denied due to invalid subscription key or wrong API endpoint.",
    429: "Rate limit is exceeded. Try again in 1 seconds.",
}


def _fault_response(rule: FaultRule) -> Response:
    assert rule.status is not None
    headers: dict[str, str] = {}
    if rule.retry_after is not None:
        headers["retry-after"] = rule.retry_after
    if rule.retry_after_ms is not None:
        headers["retry-after-ms"] = rule.retry_after_ms
    message = rule.message or _FAULT_MESSAGES.get(rule.status, f"Injected fault: status {rule.status}.")
    return EmulatorHTTPError(
        rule.status,
        message,
        type="server_error" if rule.status >= 500 else "invalid_request_error",
        code=str(rule.status),
        headers=headers,
    ).response()


class EmulatorMiddleware:
    """Latency, faults, auth and stats around every Azure request (not the `/_emulator/` hooks)."""

    def __init__(self, app: ASGIApp, ctx: EmulatorContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_emulator"):
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        # Buffer the body so it can be logged and still be read by the handler.
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        entry = RecordedRequest(
            method=method,
            path=path,
            operation=operation_of(method, path),
            query=scope.get("query_string", b"").decode(),
            body=body,
            traceparent=_header(scope, b"traceparent"),
        )
        self.ctx.stats.record(entry)

        async def send_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = int(message["status"])
            await send(message)

        if self.ctx.options.latency_ms > 0:
            await asyncio.sleep(self.ctx.options.latency_ms / 1000)
        rule = self.ctx.faults.take(method, path)
        if rule is not None:
            if rule.latency_ms > 0:
                await asyncio.sleep(rule.latency_ms / 1000)
            if rule.status is not None:
                await _fault_response(rule)(scope, replay, send_recording)
                return
        if not path.startswith("/msi/"):
            refusal = _authorised(scope, self.ctx)
            if refusal is not None:
                await refusal(scope, replay, send_recording)
                return
        await self.app(scope, replay, send_recording)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


PROJECT_AUDIENCE = "https://ai.azure.com"
"""The audience of tokens for Foundry projects (scope `https://ai.azure.com/.default`)."""


def _credentials(scope: Scope) -> tuple[str, str]:
    key = token = ""
    for name, value in scope.get("headers", []):
        if name == b"api-key":
            key = value.decode("latin-1").strip()
        elif name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                token = rest.strip()
    return key, token


def _authorised(scope: Scope, ctx: EmulatorContext) -> Response | None:
    """None if the request may pass, else Azure's 401.

    - Azure OpenAI (`/openai/...`): any non-empty `api-key`, or a Bearer token (docs/reference/azure-wire.md
      §1.1); the 401 body is the resource's `{"error": {"code": "401", "message": ...}}`.
    - Foundry project endpoints (`/api/projects/...`: classic agents and v2): Entra only. azure-ai-agents
      and azure-ai-projects take only a `TokenCredential` (scope `https://ai.azure.com/.default`); keys on
      a Foundry resource serve model inference, not agents (docs/reference/azure-as-it-is.md §1). Unless
      `options.accept_api_key_on_projects` says a key-taking gateway stands in front, an `api-key` alone
      is refused, and so is a token that this emulator's managed-identity endpoint minted for another
      audience. Other tokens are not validated (there is no Entra here). The 401 body is the Cognitive
      Services gateway's `{"statusCode": 401, "message": "Unauthorized. Access token is missing, invalid,
      audience is incorrect (<audience>), or have expired."}`, quoted with the cognitiveservices audience
      in Azure/azure-sdk-for-python#40260 and Azure-Samples/azure-search-openai-demo#458; with the
      project audience by analogy (no source quotes it for a project endpoint).
    """
    key, token = _credentials(scope)
    path: str = scope["path"]
    if not path.startswith("/api/projects/"):
        if key or token:
            return None
        return JSONResponse(
            {
                "error": {
                    "code": "401",
                    "message": "Access denied due to missing subscription key or Authorization header. "
                    "Make sure to include an 'api-key' or 'Authorization: Bearer' header.",
                }
            },
            status_code=401,
        )
    if key and ctx.options.accept_api_key_on_projects:
        return None
    if token and ctx.minted.get(token, PROJECT_AUDIENCE).rstrip("/") == PROJECT_AUDIENCE:
        return None
    message = (
        f"Unauthorized. Access token is missing, invalid, audience is incorrect ({PROJECT_AUDIENCE}), or have expired."
    )
    return JSONResponse({"statusCode": 401, "message": message}, status_code=401)


def hook_routes(ctx: EmulatorContext) -> list[BaseRoute]:
    async def stats(request: Request) -> Response:
        return JSONResponse(ctx.stats.as_dict())

    async def reset_stats(request: Request) -> Response:
        ctx.stats.reset()
        return JSONResponse({"reset": "stats"})

    async def threads(request: Request) -> Response:
        data = ctx.threads_view() if ctx.threads_view is not None else []
        return JSONResponse({"object": "list", "data": data})

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            ctx.faults.reset()
            return JSONResponse({"faults": []})
        if request.method == "POST":
            spec = await request.json()
            specs = spec if isinstance(spec, list) else [spec]
            try:
                for one in specs:
                    ctx.faults.add(one)
            except EmulatorHTTPError as exc:
                return exc.response()
        return JSONResponse(
            {
                "faults": [
                    {"path": r.path.pattern, "status": r.status, "remaining": r.remaining, "method": r.method}
                    for r in ctx.faults.rules
                ]
            }
        )

    async def config(request: Request) -> Response:
        if request.method == "POST":
            try:
                ctx.options.update(await request.json())
            except (KeyError, TypeError, ValueError) as exc:
                return EmulatorHTTPError(400, f"Unknown or invalid option: {exc}").response()
        return JSONResponse(ctx.options.as_dict())

    async def reset(request: Request) -> Response:
        for forget in ctx.resets:
            forget()
        ctx.stats.reset()
        ctx.faults.reset()
        return JSONResponse({"reset": True})

    return [
        Route("/_emulator/stats", stats, methods=["GET"]),
        Route("/_emulator/stats/reset", reset_stats, methods=["POST"]),
        Route("/_emulator/threads", threads, methods=["GET"]),
        Route("/_emulator/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_emulator/config", config, methods=["GET", "POST"]),
        Route("/_emulator/reset", reset, methods=["POST"]),
    ]
