"""Pure translation between the neutral turn and the Assistants wire format (no I/O)."""

from __future__ import annotations

from typing import Any

from app.core import failures
from app.core.events import Annotation, ApprovalRequest, Cited, FinishReason, TextDelta
from app.core.turn import FunctionTool, Item, ToolCall, ToolResult, TurnOptions, Usage
from app.errors import ToolOutputsExpiredError, UpstreamError

TERMINAL = frozenset({"completed", "failed", "cancelled", "expired", "incomplete", "requires_action"})
ACTIVE = frozenset({"queued", "in_progress", "requires_action", "cancelling"})


def message_param(item: Item) -> dict[str, Any]:
    """A conversation item as an Assistants message (`additional_messages` / `thread.messages`).

    Threads hold only user and assistant text, so tool traffic from a replayed history is written
    as text that keeps its meaning for the model. Several text parts stay parts (CreateMessageRequest
    takes `content` as a string or an array of `text` parts); empty content stays empty (the string
    has no minimum length in OpenAI's spec).
    """
    if isinstance(item, ToolResult):
        return {"role": "user", "content": f"[tool call {item.call_id} returned]\n{item.output}"}
    if item.tool_calls:
        calls = "\n".join(f"[called {c.name}({c.arguments}) as {c.id}]" for c in item.tool_calls)
        return {"role": item.role, "content": f"{item.text}\n{calls}" if item.text else calls}
    if item.parts:
        return {"role": item.role, "content": [{"type": "text", "text": part} for part in item.parts]}
    return {"role": item.role, "content": item.text}


def _given(**fields: Any) -> dict[str, Any]:
    """The fields that have a value: an absent one is left out of the body, never sent as null."""
    return {key: value for key, value in fields.items() if value is not None}


def tool_param(tool: FunctionTool) -> dict[str, Any]:
    given = _given(description=tool.description, parameters=tool.parameters, strict=tool.strict)
    return {"type": "function", "function": {"name": tool.name, **given}}


def run_params(
    *,
    assistant_id: str,
    instructions: str | None,
    tools: tuple[FunctionTool, ...] | None,
    agent_tools: list[dict[str, Any]] | None,
    options: TurnOptions,
    stream: bool,
) -> dict[str, Any]:
    """The body of a run: system text as `additional_instructions` (it never enters the thread)."""
    body: dict[str, Any] = {"assistant_id": assistant_id}
    if stream:
        body["stream"] = True
    if instructions:
        body["additional_instructions"] = instructions
    if tools is not None:
        # Request tools replace the agent's function tools; its built-in tools stay.
        builtin = [t for t in agent_tools or [] if t.get("type") != "function"]
        body["tools"] = builtin + [tool_param(t) for t in tools]
    body.update(
        _given(
            temperature=options.temperature,
            top_p=options.top_p,
            max_completion_tokens=options.max_output_tokens,
            tool_choice=options.tool_choice,
            parallel_tool_calls=options.parallel_tool_calls,
            response_format=options.response_format,
        )
    )
    return body


NO_USAGE = Usage(0, 0, 0)


def usage_of(run: dict[str, Any]) -> Usage | None:
    """The `usage` of a run or a run step: null on a run until it ends and on a step while it is in progress
    (openai-openapi `RunCompletionUsage`, `RunStepCompletionUsage`; Azure.AI.Agents `ThreadRun.usage`)."""
    usage = run.get("usage")
    if not usage:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    return Usage(prompt, completion, int(usage.get("total_tokens") or prompt + completion))


def added(*usages: Usage) -> Usage:
    prompt = completion = total = 0
    for u in usages:  # one loop, not three generators: this runs on every turn
        prompt += u.prompt_tokens
        completion += u.completion_tokens
        total += u.total_tokens
    return Usage(prompt, completion, total)


def steps_usage(steps: list[dict[str, Any]]) -> Usage:
    """What the run's completed steps report: a step's usage is known once it completed."""
    return added(*(u for s in steps if s.get("status") == "completed" and (u := usage_of(s)) is not None))


def turn_usage(run: dict[str, Any], *, reported: Usage, seen: Usage) -> tuple[Usage, Usage]:
    """A turn's usage and the run's figure so far, from what Azure reported for the run.

    Azure counts a run over all its rounds: its own `usage` (cumulative, set once it ended) when present,
    else `seen`, what its completed steps report (a run waiting in `requires_action` has no usage, and
    its waiting step none until the outputs complete it). `reported` is what earlier turns of the same
    run already gave their clients: each turn gives only the rest, so the turns of a run add up to the
    run's usage and nothing is counted twice.
    """
    so_far = usage_of(run) or seen
    turn = Usage(
        max(0, so_far.prompt_tokens - reported.prompt_tokens),
        max(0, so_far.completion_tokens - reported.completion_tokens),
        max(0, so_far.total_tokens - reported.total_tokens),
    )
    return turn, added(reported, turn)


