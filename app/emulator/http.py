"""Wire helpers shared by every emulated surface: ids, Azure error bodies, strict JSON bodies, SSE, lists."""

from __future__ import annotations

import json
import secrets
import string
import time
from collections.abc import Iterable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse

T = TypeVar("T")

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """An id shaped like Azure's: `thread_` + 24 random letters and digits."""
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def now() -> int:
    return int(time.time())


class EmulatorHTTPError(Exception):
    """An error answered with Azure's body: `{"error": {"message", "type", "param", "code"}}`, plus any
    `extra` fields Azure adds inside `error` (Foundry's `details` and `additionalInfo`)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self) -> JSONResponse:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code, **self.extra}
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


def not_found(kind: str, object_id: str) -> EmulatorHTTPError:
    """Azure's 404 for an unknown id: `No thread found with id 'thread_x'.`"""
    return EmulatorHTTPError(404, f"No {kind} found with id '{object_id}'.", code=None)


def found(value: T | None, kind: str, object_id: str) -> T:
    """`value`, or Azure's 404 for an unknown id when there is none."""
    if value is None:
        raise not_found(kind, object_id)
    return value


async def read_json(
    request: Request,
    *,
    allowed: Iterable[str],
    required: Iterable[str] = (),
    optional_body: bool = False,
) -> dict[str, Any]:
    """Parse a JSON object body strictly, like Azure: an unknown field is a 400 `unknown_parameter`."""
    raw = await request.body()
    if not raw.strip():
        if optional_body:
            return {}
        raise EmulatorHTTPError(400, "Missing request body.", code="missing_body")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise EmulatorHTTPError(400, f"Invalid JSON body: {exc}.", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise EmulatorHTTPError(400, "The body must be a JSON object.", code="invalid_type")
    allowed_set = set(allowed)
    for key in body:
        if key not in allowed_set:
            raise EmulatorHTTPError(400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")
    for key in required:
        if body.get(key) is None:
            raise EmulatorHTTPError(
                400, f"Missing required parameter: '{key}'.", param=key, code="missing_required_parameter"
            )
    return body


def sse(event: str, data: dict[str, Any] | str) -> bytes:
    """One SSE event: an `event:` line and one single-line `data:` line, `\\n` newlines only."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


def page(
    items: list[dict[str, Any]],
    *,
    limit: int = 20,
    order: str = "desc",
    after: str | None = None,
    before: str | None = None,
) -> dict[str, Any]:
    """A cursor page over `items` (given oldest first). `last_id` is null on an empty page, which
    azure-ai-agents needs to stop paging (it ignores `has_more`)."""
    ordered = list(items) if order == "asc" else list(reversed(items))
    ids = [item["id"] for item in ordered]
    start, end = 0, len(ordered)
    if after is not None:
        start = ids.index(after) + 1 if after in ids else len(ordered)
    if before is not None:
        end = ids.index(before) if before in ids else 0
    window = ordered[start:end]
    data = window[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(window) > len(data),
    }


def list_params(request: Request) -> dict[str, Any]:
    """`limit` (1-100, default 20), `order` (asc|desc, default desc), `after`, `before`.

    Source: the Assistants list operations (threads, messages, runs, run steps) in Azure.AI.Agents'
    TypeSpec (`limit`, `order`, `after`, `before` on each list; 1-100) and OpenAI's API reference for
    list messages / list run steps / list conversation items (limit 1-100, default 20; order default desc)."""
    q = request.query_params
    try:
        limit = int(q.get("limit", "20"))
    except ValueError as exc:
        raise EmulatorHTTPError(400, "Invalid 'limit': expected an integer.", param="limit") from exc
    if not 1 <= limit <= 100:
        raise EmulatorHTTPError(400, f"Invalid 'limit': {limit}. Expected a value between 1 and 100.", param="limit")
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise EmulatorHTTPError(400, f"Invalid 'order': '{order}'. Expected 'asc' or 'desc'.", param="order")
    return {"limit": limit, "order": order, "after": q.get("after"), "before": q.get("before")}
