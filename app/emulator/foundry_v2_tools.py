"""Output items of the hosted tools on Foundry v2 (MCP), their input counterparts, and their stream events.

Shapes follow openai-openapi (`MCPListTools`, `MCPApprovalRequest`, `MCPApprovalResponse`, `MCPToolCall`,
and the `response.mcp_list_tools.*`, `response.mcp_call.*`, `response.mcp_call_arguments.*` events), which
Foundry v2 serves for an agent version whose definition has an `mcp` tool (azure-ai-projects
`MCPTool`: `server_label`, `server_url`, `require_approval`; docs/reference/azure-as-it-is.md §2).

- The server's tools are listed once per conversation: an `mcp_list_tools` item leads the first output
  that uses the server, and is not repeated while one is in the context.
- `require_approval: "always"` (the default): the response *completes* with one `mcp_approval_request`
  per call (the Responses API has no `requires_action` state); the client answers with
  `mcp_approval_response` input items (`approval_request_id`, `approve`) next to `previous_response_id`
  or the same `conversation`. An approved call becomes an `mcp_call` item with the server's `output`
  and its `approval_request_id`; a denied one is not made (no item), and the answer says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from app.emulator.http import EmulatorHTTPError, new_id
from app.emulator.script import McpCall, McpServer, Plan


def mcp_server(tools: list[dict[str, Any]]) -> McpServer | None:
    """The agent version's first `mcp` tool; `require_approval` other than "never" asks (the default)."""
    tool = next((t for t in tools if isinstance(t, dict) and t.get("type") == "mcp"), None)
    if tool is None:
        return None
    approval = tool.get("require_approval")
    return McpServer(str(tool.get("server_label") or ""), "never" if approval == "never" else "always")


def _listed(history: list[dict[str, Any]], label: str) -> bool:
    return any(i.get("type") == "mcp_list_tools" and i.get("server_label") == label for i in history)


def _list_tools(calls: tuple[McpCall, ...]) -> dict[str, Any]:
    names = sorted({c.name for c in calls})
    return {
        "id": new_id("mcpl"),
        "type": "mcp_list_tools",
        "server_label": calls[0].server_label,
        "tools": [
            {"name": n, "description": f"The {n} tool.", "input_schema": {"type": "object"}, "annotations": None}
            for n in names
        ],
        "error": None,
    }


def mcp_items(plan: Plan, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The MCP items that precede the plan's message (or stand alone, waiting for approvals)."""
    if not plan.mcp_calls:
        return []
    items = [] if _listed(history, plan.mcp_calls[0].server_label) else [_list_tools(plan.mcp_calls)]
    for call in plan.mcp_calls:
        base = {"server_label": call.server_label, "name": call.name, "arguments": call.arguments}
        if call.approval == "pending":
            items.append({"id": new_id("mcpr"), "type": "mcp_approval_request", **base})
        elif call.output is not None:
            items.append(
                {
                    "id": new_id("mcp"),
                    "type": "mcp_call",
                    **base,
                    "output": call.output,
                    "error": None,
                    "status": "completed",
                    "approval_request_id": call.request_id or None,
                }
            )
    return items


def approval_response(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """An `mcp_approval_response` input item, stored with an id (openai-openapi `MCPApprovalResponse`)."""
    request_id = raw.get("approval_request_id")
    if not isinstance(request_id, str):
        raise EmulatorHTTPError(
            400,
            f"Missing required parameter: '{where}.approval_request_id'.",
            param=f"{where}.approval_request_id",
            code="missing_required_parameter",
        )
    if not isinstance(raw.get("approve"), bool):
        raise EmulatorHTTPError(
            400,
            f"Invalid type for '{where}.approve': expected a boolean.",
            param=f"{where}.approve",
            code="invalid_type",
        )
    reason = raw.get("reason")
    return {
        "type": "mcp_approval_response",
        "id": raw.get("id") if isinstance(raw.get("id"), str) else new_id("mcpr"),
        "approval_request_id": request_id,
        "approve": raw["approve"],
        "reason": reason if isinstance(reason, str) else None,
    }


def check_approvals(context: list[dict[str, Any]], new_items: list[dict[str, Any]]) -> None:
    """Every `mcp_approval_response` must answer an `mcp_approval_request` of the context. The exact
    refusal is not published; this is the 400 OpenAI gives an output that answers no call, naming it."""
    known = {i["id"] for i in context if i.get("type") == "mcp_approval_request"}
    for item in new_items:
        if item.get("type") == "mcp_approval_response" and item["approval_request_id"] not in known:
            raise EmulatorHTTPError(
                400,
                f"No MCP approval request found with id '{item['approval_request_id']}'.",
                param="input",
                code="invalid_value",
            )


Event = Callable[..., tuple[int, bytes]]


def item_events(event: Event, index: int, item: dict[str, Any]) -> Iterator[tuple[int, bytes]]:
    """The stream events of one MCP item, from `output_item.added` to `output_item.done`."""
    where = {"item_id": item["id"], "output_index": index}
    kind = item["type"]
    if kind == "mcp_call":
        yield event(
            "response.output_item.added",
            output_index=index,
            item={**item, "arguments": "", "output": None, "status": "in_progress"},
        )
        yield event("response.mcp_call.in_progress", **where)
        yield event("response.mcp_call_arguments.delta", **where, delta=item["arguments"])
        yield event("response.mcp_call_arguments.done", **where, arguments=item["arguments"])
        yield event("response.mcp_call.completed", **where)
    elif kind == "mcp_list_tools":
        yield event("response.output_item.added", output_index=index, item={**item, "tools": []})
        yield event("response.mcp_list_tools.in_progress", **where)
        yield event("response.mcp_list_tools.completed", **where)
    else:
        yield event("response.output_item.added", output_index=index, item=item)
    yield event("response.output_item.done", output_index=index, item=item)
