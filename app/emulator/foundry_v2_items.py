"""Responses input items: strict validation, the stored item shapes, and their `script.Item` view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.emulator.foundry_v2_tools import approval_response
from app.emulator.http import EmulatorHTTPError, new_id
from app.emulator.script import Item

MESSAGE_ROLES = ("user", "assistant", "system", "developer")
ITEM_TYPES = ("message", "function_call", "function_call_output", "mcp_approval_response", "item_reference")
_TEXT_PARTS = ("input_text", "output_text", "text")
_OTHER_PARTS = ("input_image", "input_file", "refusal")

ItemLookup = Callable[[str], "dict[str, Any] | None"]


def _bad(message: str, param: str, code: str = "invalid_value") -> EmulatorHTTPError:
    return EmulatorHTTPError(400, message, param=param, code=code)


def _require_str(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if value is None:
        raise _bad(f"Missing required parameter: '{where}.{key}'.", f"{where}.{key}", "missing_required_parameter")
    if not isinstance(value, str):
        raise _bad(f"Invalid type for '{where}.{key}': expected a string.", f"{where}.{key}", "invalid_type")
    return value


def _content_parts(role: str, content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        if role == "assistant":
            return [{"type": "output_text", "text": content, "annotations": [], "logprobs": []}]
        return [{"type": "input_text", "text": content}]
    if not isinstance(content, list):
        raise _bad(
            f"Invalid type for '{where}.content': expected a string or an array.",
            f"{where}.content",
            "invalid_type",
        )
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        here = f"{where}.content[{index}]"
        if not isinstance(part, dict):
            raise _bad(f"Invalid type for '{here}': expected an object.", here, "invalid_type")
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            text = _require_str(part, "text", here)
            if kind == "output_text":
                parts.append({"annotations": [], "logprobs": [], **part, "text": text})
            else:
                parts.append(dict(part))
        elif kind in _OTHER_PARTS:
            parts.append(dict(part))
        else:
            allowed = ", ".join(f"'{k}'" for k in (*_TEXT_PARTS, *_OTHER_PARTS))
            raise _bad(f"Invalid value: '{kind}'. Supported values are: {allowed}.", f"{here}.type")
    return parts


def _output_value(output: Any, where: str) -> Any:
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in output):
        return output
    raise _bad(
        f"Invalid type for '{where}.output': expected a string or an array of content parts.",
        f"{where}.output",
        "invalid_type",
    )


def normalize_item(raw: Any, where: str, lookup: ItemLookup) -> dict[str, Any]:
    """One input item in its stored form (with an id and a status), or a 400 naming the bad field."""
    if not isinstance(raw, dict):
        raise _bad(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
    kind = raw.get("type", "message" if "role" in raw else None)
    if kind not in ITEM_TYPES:
        allowed = ", ".join(f"'{k}'" for k in ITEM_TYPES)
        raise _bad(f"Invalid value: '{kind}'. Supported values are: {allowed}.", f"{where}.type")
    if kind == "item_reference":
        ref = _require_str(raw, "id", where)
        found = lookup(ref)
        if found is None:
            raise _bad(f"Item with id '{ref}' not found.", f"{where}.id")
        return dict(found)
    item_id = raw.get("id")
    if item_id is not None and not isinstance(item_id, str):
        raise _bad(f"Invalid type for '{where}.id': expected a string.", f"{where}.id", "invalid_type")
    if kind == "message":
        role = _require_str(raw, "role", where)
        if role not in MESSAGE_ROLES:
            allowed = ", ".join(f"'{r}'" for r in MESSAGE_ROLES)
            raise _bad(f"Invalid value: '{role}'. Supported values are: {allowed}.", f"{where}.role")
        if "content" not in raw:
            raise _bad(
                f"Missing required parameter: '{where}.content'.",
                f"{where}.content",
                "missing_required_parameter",
            )
        return {
            "type": "message",
            "id": item_id or new_id("msg"),
            "status": "completed",
            "role": role,
            "content": _content_parts(role, raw["content"], where),
        }
    if kind == "mcp_approval_response":
        return approval_response(raw, where)
    if kind == "function_call":
        return {
            "type": "function_call",
            "id": item_id or new_id("fc"),
            "call_id": _require_str(raw, "call_id", where),
            "name": _require_str(raw, "name", where),
            "arguments": _require_str(raw, "arguments", where),
            "status": "completed",
        }
    return {
        "type": "function_call_output",
        "id": item_id or new_id("fc"),
        "call_id": _require_str(raw, "call_id", where),
        "output": _output_value(raw.get("output"), where),
        "status": "completed",
    }


def normalize_input(value: Any, lookup: ItemLookup, param: str = "input") -> list[dict[str, Any]]:
    """`input` (a string or a list of items) as stored items."""
    if value is None:
        return []
    if isinstance(value, str):
        return [normalize_item({"role": "user", "content": value}, param, lookup)]
    if not isinstance(value, list):
        raise _bad(f"Invalid type for '{param}': expected a string or an array of items.", param, "invalid_type")
    return [normalize_item(raw, f"{param}[{i}]", lookup) for i, raw in enumerate(value)]


def check_call_ids(context: list[dict[str, Any]], new_items: list[dict[str, Any]]) -> None:
    """Every `function_call_output` must answer a `function_call` of the context (OpenAI's 400 otherwise)."""
    known = {i["call_id"] for i in [*context, *new_items] if i.get("type") == "function_call"}
    for item in new_items:
        if item.get("type") == "function_call_output" and item["call_id"] not in known:
            raise EmulatorHTTPError(
                400,
                f"No tool call found for function call output with call_id {item['call_id']}.",
                param="input",
                code=None,
            )


def item_text(item: dict[str, Any]) -> str:
    """The text of a message or of a function call output."""
    content = item.get("content") if item.get("type") == "message" else item.get("output")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def script_items(items: list[dict[str, Any]]) -> list[Item]:
    """The conversation as the deterministic model sees it (system/developer messages are not turns)."""
    out: list[Item] = []
    for item in items:
        kind = item.get("type")
        if kind == "message" and item.get("role") in ("user", "assistant"):
            out.append(Item(kind=item["role"], text=item_text(item)))
        elif kind == "function_call":
            out.append(Item(kind="tool_call", name=item["name"], arguments=item["arguments"], call_id=item["call_id"]))
        elif kind == "function_call_output":
            out.append(Item(kind="tool_output", text=item_text(item), call_id=item["call_id"]))
        elif kind == "mcp_approval_request":
            out.append(Item(kind="mcp_request", name=item["name"], arguments=item["arguments"], call_id=item["id"]))
        elif kind == "mcp_approval_response":
            verdict = "true" if item["approve"] else "false"
            out.append(Item(kind="mcp_approval", text=verdict, call_id=item["approval_request_id"]))
    return out
