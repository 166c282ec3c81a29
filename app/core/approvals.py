"""MCP approvals on chat: the reserved function tool `mcp_approval` that carries them, and the route's policy.

A chat client has no item for "approve this MCP call", so on a route set to `mcp_approval: client`
an approval request reaches it as a call of the function `mcp_approval` with arguments
`{"server_label", "name", "arguments"}`; the client answers with a tool message whose content is
`{"approve": true}` (or false). `approve` and `deny` answer for the client; a route with no setting
refuses the turn on chat (and cancels the waiting run) rather than approve anything silently.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from app.core.events import ApprovalRequest
from app.core.turn import ApprovalMode, FunctionTool, Item, Message, ToolCall, ToolResult
from app.errors import InvalidRequestError

APPROVAL_TOOL = "mcp_approval"

DECLARATION = FunctionTool(
    name=APPROVAL_TOOL,
    description="Approve or deny a call of a tool on an MCP server before the agent makes it.",
    parameters={
        "type": "object",
        "properties": {
            "server_label": {"type": "string", "description": "The MCP server the tool belongs to."},
            "name": {"type": "string", "description": "The tool the agent wants to call."},
            "arguments": {"type": "string", "description": "The call's arguments, a JSON string."},
        },
        "required": ["server_label", "name", "arguments"],
    },
)
"""What a client declares in `tools` (it is never sent to the agent)."""


def mode_for(setting: str | None, *, dialect: str) -> ApprovalMode:
    """The route's setting; unset, Responses clients answer natively and chat clients are refused."""
    if setting in ("client", "approve", "deny"):
        return setting  # type: ignore[return-value]
    return "client" if dialect == "responses" else "refuse"


def as_tool_call(request: ApprovalRequest) -> ToolCall:
    arguments = json.dumps({"server_label": request.server_label, "name": request.name, "arguments": request.arguments})
    return ToolCall(id=request.id, name=APPROVAL_TOOL, arguments=arguments)


def without_reserved(tools: tuple[FunctionTool, ...] | None) -> tuple[FunctionTool, ...] | None:
    """The request's tools minus `mcp_approval`; only it declared keeps the agent's own tools."""
    if tools is None:
        return None
    kept = tuple(t for t in tools if t.name != APPROVAL_TOOL)
    return kept if kept or len(kept) == len(tools) else None


def parse_answer(output: str, where: str) -> bool:
    """`{"approve": true}` (also a bare `true`/`false`, or "approve"/"deny") -> the decision."""
    text = output.strip()
    try:
        value: Any = json.loads(text) if text else None
    except ValueError:
        value = text.lower()
    if isinstance(value, dict):
        value = value.get("approve")
    if value in ("approve", "approved", "yes"):
        value = True
    elif value in ("deny", "denied", "no"):
        value = False
    if not isinstance(value, bool):
        raise InvalidRequestError(
            f'The answer to an {APPROVAL_TOOL} call must be {{"approve": true}} or {{"approve": false}}, '
            f"got {output!r}.",
            param=where,
            code="invalid_approval",
        )
    return value


def resolve(items: tuple[Item, ...]) -> tuple[Item, ...]:
    """Mark the tool results that answer `mcp_approval` calls as approval answers."""
    reserved: set[str] = set()
    out: list[Item] = []
    for i, item in enumerate(items):
        if isinstance(item, Message):
            reserved |= {c.id for c in item.tool_calls if c.name == APPROVAL_TOOL}
        elif item.call_id in reserved and item.approve is None:
            item = replace(item, approve=parse_answer(item.output, f"messages[{i}].content"))
        out.append(item)
    return tuple(out)


def answers_of(results: tuple[ToolResult, ...]) -> dict[str, bool] | None:
    """The approvals among a tool round's results (None when it answers functions only)."""
    decided = {r.call_id: r.approve for r in results if r.approve is not None}
    if not decided:
        return None
    if len(decided) != len(results):
        raise InvalidRequestError(
            "A request answers approval requests and function calls together; they belong to different "
            "steps of the agent, answer the pending ones only.",
            param="messages",
            code="mixed_tool_answers",
        )
    return decided


def refused(route: str, requests: tuple[ApprovalRequest, ...]) -> InvalidRequestError:
    names = ", ".join(f"{r.name} on {r.server_label}" for r in requests)
    return InvalidRequestError(
        f"The agent asks to approve MCP tool calls ({names}), and route '{route}' does not say who approves "
        f"them: set routes.{route}.mcp_approval to client (the client answers calls of the '{APPROVAL_TOOL}' "
        "function), approve or deny. The run was cancelled.",
        param="model",
        code="mcp_approval_not_configured",
    )


def response_item(request: ApprovalRequest) -> dict[str, Any]:
    """The Responses output item of an approval request."""
    return {
        "type": "mcp_approval_request",
        "id": request.id,
        "server_label": request.server_label,
        "name": request.name,
        "arguments": request.arguments,
    }
