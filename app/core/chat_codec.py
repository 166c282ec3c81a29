"""Chat Completions <-> the neutral turn: parse a request's messages, render completions and chunks.

Rendered objects are plain dicts shaped exactly like `CreateChatCompletionResponse` and
`CreateChatCompletionStreamResponse` in OpenAI's spec (the tests validate them against it).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from app.core.events import FinishReason
from app.core.turn import (
    FunctionTool,
    Item,
    Message,
    ToolCall,
    ToolResult,
    TurnOptions,
    Usage,
    join_parts,
    text_message,
)
from app.errors import InvalidRequestError
from app.wire.chat import ChatCompletionRequest, ChatMessage


@dataclass(frozen=True)
class ChatTurn:
    items: tuple[Item, ...]
    instructions: str | None
    tools: tuple[FunctionTool, ...] | None
    options: TurnOptions


def _parts(message: ChatMessage, index: int) -> tuple[str, ...]:
    """The message's text parts (one for string content, none for null or empty content)."""
    content = message.content
    if content is None:
        return ()
    if isinstance(content, str):
        return (content,) if content else ()
    texts: list[str] = []
    for j, part in enumerate(content):
        if part.type not in ("text", "input_text", "output_text") or part.text is None:
            raise InvalidRequestError(
                f"Content parts of type '{part.type}' are not supported by agent routes; send text.",
                param=f"messages[{index}].content[{j}].type",
                code="unsupported_content",
            )
        texts.append(part.text)
    return tuple(texts)


def _text(message: ChatMessage, index: int) -> str:
    return join_parts(_parts(message, index))


def parse_messages(messages: list[ChatMessage]) -> tuple[tuple[Item, ...], str | None]:
    """Split chat messages into conversation items and instructions (system/developer text).

    Tool messages must answer a call of the assistant message before them, and every call of an
    assistant message must be answered before the conversation goes on.
    """
    items: list[Item] = []
    instructions: list[str] = []
    open_calls: dict[str, int] = {}  # call id -> index of the assistant message that made it
    for i, m in enumerate(messages):
        if m.role in ("system", "developer"):
            instructions.append(_text(m, i))
            continue
        if m.role == "tool":
            if not m.tool_call_id:
                raise InvalidRequestError(
                    "A message with role 'tool' needs a tool_call_id.", param=f"messages[{i}].tool_call_id"
                )
            if m.tool_call_id not in open_calls:
                raise InvalidRequestError(
                    f"Invalid tool_call_id '{m.tool_call_id}': no preceding assistant message has a tool call "
                    "with this id (or it was answered already).",
                    param=f"messages[{i}].tool_call_id",
                )
            del open_calls[m.tool_call_id]
            items.append(ToolResult(call_id=m.tool_call_id, output=_text(m, i)))
            continue
        if open_calls:
            raise _missing_outputs(open_calls, i)
        if m.role == "assistant":
            calls = tuple(
                ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments) for c in m.tool_calls or ()
            )
            open_calls = {c.id: i for c in calls}
            items.append(text_message("assistant", _parts(m, i), calls))
        else:
            items.append(text_message("user", _parts(m, i)))
    if open_calls:
        raise _missing_outputs(open_calls, len(messages))
    if not items:
        raise InvalidRequestError("messages must contain at least one user message.", param="messages")
    last = items[-1]
    if isinstance(last, Message) and last.role == "assistant":
        raise InvalidRequestError(
            "The last message must be from the user or a tool; an agent turn starts from a user message.",
            param=f"messages[{len(messages) - 1}].role",
        )
    return tuple(items), "\n\n".join(instructions) if instructions else None


def _missing_outputs(open_calls: dict[str, int], at: int) -> InvalidRequestError:
    ids = sorted(open_calls)
    source = min(open_calls.values())
    return InvalidRequestError(
        f"Tool outputs are missing for tool call ids {ids} of messages[{source}]: answer every call with a "
        "message of role 'tool' before the conversation goes on.",
        param="messages",
        code="tool_outputs_missing",
    )


def parse_request(req: ChatCompletionRequest) -> ChatTurn:
    items, instructions = parse_messages(req.messages)
    tools = (
        tuple(
            FunctionTool(
                name=t.function.name,
                description=t.function.description,
                parameters=t.function.parameters,
                strict=t.function.strict,
            )
            for t in req.tools
        )
        if req.tools is not None
        else None
    )
    options = TurnOptions(
        temperature=req.temperature,
        top_p=req.top_p,
        max_output_tokens=req.max_completion_tokens or req.max_tokens,
        tool_choice=req.tool_choice,
        parallel_tool_calls=req.parallel_tool_calls,
        response_format=req.response_format,
    )
    return ChatTurn(items=items, instructions=instructions, tools=tools, options=options)


def new_completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def _usage(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _tool_calls(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def render_completion(
    *,
    completion_id: str,
    model: str,
    created: int,
    text: str,
    tool_calls: tuple[ToolCall, ...],
    finish_reason: FinishReason,
    usage: Usage | None,
    annotations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if tool_calls:
        message["tool_calls"] = _tool_calls(tool_calls)
    if annotations:
        message["annotations"] = annotations
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": _usage(usage),
    }


class ChunkRenderer:
    """Renders the chunks of one streamed completion; every chunk shares id, model and created."""

    def __init__(self, model: str, *, completion_id: str | None = None, include_usage: bool = False) -> None:
        self.id = completion_id or new_completion_id()
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage

    def _chunk(self, delta: dict[str, Any], finish_reason: FinishReason | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def role(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""})

    def text(self, text: str) -> dict[str, Any]:
        return self._chunk({"content": text})

    def tool_calls(self, calls: tuple[ToolCall, ...]) -> dict[str, Any]:
        return self._chunk({"tool_calls": [{"index": i, **call} for i, call in enumerate(_tool_calls(calls))]})

    def annotations(self, annotations: list[dict[str, Any]]) -> dict[str, Any]:
        """Citations placed on the text sent so far (`delta.annotations`, as OpenAI streams web-search ones)."""
        return self._chunk({"annotations": annotations})

    def finish(self, reason: FinishReason) -> dict[str, Any]:
        return self._chunk({}, reason)

    def usage(self, usage: Usage | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": _usage(usage),
        }
