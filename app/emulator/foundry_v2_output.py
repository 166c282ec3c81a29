"""The output of a v2 turn: a plan's output items (ids included; streaming replays the very same items)
and its usage, in the Responses shapes (openai-openapi `Response.output`, `ResponseUsage`)."""

from __future__ import annotations

from typing import Any

from app.emulator.foundry_v2_code import CodeOutput
from app.emulator.foundry_v2_tools import mcp_items
from app.emulator.http import new_id
from app.emulator.script import Plan


def usage_of(plan: Plan) -> dict[str, Any]:
    return {
        "input_tokens": plan.usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": plan.usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": plan.usage.total_tokens,
    }


def annotations_of(plan: Plan) -> list[dict[str, Any]]:
    """Responses `output_text.annotations` for the plan's citations (openai-openapi `FileCitationBody`:
    `file_id`, `filename`, `index`; `UrlCitationBody`: `url`, `title`, `start_index`, `end_index`)."""
    out: list[dict[str, Any]] = []
    for c in plan.citations:
        if c.file_id:
            out.append({"type": "file_citation", "file_id": c.file_id, "filename": f"{c.file_id}.txt", "index": c.end})
        else:
            out.append(
                {"type": "url_citation", "url": c.url, "title": c.title, "start_index": c.start, "end_index": c.end}
            )
    return out


def output_of(plan: Plan, history: list[dict[str, Any]], code: CodeOutput | None = None) -> list[dict[str, Any]]:
    """The output items of a plan; `code` is what code interpreter ran and made for its answer."""
    hosted = mcp_items(plan, history)
    if plan.kind == "mcp_approval":
        return hosted
    if plan.kind == "tool_calls":
        return [
            {
                "id": new_id("fc"),
                "type": "function_call",
                "status": "completed",
                "call_id": new_id("call"),
                "name": call.name,
                "arguments": call.arguments,
            }
            for call in plan.tool_calls
        ]
    if plan.kind in ("reply", "incomplete"):
        if code is not None:
            hosted.append(code.call)
            part = {"type": "output_text", "text": code.text, "annotations": code.annotations, "logprobs": []}
        else:
            part = {"type": "output_text", "text": plan.text, "annotations": annotations_of(plan), "logprobs": []}
        status = "completed" if plan.kind == "reply" else "incomplete"
        message = {"id": new_id("msg"), "type": "message", "status": status, "role": "assistant", "content": [part]}
        return [*hosted, message]
    return []
