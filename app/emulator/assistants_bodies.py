"""Strict request bodies of the Assistants surfaces: the fields the SDKs send, checked like Azure does."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from app.emulator.assistants_state import text_part
from app.emulator.http import EmulatorHTTPError

# Every field openai-python 3.x (`AzureOpenAI().beta...`) and azure-ai-agents 1.1.0 put in these bodies.
ASSISTANT_FIELDS = frozenset(
    {
        "model",
        "name",
        "description",
        "instructions",
        "tools",
        "tool_resources",
        "metadata",
        "temperature",
        "top_p",
        "response_format",
        "reasoning_effort",
    }
)
THREAD_FIELDS = frozenset({"messages", "tool_resources", "metadata"})
THREAD_MODIFY_FIELDS = frozenset({"tool_resources", "metadata"})
MESSAGE_FIELDS = frozenset({"role", "content", "attachments", "metadata"})
METADATA_ONLY = frozenset({"metadata"})
RUN_FIELDS = frozenset(
    {
        "assistant_id",
        "model",
        "instructions",
        "additional_instructions",
        "additional_messages",
        "tools",
        "tool_resources",
        "stream",
        "temperature",
        "top_p",
        "max_prompt_tokens",
        "max_completion_tokens",
        "truncation_strategy",
        "tool_choice",
        "response_format",
        "parallel_tool_calls",
        "metadata",
        "reasoning_effort",
    }
)
THREAD_RUN_FIELDS = (RUN_FIELDS - {"additional_instructions", "additional_messages"}) | {"thread"}
SUBMIT_FIELDS = frozenset({"tool_outputs", "tool_approvals", "stream"})
"""`tool_approvals` (api-version 2025-05-15-preview and later) answers a `submit_tool_approval` action
(Azure/azure-rest-api-specs `specification/ai/Azure.AI.Agents/runs/routes.tsp` `submitToolOutputsToRun`)."""

TOOL_TYPES = frozenset(
    {
        # OpenAI / Azure OpenAI
        "function",
        "code_interpreter",
        "file_search",
        # Foundry classic (azure-ai-agents)
        "bing_grounding",
        "bing_custom_search",
        "azure_ai_search",
        "azure_function",
        "openapi",
        "connected_agent",
        "fabric_dataagent",
        "sharepoint_grounding",
        "deep_research",
        "mcp",
        "browser_automation",
        "computer_use_preview",
    }
)
_FUNCTION_FIELDS = frozenset({"name", "description", "parameters", "strict"})


def invalid(message: str, param: str, code: str = "invalid_value") -> EmulatorHTTPError:
    return EmulatorHTTPError(400, message, param=param, code=code)


def _type_error(param: str, expected: str, value: Any) -> EmulatorHTTPError:
    got = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "an array",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    message = f"Invalid type for '{param}': expected {expected}, but got {got} instead."
    return invalid(message, param, "invalid_type")


def check_keys(obj: dict[str, Any], allowed: frozenset[str] | set[str], where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise EmulatorHTTPError(
                400, f"Unknown parameter: '{where}.{key}'.", param=f"{where}.{key}", code="unknown_parameter"
            )


def _objects(value: Any, param: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The objects of the array `value`, each with its place (`param[i]`); checked one by one as they are
    taken, so the first bad entry is the one refused."""
    if not isinstance(value, list):
        raise _type_error(param, "an array", value)
    for index, item in enumerate(value):
        where = f"{param}[{index}]"
        if not isinstance(item, dict):
            raise _type_error(where, "an object", item)
        yield where, item


def required(value: Any, param: str) -> Any:
    if value is None:
        raise invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    return value


