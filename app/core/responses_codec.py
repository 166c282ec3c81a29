"""Responses <-> the neutral turn: tools and options in, Responses and their full event stream out
(input items: `responses_input`).

One `ResponseBuilder` serves both a streamed and a plain turn, so `responses.stream(...)`'s final
response and the non-streamed result are the same object. Rendered dicts follow OpenAI's `Response`
and `ResponseStreamEvent` schemas (the tests validate them).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from app.core import approvals
from app.core.annotations import AnnotatedText, MarkerMode, response_annotation
from app.core.events import Annotation, ApprovalRequest
from app.core.turn import FunctionTool, Message, ToolCall, TurnOptions, Usage
from app.errors import BridgeError, InvalidRequestError
from app.wire.responses import ResponsesRequest


def parse_tools(req: ResponsesRequest) -> tuple[FunctionTool, ...] | None:
    if req.tools is None:
        return None
    tools = []
    for i, tool in enumerate(req.tools):
        if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            raise InvalidRequestError(
                "Only function tools can be given on Assistants routes; the agent's own tools stay.",
                param=f"tools[{i}]",
                code="unsupported_tool",
            )
        tools.append(
            FunctionTool(
                name=tool["name"],
                description=tool.get("description"),
                parameters=tool.get("parameters"),
                strict=tool.get("strict"),
            )
        )
    return tuple(tools)


def parse_options(req: ResponsesRequest) -> TurnOptions:
    tool_choice: str | dict[str, Any] | None = req.tool_choice
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function" and "name" in tool_choice:
        tool_choice = {"type": "function", "function": {"name": tool_choice["name"]}}
    return TurnOptions(
        temperature=req.temperature,
        top_p=req.top_p,
        max_output_tokens=req.max_output_tokens,
        tool_choice=tool_choice,
        parallel_tool_calls=req.parallel_tool_calls,
        response_format=response_format(req.text),
    )


def response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    """Responses' `text.format` as an Assistants run's `response_format` (json_schema nested again)."""
    fmt = (text or {}).get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_schema":
        schema = {k: v for k, v in fmt.items() if k != "type"}
        return {"type": "json_schema", "json_schema": schema}
    return dict(fmt)


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A request tool as a Response lists it: function tools with every required key present."""
    if tool.get("type") != "function":
        return dict(tool)
    return {
        **tool,
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict"),
    }


