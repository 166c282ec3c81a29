"""A turn route's JSON body and headers, read without FastAPI's per-request machinery, refused as FastAPI refuses them.

The turn endpoints are the bridge's hot path, and FastAPI's body handling costs a content-type parse
(`email.message`), `json.loads`, then validation of the parsed value, besides the dependency solving
around it. Here a body sent as `application/json` is parsed and validated in one step by pydantic
(`model_validate_json`). Anything that step refuses goes FastAPI's way (`json.loads`, then
validation of the Python value), in FastAPI's order, so that a refused request gets exactly the
error it always got: a JSON error before the key is checked, a header's error before the body's.

`documented()` and `schemas()` describe the body and headers for `/openapi.json` (`app.api.turn_routes`).
"""

from __future__ import annotations

import email.message
import json
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException

from app.errors import BridgeError
from app.wire.text import PARSED_AS_JSON

M = TypeVar("M", bound=BaseModel)
_NOTHING: Any = object()
"""No body at all (FastAPI's `Undefined`): the body is missing."""


def header(request: Request, name: bytes) -> str | None:
    """The first value of header `name` (lower case), as Starlette decodes it."""
    for key, value in request.scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class Header:
    """A `str | None` header with a maximum length, checked as FastAPI's `Header(max_length=...)` checks it."""

    def __init__(self, name: str, *, max_length: int) -> None:
        self.name = name
        self.raw_name = name.encode()
        self.max_length = max_length
        self._adapter: TypeAdapter[str] = TypeAdapter(Annotated[str, Field(max_length=max_length)])

    def read(self, request: Request, problems: list[Any]) -> str | None:
        """The header's value; a value too long is added to `problems` (and read as None)."""
        value = header(request, self.raw_name)
        if value is None or len(value) <= self.max_length:
            return value
        try:
            self._adapter.validate_python(value)
        except ValidationError as exc:
            problems += [{**e, "loc": ("header", self.name, *e["loc"])} for e in exc.errors(include_url=False)]
        return None

    def parameter(self) -> dict[str, Any]:
        """The header as an OpenAPI parameter."""
        return _header_parameter(self.name, {"type": "string", "maxLength": self.max_length})


class Body(Generic[M]):
    """A request's body, read: the model when pydantic took it in one step, else the value FastAPI would
    have validated (checked by `valid`, once the route has checked the key, as FastAPI orders it)."""

    __slots__ = ("_parsed", "_type", "_value")

    def __init__(self, model_type: type[M], parsed: M | None, value: Any = _NOTHING) -> None:
        self._type = model_type
        self._parsed = parsed
        self._value = value

    def valid(self, problems: list[Any] | None = None) -> M:
        """The model; raises the request's validation errors (`problems` first: the headers' ones)."""
        errors = list(problems or ())
        parsed = self._parsed
        if parsed is None:
            value = self._value
            if value is _NOTHING:
                errors.append(_missing())
            else:
                try:
                    parsed = self._type.model_validate(value, from_attributes=True)
                except ValidationError as exc:
                    errors += [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        if errors:
            raise RequestValidationError(errors, body=None if self._value is _NOTHING else self._value)
        assert parsed is not None
        return parsed


async def read(request: Request, model_type: type[M]) -> Body[M]:
    """Read the body; raises now only what FastAPI raises on reading (JSON that does not parse)."""
    try:
        raw = await request.body()
    except HTTPException:
        raise
    except Exception as exc:  # as FastAPI answers a body it could not read
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc
    content_type = header(request, b"content-type")
    if raw and content_type is not None and _plain_json(content_type):
        try:
            return Body(model_type, model_type.model_validate_json(raw, context=PARSED_AS_JSON))
        except (ValidationError, BridgeError):
            pass  # refused: FastAPI's way below gives the error FastAPI gives
    return Body(model_type, None, _decoded(raw, content_type))


def _plain_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.startswith("application/json;")


def _decoded(raw: bytes, content_type: str | None) -> Any:
    """What FastAPI hands validation: nothing, the bytes themselves (not JSON), or the parsed JSON."""
    if not raw:
        return _NOTHING
    if content_type is None:
        return raw  # FastAPI's strict content type: no header, no JSON
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or not (subtype == "json" or subtype.endswith("+json")):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {}}
        raise RequestValidationError([{**error, "ctx": {"error": exc.msg}}], body=exc.doc) from exc
    except Exception as exc:
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc


def _missing() -> dict[str, Any]:
    details = ValidationError.from_exception_data(
        "Field required", [{"type": "missing", "loc": ("body",), "input": {}}]
    ).errors(include_url=False)[0]
    return {**details, "input": None}


def documented(model_type: type[BaseModel], *headers: Header) -> dict[str, Any]:
    """A route's OpenAPI request: its JSON body (a schema of `schemas()`), its headers and the key's."""
    ref = {"$ref": f"#/components/schemas/{model_type.__name__}"}
    parameters = [h.parameter() for h in headers] + [_header_parameter("authorization", {"type": "string"})]
    body = {"required": True, "content": {"application/json": {"schema": ref}}}
    return {"requestBody": body, "parameters": parameters}


def _header_parameter(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    title = "-".join(part.capitalize() for part in name.split("-"))
    optional = {"anyOf": [schema, {"type": "null"}], "title": title}
    return {"name": name, "in": "header", "required": False, "schema": optional}


def schemas(*model_types: type[BaseModel]) -> dict[str, Any]:
    """The component schemas of the documented bodies, for `/openapi.json`."""
    found: dict[str, Any] = {}
    for model_type in model_types:
        schema = model_type.model_json_schema(ref_template="#/components/schemas/{model}")
        found.update(schema.pop("$defs", {}))
        found[model_type.__name__] = schema
    return found