def string(value: Any, param: str, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _type_error(param, "a string", value)
    return value


def boolean(value: Any, param: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise _type_error(param, "a boolean", value)
    return value


def number(value: Any, param: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(param, "a decimal", value)
    if not low <= value <= high:
        raise invalid(
            f"Invalid '{param}': decimal above maximum value. Expected a value <= {high:g}, but got {value} instead."
            if value > high
            else f"Invalid '{param}': decimal below minimum value. Expected a value >= {low:g}, "
            f"but got {value} instead.",
            param,
        )
    return float(value)


def integer(value: Any, param: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(param, "an integer", value)
    if value < 1:
        raise invalid(
            f"Invalid '{param}': integer below minimum value. Expected a value >= 1, but got {value} instead.", param
        )
    return value


def metadata(value: Any, param: str = "metadata") -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _type_error(param, "an object", value)
    if len(value) > 16:
        raise invalid(
            f"Invalid '{param}': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(value)} properties instead.",
            param,
        )
    for key, item in value.items():
        if len(key) > 64:
            raise invalid(f"Invalid '{param}': key '{key[:64]}...' is longer than 64 characters.", param)
        if not isinstance(item, str):
            raise _type_error(f"{param}.{key}", "a string", item)
        if len(item) > 512:
            raise invalid(
                f"Invalid '{param}.{key}': string too long. Expected a string with maximum "
                f"length 512, but got a string with length {len(item)} instead.",
                f"{param}.{key}",
            )
    return dict(value)


def tool_resources(value: Any, param: str = "tool_resources") -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise _type_error(param, "an object", value)
    return copy.deepcopy(value) if value is not None else None


def tools(value: Any, param: str = "tools") -> list[dict[str, Any]] | None:
    """Validate a tools array; function tools get `strict: false` when absent, as Azure echoes them."""
    if value is None:
        return None
    out = []
    for where, tool in _objects(value, param):
        kind = tool.get("type")
        if kind not in TOOL_TYPES:
            raise invalid(
                f"Invalid value: '{kind}'. Supported values are: 'code_interpreter', 'function', and 'file_search'.",
                f"{where}.type",
            )
        tool = copy.deepcopy(tool)
        if kind == "function":
            check_keys(tool, {"type", "function"}, where)
            function = required(tool.get("function"), f"{where}.function")
            if not isinstance(function, dict):
                raise _type_error(f"{where}.function", "an object", function)
            check_keys(function, _FUNCTION_FIELDS, f"{where}.function")
            string(required(function.get("name"), f"{where}.function.name"), f"{where}.function.name")
            if function.get("parameters") is not None and not isinstance(function["parameters"], dict):
                raise _type_error(f"{where}.function.parameters", "an object", function["parameters"])
            function.setdefault("strict", False)
        out.append(tool)
    return out


def function_names(tool_list: list[dict[str, Any]]) -> set[str]:
    return {t["function"]["name"] for t in tool_list if t.get("type") == "function"}


def response_format(value: Any, param: str = "response_format") -> Any:
    if value is None or value == "auto":
        return value
    if isinstance(value, dict) and value.get("type") in ("text", "json_object", "json_schema"):
        return copy.deepcopy(value)
    raise invalid(
        f"Invalid value for '{param}': expected 'auto' or an object with type 'text', 'json_object' or 'json_schema'.",
        param,
    )


def tool_choice(value: Any) -> Any:
    if value is None or value in ("none", "auto", "required"):
        return value
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        if value["type"] == "function":
            fn = value.get("function")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise invalid(
                    "Missing required parameter: 'tool_choice.function.name'.",
                    "tool_choice.function.name",
                    "missing_required_parameter",
                )
        return copy.deepcopy(value)
    raise invalid(f"Invalid value: '{value}'. Supported values are: 'none', 'auto', and 'required'.", "tool_choice")


def truncation_strategy(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _type_error("truncation_strategy", "an object", value)
    check_keys(value, {"type", "last_messages"}, "truncation_strategy")
    if value.get("type") not in ("auto", "last_messages"):
        kind = value.get("type")
        raise invalid(
            f"Invalid value: '{kind}'. Supported values are: 'auto' and 'last_messages'.", "truncation_strategy.type"
        )
    integer(value.get("last_messages"), "truncation_strategy.last_messages")
    return {"type": value["type"], "last_messages": value.get("last_messages")}


def content(value: Any, param: str) -> list[dict[str, Any]]:
    """A message's `content`: a string, or an array of text / image_file / image_url parts."""
    if isinstance(value, str):
        return [text_part(value)]
    if not isinstance(value, list):
        raise _type_error(param, "one of a string or array of objects", value)
    if not value:
        raise invalid(
            f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param,
            "empty_array",
        )
    parts = []
    for where, part in _objects(value, param):
        kind = part.get("type")
        if kind == "text":
            check_keys(part, {"type", "text"}, where)
            text = string(required(part.get("text"), f"{where}.text"), f"{where}.text")
            parts.append(text_part(text or ""))
        elif kind in ("image_file", "image_url"):
            check_keys(part, {"type", kind}, where)
            inner = required(part.get(kind), f"{where}.{kind}")
            if not isinstance(inner, dict):
                raise _type_error(f"{where}.{kind}", "an object", inner)
            key = "file_id" if kind == "image_file" else "url"
            check_keys(inner, {key, "detail"}, f"{where}.{kind}")
            string(required(inner.get(key), f"{where}.{kind}.{key}"), f"{where}.{kind}.{key}")
            parts.append({"type": kind, kind: {"detail": "auto", **inner}})
        else:
            raise invalid(
                f"Invalid value: '{kind}'. Supported values are: 'image_file', 'image_url', and 'text'.",
                f"{where}.type",
            )
    return parts


def message(body: dict[str, Any], where: str) -> dict[str, Any]:
    """A CreateMessage (top level, in `thread.messages[]` or in `additional_messages[]`), normalized."""
    role = required(body.get("role"), f"{where}role")
    if role not in ("user", "assistant"):
        raise invalid(f"Invalid value: '{role}'. Supported values are: 'user' and 'assistant'.", f"{where}role")
    attachments = body.get("attachments")
    if attachments is not None and not isinstance(attachments, list):
        raise _type_error(f"{where}attachments", "an array", attachments)
    return {
        "role": role,
        "content": content(required(body.get("content"), f"{where}content"), f"{where}content"),
        "attachments": copy.deepcopy(attachments) if attachments else [],
        "metadata": metadata(body.get("metadata"), f"{where}metadata") or {},
    }


def message_list(value: Any, param: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    out = []
    for where, item in _objects(value, param):
        check_keys(item, MESSAGE_FIELDS, where)
        out.append(message(item, f"{where}."))
    return out


def _call_id(item: dict[str, Any], where: str) -> str:
    return string(required(item.get("tool_call_id"), f"{where}.tool_call_id"), f"{where}.tool_call_id") or ""


def tool_outputs(value: Any) -> list[dict[str, str]]:
    required(value, "tool_outputs")
    out = []
    for where, item in _objects(value, "tool_outputs"):
        check_keys(item, {"tool_call_id", "output"}, where)
        call_id = _call_id(item, where)
        output = string(item.get("output"), f"{where}.output")
        out.append({"tool_call_id": call_id, "output": output or ""})
    return out


def tool_approvals(value: Any) -> list[dict[str, Any]]:
    """`tool_approvals: [{tool_call_id, approve, headers?}]` (azure-ai-agents `ToolApproval`)."""
    out = []
    for where, item in _objects(value, "tool_approvals"):
        check_keys(item, {"tool_call_id", "approve", "headers"}, where)
        call_id = _call_id(item, where)
        approve = boolean(required(item.get("approve"), f"{where}.approve"), f"{where}.approve")
        headers = item.get("headers")
        if headers is not None and not (
            isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())
        ):
            raise _type_error(f"{where}.headers", "an object of strings", headers)
        out.append({"tool_call_id": call_id, "approve": bool(approve)})
    return out
