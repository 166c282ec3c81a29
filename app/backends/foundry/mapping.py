"""Pure translation between the neutral turn and Foundry v2 Responses (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.core import failures
from app.core.annotations import parse_response_annotation
from app.core.events import Annotation, ApprovalRequest, FinishReason
from app.core.params import V2_REFUSED
from app.core.turn import FunctionTool, Item, Message, ToolCall, ToolResult, TurnOptions, Usage
from app.errors import BridgeError, InvalidRequestError, NotFoundError, UpstreamError
from app.settings import RouteSettings

# Fields a caller could use to pick another agent than the route's: the route decides, always.
AGENT_SELECTORS = ("agent_reference", "agent", "assistant_id", "model")
_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def previous_response_gone(exc: BridgeError) -> bool:
    """Whether Azure refused a request because its `previous_response_id` is unknown (expired, deleted)."""
    if not isinstance(exc, NotFoundError | InvalidRequestError):
        return False
    text = f"{exc.code} {exc.message}".lower()
    return exc.param == "previous_response_id" or "previous_response" in text or "previous response" in text


def previous_response_not_found(response_id: object) -> NotFoundError:
    """The one error for an unknown `previous_response_id`, whichever backend found it unknown."""
    return NotFoundError(
        f"Previous response with id '{response_id}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


def agent_reference(route: RouteSettings) -> dict[str, Any]:
    """The route's agent as the body's `agent_reference` (version only when configured)."""
    if route.agent is None:
        raise UpstreamError(f"The route at {route.endpoint} has no Foundry v2 agent configured.")
    reference: dict[str, Any] = {"type": "agent_reference", "name": route.agent.name}
    if route.agent.version:
        reference["version"] = route.agent.version
    return reference


def input_items(items: Iterable[Item]) -> list[dict[str, Any]]:
    """Neutral items as Responses input: messages, the assistant's function calls, tool results."""
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Message):
            # An assistant message that only carried tool calls has no text worth an item of its own.
            if item.parts:
                kind = "output_text" if item.role == "assistant" else "input_text"
                content: str | list[dict[str, Any]] = [{"type": kind, "text": part} for part in item.parts]
                out.append({"type": "message", "role": item.role, "content": content})
            elif item.text or not item.tool_calls:
                out.append({"type": "message", "role": item.role, "content": item.text})
            out.extend(
                {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
                for c in item.tool_calls
            )
        elif isinstance(item, ToolResult) and item.approve is not None:
            out.append({"type": "mcp_approval_response", "approval_request_id": item.call_id, "approve": item.approve})
        else:
            out.append({"type": "function_call_output", "call_id": item.call_id, "output": item.output})
    return out


def tool_param(tool: FunctionTool) -> dict[str, Any]:
    """A function tool in the Responses (flat) shape."""
    param: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description is not None:
        param["description"] = tool.description
    param["parameters"] = tool.parameters if tool.parameters is not None else dict(_EMPTY_PARAMETERS)
    # Responses default to strict schemas; chat tools are not strict unless they say so.
    param["strict"] = bool(tool.strict)
    return param


def text_param(response_format: dict[str, Any]) -> dict[str, Any]:
    """Chat's `response_format` as Responses' `text.format` (json_schema flattened)."""
    if response_format.get("type") == "json_schema" and isinstance(response_format.get("json_schema"), dict):
        return {"format": {"type": "json_schema", **response_format["json_schema"]}}
    return {"format": dict(response_format)}


def option_params(options: TurnOptions) -> dict[str, Any]:
    """The body keys the turn's options set (absent options are left to the agent's definition)."""
    body: dict[str, Any] = {}
    # temperature, top_p, tool_choice and parallel_tool_calls are never sent: Foundry v2 refuses them
    # next to agent_reference (`app.core.params.V2_REFUSED`); the route's warning tells the client.
    if options.max_output_tokens is not None:
        body["max_output_tokens"] = options.max_output_tokens
    if options.response_format is not None:
        body["text"] = text_param(options.response_format)
    return body


def lifecycle_params(route: RouteSettings) -> dict[str, Any]:
    """How the route's responses are created: always streamed and stored; in background mode when the
    route says so, because only a background response can be cancelled (azure-as-it-is.md 1)."""
    if route.backend == "endpoint":
        # An agent's endpoint is stateless: nothing to keep upstream, so nothing it could cancel either.
        return {"stream": True, "store": False}
    params: dict[str, Any] = {"stream": True, "store": True}
    if route.background:
        params["background"] = True
    return params


def sanitize_passthrough(body: dict[str, Any], route: RouteSettings) -> dict[str, Any]:
    """The client's Responses body, minus every way to pick an agent and what Foundry v2 refuses next
    to one (`V2_REFUSED`), plus the route's agent."""
    clean = {k: v for k, v in body.items() if k not in AGENT_SELECTORS and k not in V2_REFUSED}
    extra = clean.get("extra_body")
    if isinstance(extra, dict):
        # A raw client may send the SDK's `extra_body` literally: nothing in it picks the agent either.
        clean["extra_body"] = {k: v for k, v in extra.items() if k not in AGENT_SELECTORS}
    clean["agent_reference"] = agent_reference(route)
    return clean


def usage_of(response: dict[str, Any]) -> Usage | None:
    """The Response's own usage (`input_tokens` -> prompt, `output_tokens` -> completion)."""
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    return Usage(prompt, completion, int(usage.get("total_tokens") or prompt + completion))


def output_item_ids(response: dict[str, Any]) -> tuple[str, ...]:
    """The ids of a Response's output items (the owner's to reference later)."""
    output = response.get("output")
    if not isinstance(output, list):
        return ()
    return tuple(i["id"] for i in output if isinstance(i, dict) and isinstance(i.get("id"), str))


def function_call(item: dict[str, Any]) -> ToolCall:
    """A `function_call` output item as a neutral tool call (its id is the item's `call_id`)."""
    return ToolCall(id=str(item["call_id"]), name=str(item["name"]), arguments=str(item.get("arguments") or ""))


def function_calls(response: dict[str, Any]) -> tuple[ToolCall, ...]:
    """The function calls among a Response's output items, in order."""
    return tuple(
        function_call(item)
        for item in response.get("output") or []
        if isinstance(item, dict) and item.get("type") == "function_call"
    )


def approval_request(item: dict[str, Any]) -> ApprovalRequest:
    """An `mcp_approval_request` output item as a neutral approval request."""
    return ApprovalRequest(
        id=str(item["id"]),
        server_label=str(item.get("server_label") or ""),
        name=str(item.get("name") or ""),
        arguments=str(item.get("arguments") or ""),
    )


def approval_requests(response: dict[str, Any]) -> tuple[ApprovalRequest, ...]:
    return tuple(
        approval_request(item)
        for item in response.get("output") or []
        if isinstance(item, dict) and item.get("type") == "mcp_approval_request"
    )


def annotation_of(raw: Any) -> Annotation | None:
    """A Responses `output_text` annotation as a neutral one."""
    return parse_response_annotation(raw)


def outcome(response: dict[str, Any]) -> FinishReason:
    """How a finished Response ends the turn, or the error the client should see."""
    status = response.get("status")
    if status == "failed":
        error = response.get("error") or {}
        if error.get("code") == failures.CONTENT_FILTER:
            return "content_filter"
        inner = error.get("innererror")
        raise failures.run_failure(
            error.get("code"),
            error.get("message"),
            what="response",
            innererror=inner if isinstance(inner, dict) else None,
        )
    if status == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "content_filter" if reason == failures.CONTENT_FILTER else "length"
    if status == "completed":
        return "tool_calls" if function_calls(response) or approval_requests(response) else "stop"
    if status == "cancelled":
        raise UpstreamError("The agent's response was cancelled upstream.", code="run_cancelled")
    raise UpstreamError(f"The agent's response ended in an unexpected status {status!r}.")
