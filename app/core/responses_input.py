"""Responses input items as neutral items: messages, function calls and their outputs, MCP approval
requests and answers, and `item_reference`s resolved to the items they name.

System and developer messages and `instructions` become the turn's instructions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from app.core import approvals
from app.core.events import ApprovalRequest
from app.core.turn import Item, Message, ToolCall, ToolResult, join_parts, text_message
from app.errors import InvalidRequestError
from app.wire.responses import ResponsesRequest

_TEXT_PARTS = ("input_text", "output_text", "text")


def _content_text(content: Any, where: str) -> str:
    return join_parts(_content_parts(content, where))


def _content_parts(content: Any, where: str) -> tuple[str, ...]:
    if content is None:
        return ()
    if isinstance(content, str):
        return (content,) if content else ()
    if not isinstance(content, list):
        raise InvalidRequestError("Content must be a string or a list of parts.", param=where)
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise InvalidRequestError(
                f"Content parts of type '{kind}' are not supported on Assistants routes; send text.",
                param=f"{where}[{j}]",
                code="unsupported_content",
            )
        texts.append(part["text"])
    return tuple(texts)


class ParsedInput(NamedTuple):
    items: tuple[Item, ...]
    instructions: str | None
    held: int
    """How many leading items end at the last `item_reference`: earlier ones of the conversation, which
    the upstream thread already holds (0 without references)."""


def item_references(req: ResponsesRequest) -> list[tuple[int, str]]:
    """The `item_reference` inputs as (input index, item id); a reference without an id is a 400."""
    if not isinstance(req.input, list):
        return []
    return [
        (i, _required_str(raw, "id", f"input[{i}]"))
        for i, raw in enumerate(req.input)
        if raw.get("type") == "item_reference"
    ]


def parse_input(req: ResponsesRequest, referenced: Mapping[int, dict[str, Any]] | None = None) -> ParsedInput:
    """Input items as neutral items; system/developer messages and `instructions` become instructions.

    `referenced` holds, by input index, the item each `item_reference` names (the service looks
    them up); a reference it does not hold is unknown."""
    instructions: list[str] = [req.instructions] if req.instructions else []
    if req.input is None or req.input == "" or req.input == []:
        raise InvalidRequestError("input must not be empty.", param="input")
    if isinstance(req.input, str):
        return ParsedInput((Message("user", req.input),), "\n\n".join(instructions) or None, 0)
    items: list[Item] = []
    held = 0
    for i, raw in enumerate(req.input):
        where = f"input[{i}]"
        if raw.get("type") == "item_reference":
            found = (referenced or {}).get(i)
            if found is None:
                item_id = _required_str(raw, "id", where)
                raise InvalidRequestError(f"Item with id '{item_id}' not found.", param=f"{where}.id")
            _parse_item(found, where, items, instructions)
            held = len(items)
        else:
            _parse_item(raw, where, items, instructions)
    if not items:
        raise InvalidRequestError("input needs at least one user message or function_call_output.", param="input")
    return ParsedInput(tuple(items), "\n\n".join(instructions) or None, held)


def _parse_item(raw: dict[str, Any], where: str, items: list[Item], instructions: list[str]) -> None:
    kind = raw.get("type", "message")
    if kind == "message":
        role = raw.get("role")
        if role in ("system", "developer"):
            instructions.append(_content_text(raw.get("content"), f"{where}.content"))
        elif role in ("user", "assistant"):
            items.append(text_message(role, _content_parts(raw.get("content"), f"{where}.content")))
        else:
            raise InvalidRequestError(f"Invalid role {role!r}.", param=f"{where}.role")
    elif kind == "function_call":
        call = ToolCall(
            id=_required_str(raw, "call_id", where),
            name=_required_str(raw, "name", where),
            arguments=str(raw.get("arguments") or ""),
        )
        last = items[-1] if items else None
        if isinstance(last, Message) and last.role == "assistant":
            items[-1] = Message("assistant", last.text, (*last.tool_calls, call), last.parts)
        else:
            items.append(Message("assistant", "", (call,)))
    elif kind == "mcp_approval_request":
        items.append(_approval_request_input(raw, where, items))
    elif kind == "mcp_approval_response":
        approve = raw.get("approve")
        if not isinstance(approve, bool):
            raise InvalidRequestError(f"Missing required parameter: '{where}.approve'.", param=f"{where}.approve")
        request_id = _required_str(raw, "approval_request_id", where)
        items.append(ToolResult(call_id=request_id, output=json.dumps({"approve": approve}), approve=approve))
    elif kind == "function_call_output":
        output = raw.get("output")
        text = output if isinstance(output, str) else _content_text(output, f"{where}.output")
        items.append(ToolResult(call_id=_required_str(raw, "call_id", where), output=text))
    else:
        raise InvalidRequestError(
            f"Input items of type '{kind}' are not supported on Assistants routes.",
            param=f"{where}.type",
            code="unsupported_input",
        )


def _approval_request_input(raw: dict[str, Any], where: str, items: list[Item]) -> Message:
    """An echoed `mcp_approval_request` is the agent's call of the reserved approval tool."""
    request = ApprovalRequest(
        id=_required_str(raw, "id", where),
        server_label=str(raw.get("server_label") or ""),
        name=str(raw.get("name") or ""),
        arguments=str(raw.get("arguments") or ""),
    )
    call = approvals.as_tool_call(request)
    last = items[-1] if items else None
    if isinstance(last, Message) and last.role == "assistant":
        items.pop()
        return Message("assistant", last.text, (*last.tool_calls, call))
    return Message("assistant", "", (call,))


def _required_str(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"Missing required parameter: '{where}.{key}'.", param=f"{where}.{key}")
    return value
