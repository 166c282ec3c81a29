"""The Responses event stream (`stream: true`): `response.*` events with `sequence_number`, no `[DONE]`.

`numbered_events` yields `(sequence_number, sse bytes)`, which a background response keeps in its log
so that a stream can resume after a sequence number; `stream_events` is the plain byte stream.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

from app.emulator.foundry_v2_code import call_events
from app.emulator.foundry_v2_tools import item_events
from app.emulator.hooks import EmulatorContext
from app.emulator.http import sse
from app.emulator.script import Plan

_TERMINAL = {
    "completed": "response.completed",
    "failed": "response.failed",
    "incomplete": "response.incomplete",
}


async def stream_events(
    ctx: EmulatorContext,
    body: dict[str, Any],
    plan: Plan,
    output: list[dict[str, Any]],
    finish: Callable[[], dict[str, Any]],
) -> AsyncIterator[bytes]:
    async for _, chunk in numbered_events(ctx, body, plan, output, finish):
        yield chunk


async def numbered_events(
    ctx: EmulatorContext,
    body: dict[str, Any],
    plan: Plan,
    output: list[dict[str, Any]],
    finish: Callable[[], dict[str, Any]],
) -> AsyncIterator[tuple[int, bytes]]:
    """Replay `output` as events; `finish()` gives the final Response (also run if the client goes away)."""
    counter = itertools.count()

    def event(kind: str, **fields: Any) -> tuple[int, bytes]:
        sequence = next(counter)
        return sequence, sse(kind, {"type": kind, "sequence_number": sequence, **fields})

    try:
        yield event("response.created", response=copy.deepcopy(body))
        body["status"] = "in_progress"
        yield event("response.in_progress", response=copy.deepcopy(body))
        if plan.sleep_ms > 0:
            await asyncio.sleep(plan.sleep_ms / 1000)
        for index, item in enumerate(output):
            if item["type"] == "message":
                async for chunk in _message(ctx, event, index, item, plan):
                    yield chunk
            elif item["type"] == "code_interpreter_call":
                for chunk in call_events(event, index, item):
                    yield chunk
            elif item["type"] != "function_call":
                for chunk in item_events(event, index, item):
                    yield chunk
            else:
                yield event(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "arguments": "", "status": "in_progress"},
                )
                yield event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=item["arguments"],
                )
                yield event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
                yield event("response.output_item.done", output_index=index, item=item)
        final = copy.deepcopy(finish())
        if final["status"] == "failed" and plan.error_code == "rate_limit_exceeded":
            # An in-stream error, then the terminal event SDKs wait for (azure-as-it-is.md §3).
            yield event("error", code=plan.error_code, message=plan.error_message, param=None)
        if final["status"] in _TERMINAL:
            yield event(_TERMINAL[final["status"]], response=final)
    finally:
        finish()


async def _message(
    ctx: EmulatorContext, event: Callable[..., tuple[int, bytes]], index: int, item: dict[str, Any], plan: Plan
) -> AsyncIterator[tuple[int, bytes]]:
    part = item["content"][0]
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    yield event(
        "response.output_item.added",
        output_index=index,
        item={**item, "status": "in_progress", "content": []},
    )
    yield event(
        "response.content_part.added",
        **where,
        part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
    )
    for n, delta in enumerate(plan.deltas or (part["text"],)):
        delay = ctx.options.token_delay_ms
        if n and delay > 0:
            await asyncio.sleep(delay / 1000)
        yield event("response.output_text.delta", **where, delta=delta, logprobs=[])
    for n, annotation in enumerate(part["annotations"]):
        yield event("response.output_text.annotation.added", **where, annotation_index=n, annotation=annotation)
    yield event("response.output_text.done", **where, text=part["text"], logprobs=[])
    yield event("response.content_part.done", **where, part=part)
    yield event("response.output_item.done", output_index=index, item=item)