_RESPONSE_HEX = 48


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(_RESPONSE_HEX // 2)


def output_item_id(response_id: str, prefix: str, index: int) -> str:
    """An output item's id names its response (`msg_<response hex>o<index>`), so that an
    `item_reference` to it finds the response with no index of its own. Input items listed by
    `input_items.render` carry the response hex too, followed by digits only."""
    return f"{prefix}_{response_id.removeprefix('resp_')}o{index}"


def response_of_item(item_id: str) -> str | None:
    """The response an item id of ours names (output or listed input item), None for any other id."""
    _, sep, rest = item_id.partition("_")
    head = rest[:_RESPONSE_HEX]
    if not sep or len(rest) <= _RESPONSE_HEX or any(c not in "0123456789abcdef" for c in head):
        return None
    return "resp_" + head


def usage_dict(usage: Usage | None) -> dict[str, Any]:
    """A Response's usage; zeros when Azure gave none (a Response that ended never has null usage)."""
    usage = usage or Usage(0, 0, 0)
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


class ResponseBuilder:
    """Builds one Response from neutral events; every method returns the stream events it implies."""

    def __init__(
        self, req: ResponsesRequest, *, response_id: str | None = None, markers: MarkerMode = "numbered"
    ) -> None:
        self.markers: MarkerMode = markers
        self._annotated = AnnotatedText(markers)
        self._annotations: list[dict[str, Any]] = []
        self.id = response_id or new_response_id()
        self.req = req
        self.created_at = int(time.time())
        self.status = "in_progress"
        self.output: list[dict[str, Any]] = []
        self.usage: Usage | None = None
        self.ended = False
        self.error: dict[str, Any] | None = None
        self.incomplete_details: dict[str, Any] | None = None
        self.completed_at: int | None = None
        self._seq = 0
        self._message: dict[str, Any] | None = None
        self._text: list[str] = []

    # -- the Response object ----------------------------------------------------------------------

    def response(self) -> dict[str, Any]:
        req = self.req
        response = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "completed_at": self.completed_at,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "model": req.model,
            "output": [dict(item) for item in self.output],
            "parallel_tool_calls": req.parallel_tool_calls if req.parallel_tool_calls is not None else True,
            "previous_response_id": req.previous_response_id,
            "store": req.store if req.store is not None else True,
            "temperature": req.temperature if req.temperature is not None else 1.0,
            "text": req.text or {"format": {"type": "text"}},
            "tool_choice": req.tool_choice if req.tool_choice is not None else "auto",
            "tools": [_echo_tool(t) for t in req.tools or []],
            "top_p": req.top_p if req.top_p is not None else 1.0,
            # Assistants threads truncate on their own: what a run does unless the client said otherwise.
            "truncation": req.truncation or "auto",
            "metadata": req.metadata or {},
            "background": bool(req.background),
        }
        for echoed in ("user", "safety_identifier", "prompt_cache_key"):
            value = getattr(req, echoed)
            if value is not None:
                response[echoed] = value
        if req.conversation is not None:  # a bridge conversation (`held_conversations`), as OpenAI names it
            conv = req.conversation
            response["conversation"] = {"id": conv.get("id") if isinstance(conv, dict) else conv}
        if self.ended:
            response["usage"] = usage_dict(self.usage)
        return response

    def reply(self) -> Message:
        """What the agent said, as the client will echo it in its next input."""
        text = "".join(part["text"] for item in self.output if item["type"] == "message" for part in item["content"])
        calls = tuple(
            ToolCall(id=item["call_id"], name=item["name"], arguments=item["arguments"])
            if item["type"] == "function_call"
            else approvals.as_tool_call(
                ApprovalRequest(item["id"], item["server_label"], item["name"], item["arguments"])
            )
            for item in self.output
            if item["type"] in ("function_call", "mcp_approval_request")
        )
        return Message("assistant", text, calls)

    def replay(self, emitted: list[dict[str, Any]]) -> None:
        """Pick up a response whose first events went out from another replica: its text so far (in the
        one message a turn builds), then numbering after the last of `emitted`, with nothing emitted."""
        self.created_at = int(next((e["response"]["created_at"] for e in emitted if "response" in e), self.created_at))
        self.start()
        text = "".join(str(e.get("delta") or "") for e in emitted if e.get("type") == "response.output_text.delta")
        if text:
            self._open_message()
            self._text.append(text)
        self._seq = max((int(e["sequence_number"]) for e in emitted), default=-1) + 1

    @property
    def started(self) -> bool:
        """Whether an event went out (after that, a failure is a `response.failed` event)."""
        return self._seq > 0

    # -- events -----------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        return [
            self._event("response.created", response=self.response()),
            self._event("response.in_progress", response=self.response()),
        ]

    def _open_message(self) -> list[dict[str, Any]]:
        if self._message is not None:
            return []
        self._message = {
            "id": output_item_id(self.id, "msg", len(self.output)),
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self.output.append(self._message)
        index = len(self.output) - 1
        return [
            self._event("response.output_item.added", output_index=index, item=dict(self._message)),
            self._event(
                "response.content_part.added",
                item_id=self._message["id"],
                output_index=index,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            ),
        ]

    def _delta(self, shown: str) -> list[dict[str, Any]]:
        assert self._message is not None
        events: list[dict[str, Any]] = []
        if shown:
            self._text.append(shown)
            events.append(
                self._event(
                    "response.output_text.delta",
                    item_id=self._message["id"],
                    output_index=len(self.output) - 1,
                    content_index=0,
                    delta=shown,
                    logprobs=[],
                )
            )
        for placed in self._annotated.new_placed():
            annotation = response_annotation(placed)
            self._annotations.append(annotation)
            events.append(
                self._event(
                    "response.output_text.annotation.added",
                    item_id=self._message["id"],
                    output_index=len(self.output) - 1,
                    content_index=0,
                    annotation_index=len(self._annotations) - 1,
                    annotation=annotation,
                )
            )
        return events

    def text(self, delta: str) -> list[dict[str, Any]]:
        events = self._open_message()
        return events + self._delta(self._annotated.feed(delta))

    def cite(self, annotations: tuple[Annotation, ...]) -> list[dict[str, Any]]:
        events = self._open_message()
        return events + self._delta(self._annotated.cite(annotations))

    def _close_message(self) -> list[dict[str, Any]]:
        if self._message is None:
            return []
        events = self._delta(self._annotated.flush())
        message, self._message = self._message, None
        index = self.output.index(message)
        text = "".join(self._text)
        part = {"type": "output_text", "text": text, "annotations": list(self._annotations), "logprobs": []}
        self._text, self._annotations, self._annotated = [], [], AnnotatedText(self.markers)
        message["content"] = [part]
        message["status"] = "completed"
        return [
            *events,
            self._event(
                "response.output_text.done",
                item_id=message["id"],
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            ),
            self._event(
                "response.content_part.done",
                item_id=message["id"],
                output_index=index,
                content_index=0,
                part=dict(part),
            ),
            self._event("response.output_item.done", output_index=index, item=dict(message)),
        ]

    def tool_calls(self, calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
        events = self._close_message()
        for call in calls:
            item = {
                "id": output_item_id(self.id, "fc", len(self.output)),
                "type": "function_call",
                "status": "in_progress",
                "call_id": call.id,
                "name": call.name,
                "arguments": "",
            }
            self.output.append(item)
            index = len(self.output) - 1
            events.append(self._event("response.output_item.added", output_index=index, item=dict(item)))
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=call.arguments,
                )
            )
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=call.name,
                    arguments=call.arguments,
                )
            )
            item["arguments"] = call.arguments
            item["status"] = "completed"
            events.append(self._event("response.output_item.done", output_index=index, item=dict(item)))
        return events

    def approvals(self, requests: tuple[ApprovalRequest, ...]) -> list[dict[str, Any]]:
        """MCP approval requests as `mcp_approval_request` output items (answered by the client's next input)."""
        events = self._close_message()
        for request in requests:
            item = approvals.response_item(request)
            self.output.append(item)
            index = len(self.output) - 1
            events.append(self._event("response.output_item.added", output_index=index, item=dict(item)))
            events.append(self._event("response.output_item.done", output_index=index, item=dict(item)))
        return events

    def finish(self, finish_reason: str, usage: Usage | None) -> list[dict[str, Any]]:
        events = self._close_message()
        self.usage = usage
        self.ended = True
        self.completed_at = int(time.time())
        if finish_reason in ("length", "content_filter"):
            self.status = "incomplete"
            reason = "content_filter" if finish_reason == "content_filter" else "max_output_tokens"
            self.incomplete_details = {"reason": reason}
            events.append(self._event("response.incomplete", response=self.response()))
        else:
            self.status = "completed"
            events.append(self._event("response.completed", response=self.response()))
        return events

    def fail(self, error: BridgeError) -> list[dict[str, Any]]:
        """A failure after the stream began: the response fails, then an error event says why."""
        events = self._close_message()
        self.status = "failed"
        self.ended = True
        self.error = response_error(error.code, error.message)
        events.append(self._event("response.failed", response=self.response()))
        events.append(self._event("error", code=error.code, message=error.message, param=error.param))
        return events


# OpenAI's ResponseErrorCode values that a run's failure can carry through unchanged.
_RESPONSE_ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt", "vector_store_timeout"})


def response_error(code: str | None, message: str) -> dict[str, Any]:
    """A Response's `error`: its code one OpenAI defines (others become server_error; the message keeps them)."""
    if code in _RESPONSE_ERROR_CODES:
        return {"code": code, "message": message}
    return {"code": "server_error", "message": f"{message} ({code})" if code else message}


def failed_events(
    response: dict[str, Any], code: str | None, message: str, sequence_number: int
) -> list[dict[str, Any]]:
    """`response.failed` for a relayed stream that broke or reported only an `error` event."""
    failed = {**response, "status": "failed", "error": response_error(code, message)}
    if failed.get("usage") is None:
        failed["usage"] = usage_dict(None)
    return [{"type": "response.failed", "sequence_number": sequence_number, "response": failed}]