def tool_calls_of(run: dict[str, Any]) -> tuple[ToolCall, ...]:
    action = run.get("required_action") or {}
    calls = (action.get("submit_tool_outputs") or {}).get("tool_calls") or []
    return tuple(
        ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"].get("arguments") or "")
        for c in calls
        if c.get("type", "function") == "function"
    )


def annotation_of(raw: dict[str, Any]) -> Annotation | None:
    """An Assistants text annotation (`file_citation`, `url_citation`, `file_path`) as a neutral one."""
    kind = raw.get("type")
    if kind not in ("file_citation", "url_citation", "file_path"):
        return None
    body = raw.get(kind) or {}
    return Annotation(
        kind=kind,
        text=raw.get("text"),
        start_index=raw.get("start_index"),
        end_index=raw.get("end_index"),
        url=body.get("url"),
        title=body.get("title"),
        file_id=body.get("file_id"),
    )


def _part_events(part: dict[str, Any]) -> list[TextDelta | Cited]:
    """One content part (of a delta or a message): its annotations first, so its markers resolve at once."""
    kind = part.get("type")
    if kind == "image_file":
        file_id = (part.get("image_file") or {}).get("file_id")
        return [Cited((Annotation(kind="image_file", file_id=file_id),))] if file_id else []
    if kind != "text":
        return []
    text = part.get("text") or {}
    events: list[TextDelta | Cited] = []
    found = text.get("annotations")
    annotations = tuple(a for a in map(annotation_of, found) if a is not None) if found else ()
    if annotations:
        events.append(Cited(annotations))
    if text.get("value"):
        events.append(TextDelta(text=text["value"]))
    return events


def delta_events(delta_event: dict[str, Any]) -> list[TextDelta | Cited]:
    """The text, citations and images of a `thread.message.delta` payload."""
    return [e for part in (delta_event.get("delta") or {}).get("content") or [] for e in _part_events(part)]


def message_events(message: dict[str, Any]) -> list[TextDelta | Cited]:
    """The same for a whole message (the polling mode reads messages after the run)."""
    return [e for part in message.get("content") or [] for e in _part_events(part)]


def approvals_of(run: dict[str, Any]) -> tuple[ApprovalRequest, ...]:
    """The MCP calls a run in `requires_action` asks to approve (`submit_tool_approval`)."""
    action = run.get("required_action") or {}
    if action.get("type") != "submit_tool_approval":
        return ()
    calls = (action.get("submit_tool_approval") or {}).get("tool_calls") or []
    return tuple(
        ApprovalRequest(
            id=str(c["id"]),
            server_label=str(c.get("server_label") or ""),
            name=str(c.get("name") or ""),
            arguments=str(c.get("arguments") or ""),
        )
        for c in calls
    )


def submit_body(results: tuple[ToolResult, ...], approvals: dict[str, bool] | None) -> dict[str, Any]:
    """What a submit carries: the functions' outputs, or the answers to MCP approval requests."""
    if approvals is not None:
        return {"tool_approvals": [{"tool_call_id": call_id, "approve": ok} for call_id, ok in approvals.items()]}
    return {"tool_outputs": [{"tool_call_id": r.call_id, "output": r.output} for r in results]}


def _incomplete_reason(details: dict[str, Any] | None) -> FinishReason:
    """Only a token limit is `length`; a filtered answer is `content_filter`."""
    reason = str((details or {}).get("reason") or "")
    if reason == failures.CONTENT_FILTER:
        return "content_filter"
    return "length" if "token" in reason or not reason else "stop"


def outcome(run: dict[str, Any], *, tool_round: bool) -> FinishReason:
    """Map a run's terminal status to the end of a turn, or raise the error the client should see."""
    status = run.get("status")
    if status == "completed":
        return "stop"
    if status == "incomplete":
        return _incomplete_reason(run.get("incomplete_details"))
    if status == "requires_action":
        return "tool_calls"
    if status == "failed":
        error = run.get("last_error") or {}
        if error.get("code") == failures.CONTENT_FILTER:
            return "content_filter"
        raise failures.run_failure(error.get("code"), error.get("message"))
    if status == "expired":
        if tool_round:
            raise ToolOutputsExpiredError(
                "The tool outputs came too late: the agent's run expired while waiting for them. "
                "Send the conversation again to start a new run."
            )
        raise UpstreamError("The agent's run expired before it finished.", code="run_expired")
    if status == "cancelled":
        raise UpstreamError("The agent's run was cancelled upstream.", code="run_cancelled")
    raise UpstreamError(f"The agent's run ended in an unexpected status {status!r}.")


def active_run_id(message: str) -> str | None:
    """The run id in Azure's 400 "Thread thread_x already has an active run run_y." (or the messages variant)."""
    for word in message.replace(".", " ").split():
        if word.startswith("run_"):
            return word
    return None
