"""Validate emitted JSON against the schemas of OpenAI's OpenAPI document, vendored in tests/schemas."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from app.core.chat_codec import render_completion

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = Path(os.environ.get("AGENT_BRIDGE_OPENAPI", ROOT / "tests" / "schemas" / "openai-schemas.json"))
_URI = "urn:openai-openapi"


def _denullable(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` is ignored by JSON Schema validators; make it a real null type."""
    if isinstance(node, list):
        return [_denullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _denullable(v) for k, v in node.items()}
    if node.pop("nullable", False) is True:
        if "type" in node:
            t = node["type"]
            node["type"] = [*t, "null"] if isinstance(t, list) else [t, "null"]
            if "enum" in node and None not in node["enum"]:
                node["enum"] = [*node["enum"], None]
        elif "enum" in node:
            node["enum"] = [*node["enum"], None]
        else:
            composite = {k: node.pop(k) for k in ("$ref", "oneOf", "anyOf", "allOf") if k in node}
            if composite:
                node["anyOf"] = [composite, {"type": "null"}]
    return node


@functools.cache
def _registry() -> Registry:
    if not SPEC_PATH.exists():
        raise FileNotFoundError(
            f"OpenAI schemas not found at {SPEC_PATH}: regenerate them with "
            "scripts/vendor_openai_schemas.py (see tests/schemas/README.md)"
        )
    document = _denullable(json.loads(SPEC_PATH.read_text()))
    return Registry().with_resource(_URI, Resource(contents=document, specification=DRAFT202012))


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"{_URI}#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def validate(instance: Any, schema_name: str) -> None:
    """Raise `jsonschema.ValidationError` unless `instance` matches `#/components/schemas/<schema_name>`."""
    errors = sorted(_validator(schema_name).iter_errors(instance), key=lambda e: e.path)
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise AssertionError(f"{schema_name} invalid at {list(best.absolute_path)}: {best.message}\n{instance!r}")


def has_schema(name: str) -> bool:
    doc = _registry().contents(_URI)
    return name in doc["components"]["schemas"]


def validated_completion(**fields: Any) -> dict[str, Any]:
    """`chat_codec.render_completion` (id `chatcmpl-1`, model `m`, created 1 unless given), checked against
    `CreateChatCompletionResponse`."""
    body = render_completion(**{"completion_id": "chatcmpl-1", "model": "m", "created": 1, **fields})
    validate(body, "CreateChatCompletionResponse")
    return body
