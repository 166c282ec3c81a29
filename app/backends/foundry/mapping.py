"""Pure translation between the neutral turn and Foundry v2 Responses (no I/O)."""

from __future__ import annotations

from typing import Any

from app.core.events import FinishReason
from app.core.turn import FunctionTool, Item, Message, ToolCall, TurnOptions, Usage
from app.errors import RunFailedError, UpstreamError
from app.settings import RouteSettings

# Fields a caller could use to pick another agent than the route's: the route decides, always.
AGENT_SELECTORS = ("agent_reference", "agent", "assistant_id", "model")


def agent_reference(route: RouteSettings) -> dict[str, Any]:
    assert route.agent is not None
    reference: dict[str, Any] = {"type": "agent_reference", "name": route.agent.name}
    if route.agent.version:
        reference["version"] = route.agent.version
    return reference


def input_items(items: tuple[Item, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Message):
            if item.text or not item.tool_calls:
                out.append({"type": "message", "role": item.role, "content": item.text})
            out.extend(
                {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
                for c in item.tool_calls
            )
        else:
            out.append({"type": "function_call_output", "call_id": item.call_id, "output": item.output})
    return out


def tool_param(tool: FunctionTool) -> dict[str, Any]:
    param: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description is not None:
        param["description"] = tool.description
    param["parameters"] = tool.parameters if tool.parameters is not None else {"type": "object", "properties": {}}
    if tool.strict is not None:
        param["strict"] = tool.strict
    return param


def option_params(options: TurnOptions) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if options.temperature is not None:
        body["temperature"] = options.temperature
    if options.top_p is not None:
        body["top_p"] = options.top_p
    if options.max_output_tokens is not None:
        body["max_output_tokens"] = options.max_output_tokens
    if options.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = options.parallel_tool_calls
    choice = options.tool_choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        choice = {"type": "function", "name": choice["function"].get("name")}
    if choice is not None:
        body["tool_choice"] = choice
    return body


def sanitize_passthrough(body: dict[str, Any], route: RouteSettings) -> dict[str, Any]:
    """The client's Responses body, minus every way to pick an agent, plus the route's agent."""
    clean = {k: v for k, v in body.items() if k not in AGENT_SELECTORS}
    clean["agent_reference"] = agent_reference(route)
    return clean


def usage_of(response: dict[str, Any]) -> Usage | None:
    usage = response.get("usage")
    if not usage:
        return None
    prompt = int(usage.get("input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    return Usage(prompt, completion, int(usage.get("total_tokens") or prompt + completion))


def function_calls(response: dict[str, Any]) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(id=item["call_id"], name=item["name"], arguments=item.get("arguments") or "")
        for item in response.get("output") or []
        if item.get("type") == "function_call"
    )


def finish_reason(response: dict[str, Any]) -> FinishReason:
    """How a finished Response ends the turn, or the error the client should see."""
    status = response.get("status")
    if status == "failed":
        error = response.get("error") or {}
        code = str(error.get("code") or "run_failed")
        raise RunFailedError(f"The agent's response failed: {error.get('message') or code}", code=code)
    if status == "incomplete":
        return "length"
    if status == "completed":
        return "tool_calls" if function_calls(response) else "stop"
    if status == "cancelled":
        raise UpstreamError("The agent's response was cancelled upstream.", code="run_cancelled")
    raise UpstreamError(f"The agent's response ended in an unexpected status {status!r}.")
