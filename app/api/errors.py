"""The one place errors become HTTP: OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.metering import RATE_HEADERS
from app.errors import BridgeError, InvalidRequestError, NotFoundError

log = logging.getLogger("agent_bridge.errors")


def render(error: BridgeError) -> JSONResponse:
    # A turn admitted under its key's limits that failed afterwards still tells the key where it stands.
    rate = RATE_HEADERS.get()
    headers = error.headers if rate is None else {**rate, **error.headers}
    return JSONResponse(error.envelope(), status_code=error.status, headers=headers)


# Pydantic names the branch of a union in the location (`content.str`, `tool_choice.literal[...]`).
_TYPE_TAG = re.compile(
    r"^(str|int|float|bool|dict|list|none|literal|function-\w+|tagged-union|union|json-or-python|nullable|"
    r"is-instance|[A-Z]\w*)(\[.*\])?$"
)


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [p for p in loc if p != "body" and not (isinstance(p, str) and _TYPE_TAG.match(p))]
    if not parts:
        return None
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_error(exc: RequestValidationError) -> InvalidRequestError:
    """The first problem of a rejected body, naming the field like OpenAI does (`messages[0].role`)."""
    errors = exc.errors()
    if not errors:
        return InvalidRequestError("The request body is invalid.")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return InvalidRequestError("The request body is not valid JSON.", code="invalid_json")
    param = _param(tuple(first.get("loc", ())))
    if param is None:
        if first.get("type") == "missing":
            return InvalidRequestError("The request needs a JSON body.", code="missing_body")
        return InvalidRequestError(f"The request body is invalid: {first.get('msg')}.", code="invalid_body")
    kind = first.get("type", "")
    if kind == "missing":
        return InvalidRequestError(
            f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
        )
    return InvalidRequestError(f"Invalid value for '{param}': {first.get('msg')}.", param=param, code="invalid_value")


def note(request: Request, code: str | None) -> None:
    """An error's OpenAI code, for the access line (`RequestContextMiddleware`): answered as a status
    before the first byte, or sent as an in-stream error event after it."""
    request.state.error_code = code or "unknown_error"


def _answer(request: Request, error: BridgeError) -> JSONResponse:
    """The envelope, with its code noted for the access line."""
    note(request, error.code)
    return render(error)


def install(app: FastAPI) -> None:
    async def bridge_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BridgeError)
        return _answer(request, exc)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _answer(request, validation_error(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return _answer(
                request, NotFoundError(f"Unknown path: {request.method} {request.url.path}", code="unknown_url")
            )
        response = _answer(request, InvalidRequestError(str(exc.detail), code=f"http_{exc.status_code}"))
        response.status_code = exc.status_code
        return response

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _answer(
            request, BridgeError("The bridge hit an internal error; it has been logged.", code="internal_error")
        )

    app.add_exception_handler(BridgeError, bridge_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
