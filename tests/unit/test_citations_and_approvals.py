"""Citations, MCP approvals and endings on payloads shaped as Azure documents them (pure code, no I/O).

The payloads follow openai-openapi `MessageDeltaContentTextAnnotations*` / `RunObject` and
Azure.AI.Agents `SubmitToolApprovalAction` (docs/reference/azure-as-it-is.md §2-3).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.backends.assistants import mapping as assistants
from app.backends.foundry import mapping as foundry
from app.core import approvals, chat_codec, failures, responses_codec, responses_input
from app.core.annotations import AnnotatedText, chat_annotation, rewritten
from app.core.events import Annotation, ApprovalRequest, Cited, TextDelta, TurnCompleted, TurnEvent
from app.core.turn import Message, ToolCall, ToolResult, Usage
from app.errors import AgentFailedError, InvalidRequestError, RateLimitError, RunFailedError
from app.wire.responses import ResponsesRequest
from tests.support.spec import validate, validated_completion

MARKER = "【4:0†source】"
FILES = "http://bridge.test/v1/files"


def _file_citation(start: int, file_id: str = "assistant-abc", marker: str = MARKER) -> dict[str, Any]:
    return {
        "index": 0,
        "type": "file_citation",
        "text": marker,
        "start_index": start,
        "end_index": start + len(marker),
        "file_citation": {"file_id": file_id},
    }


def _delta(value: str, annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    text: dict[str, Any] = {"value": value}
    if annotations is not None:
        text["annotations"] = annotations
    return {
        "id": "msg_1",
        "object": "thread.message.delta",
        "delta": {"content": [{"index": 0, "type": "text", "text": text}]},
    }


def _play(deltas: list[dict[str, Any]], mode: str = "numbered") -> tuple[str, list[Annotation]]:
    text = AnnotatedText(mode)  # type: ignore[arg-type]
    out = []
    for delta in deltas:
        for event in assistants.delta_events(delta):
            out.append(text.cite(event.annotations) if isinstance(event, Cited) else text.feed(event.text))
    out.append(text.flush())
    return "".join(out), [p.annotation for p in text.placed]


def test_markers_become_numbered_references_and_annotations_point_at_them() -> None:
    raw_first = "Paris is the capital"
    deltas = [
        _delta(raw_first, []),
        _delta(MARKER, [_file_citation(len(raw_first))]),
        _delta(" and it is big"),
        _delta(
            "【4:1†source】", [_file_citation(len(raw_first) + len(MARKER) + 14, "assistant-xyz", "【4:1†source】")]
        ),
        _delta("."),
    ]
    text, placed = _play(deltas)
    assert text == "Paris is the capital[1] and it is big[2]."
    assert [(a.file_id, text[a.start_index : a.end_index]) for a in placed] == [  # type: ignore[misc]
        ("assistant-abc", "[1]"),
        ("assistant-xyz", "[2]"),
    ]


def test_the_same_source_keeps_its_number_and_keep_or_strip_modes_hold() -> None:
    second = "A" + MARKER + " B"
    deltas = [
        _delta("A"),
        _delta(MARKER, [_file_citation(1)]),
        _delta(" B"),
        _delta(MARKER, [_file_citation(len(second))]),
    ]
    assert _play(deltas)[0] == "A[1] B[1]"
    assert _play(deltas, "keep")[0] == "A" + MARKER + " B" + MARKER
    stripped, placed = _play(deltas, "strip")
    assert stripped == "A B"
    assert [(a.start_index, a.end_index) for a in placed] == [(1, 1), (3, 3)]


def test_a_marker_split_across_deltas_waits_for_its_annotation() -> None:
    text = AnnotatedText()
    assert text.feed("See 【4:") == "See "
    assert text.feed("0†source】 now") == ""  # held: its annotation has not come yet
    released = text.cite((Annotation(kind="url_citation", text=MARKER, url="https://example.com/a", title="A"),))
    assert released == "[1] now"
    assert text.flush() == ""
    assert text.placed[0].annotation.start_index == 4


def test_a_marker_nobody_names_is_dropped_and_a_lone_bracket_is_text() -> None:
    text = AnnotatedText()
    assert text.feed("x【9:9†source】y") == "x"
    assert text.flush() == "y"
    other = AnnotatedText()
    assert other.feed("a 【 b") == "a "
    assert other.flush() == "【 b"


def test_chat_annotations_validate_and_carry_file_ids() -> None:
    _, placed = _play([_delta("Q", []), _delta(MARKER, [_file_citation(1)])])
    url = Annotation(kind="url_citation", url="https://example.com", title="Example", start_index=0, end_index=3)
    rendered = [chat_annotation(a, FILES) for a in [*placed, url]]
    assert rendered[0]["url_citation"]["file_id"] == "assistant-abc"
    assert rendered[0]["url_citation"]["url"] == f"{FILES}/assistant-abc/content"
    validated_completion(
        text="Q[1]", tool_calls=(), finish_reason="content_filter", usage=Usage(3, 2, 5), annotations=rendered
    )
    chunk = chat_codec.ChunkRenderer("m").annotations(rendered)
    validate(chunk, "CreateChatCompletionStreamResponse")


def test_rewritten_stream_remembers_what_the_client_sees() -> None:
    async def events() -> AsyncIterator[TurnEvent]:
        yield TextDelta("Hi")
        yield Cited((Annotation(kind="url_citation", text=MARKER, url="https://e.x", title="E"),))
        yield TextDelta(MARKER + "!")
        yield TurnCompleted("stop", None, "thread_1")

    async def collect() -> list[TurnEvent]:
        return [e async for e in rewritten(events(), "numbered")]

    out = asyncio.run(collect())
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == "Hi[1]!"
    assert isinstance(out[-1], TurnCompleted)


def _builder(**extra: Any) -> responses_codec.ResponseBuilder:
    return responses_codec.ResponseBuilder(ResponsesRequest.model_validate({"model": "m", "input": "q", **extra}))


def _validate_stream(events: list[dict[str, Any]]) -> None:
    for event in events:
        validate(event, "ResponseStreamEvent")
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_responses_get_output_text_annotations_and_annotation_added_events() -> None:
    builder = _builder()
    events = builder.start()
    events += builder.text("Paris")
    events += builder.cite((Annotation(kind="file_citation", text=MARKER, file_id="assistant-abc"),))
    events += builder.text(MARKER + ".")
    events += builder.cite((Annotation(kind="image_file", file_id="assistant-img"),))
    events += builder.finish("stop", Usage(5, 3, 8))
    _validate_stream(events)
    added = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert [a["annotation"]["type"] for a in added] == ["file_citation", "file_path"]
    assert [a["annotation_index"] for a in added] == [0, 1]
    final = events[-1]["response"]
    validate(final, "Response")
    part = final["output"][0]["content"][0]
    assert part["text"] == "Paris[1]."
    assert part["annotations"][0] == {
        "type": "file_citation",
        "file_id": "assistant-abc",
        "filename": "assistant-abc",
        "index": 5,
    }
    assert part["annotations"][1] == {"type": "file_path", "file_id": "assistant-img", "index": 9}


def test_responses_approval_requests_are_native_items_and_tool_turns_carry_usage() -> None:
    builder = _builder()
    request = ApprovalRequest("mcpr_1", "github", "search_repos", '{"q": "x"}')
    events = builder.start() + builder.approvals((request,)) + builder.finish("tool_calls", None)
    _validate_stream(events)
    final = events[-1]["response"]
    validate(final, "Response")
    assert final["output"] == [approvals.response_item(request)]
    assert final["usage"]["total_tokens"] == 0  # Azure gave none: zeros, never null
    assert builder.reply().tool_calls[0].name == approvals.APPROVAL_TOOL


@pytest.mark.parametrize(("reason", "detail"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_incomplete_responses_name_their_reason(reason: str, detail: str) -> None:
    builder = _builder()
    events = builder.start() + builder.text("cut") + builder.finish(reason, Usage(1, 1, 2))
    _validate_stream(events)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": detail}


def test_a_failed_response_event_carries_its_error() -> None:
    builder = _builder(stream=True)
    events = builder.start() + builder.text("partial")
    events += builder.fail(failures.run_failure("rate_limit_exceeded", "Try again in 20 seconds."))
    _validate_stream(events)
    failed = next(e for e in events if e["type"] == "response.failed")
    assert failed["response"]["error"]["code"] == "rate_limit_exceeded"
    relayed = responses_codec.failed_events(events[0]["response"], "tool_error", "MCP server down", 7)
    validate(relayed[0], "ResponseStreamEvent")
    assert relayed[0]["response"]["error"] == {"code": "server_error", "message": "MCP server down (tool_error)"}


def test_failure_table() -> None:
    limited = failures.run_failure("rate_limit_exceeded", "Rate limit is exceeded. Try again in 20 seconds.")
    assert isinstance(limited, RateLimitError) and limited.headers["Retry-After"] == "20"
    assert failures.retry_after_of("Please retry after 1500 ms") == 1.5
    assert failures.retry_after_of("Try again in 2 minutes.") == 120.0
    assert failures.retry_after_of("nothing to see") is None
    assert isinstance(failures.run_failure("server_error", "x"), RunFailedError)
    deterministic = failures.run_failure("invalid_prompt", "x")
    assert isinstance(deterministic, AgentFailedError) and deterministic.status == 422


def test_assistants_endings_from_run_objects() -> None:
    def run(**fields: Any) -> dict[str, Any]:
        return {"id": "run_1", "thread_id": "thread_1", "usage": {"prompt_tokens": 4, "completion_tokens": 2}, **fields}

    assert (
        assistants.outcome(run(status="incomplete", incomplete_details={"reason": "content_filter"}), tool_round=False)
        == "content_filter"
    )
    assert (
        assistants.outcome(
            run(status="incomplete", incomplete_details={"reason": "max_completion_tokens"}), tool_round=False
        )
        == "length"
    )
    filtered = run(status="failed", last_error={"code": "content_filter", "message": "filtered"})
    assert assistants.outcome(filtered, tool_round=False) == "content_filter"
    with pytest.raises(RateLimitError):
        assistants.outcome(
            run(status="failed", last_error={"code": "rate_limit_exceeded", "message": "Try again in 20 seconds."}),
            tool_round=False,
        )


SUBMIT_TOOL_APPROVAL_RUN = {
    "id": "run_1",
    "thread_id": "thread_1",
    "status": "requires_action",
    "required_action": {
        "type": "submit_tool_approval",
        "submit_tool_approval": {
            "tool_calls": [
                {
                    "id": "call_mcp1",
                    "type": "mcp",
                    "name": "search_azure_rest_api_code",
                    "arguments": '{"query": "runs"}',
                    "server_label": "github",
                }
            ]
        },
    },
    "usage": None,
}


def test_a_classic_approval_request_and_its_answer() -> None:
    requests = assistants.approvals_of(SUBMIT_TOOL_APPROVAL_RUN)
    assert requests == (ApprovalRequest("call_mcp1", "github", "search_azure_rest_api_code", '{"query": "runs"}'),)
    assert assistants.tool_calls_of(SUBMIT_TOOL_APPROVAL_RUN) == ()
    call = approvals.as_tool_call(requests[0])
    assert call.name == "mcp_approval" and json.loads(call.arguments)["server_label"] == "github"
    items = approvals.resolve(
        (Message("user", "q"), Message("assistant", "", (call,)), ToolResult(call.id, '{"approve": true}'))
    )
    answer = items[-1]
    assert isinstance(answer, ToolResult) and answer.approve is True
    body = assistants.submit_body((answer,), approvals.answers_of((answer,)))
    assert body == {"tool_approvals": [{"tool_call_id": "call_mcp1", "approve": True}]}
    assert foundry.input_items([answer]) == [
        {"type": "mcp_approval_response", "approval_request_id": "call_mcp1", "approve": True}
    ]


def test_an_approval_answer_must_say_approve_or_deny() -> None:
    call = ToolCall("call_1", approvals.APPROVAL_TOOL, "{}")
    with pytest.raises(InvalidRequestError) as info:
        approvals.resolve((Message("assistant", "", (call,)), ToolResult("call_1", "sure, whatever")))
    assert info.value.code == "invalid_approval"
    assert approvals.parse_answer('{"approve": false}', "x") is False
    assert approvals.parse_answer("deny", "x") is False


def test_the_reserved_tool_never_reaches_the_agent() -> None:
    other = approvals.DECLARATION.__class__(name="lookup")
    assert approvals.without_reserved((approvals.DECLARATION, other)) == (other,)
    assert approvals.without_reserved((approvals.DECLARATION,)) is None  # the agent keeps its own tools
    assert approvals.without_reserved(()) == ()
    assert approvals.mode_for(None, dialect="chat") == "refuse"
    assert approvals.mode_for(None, dialect="responses") == "client"
    assert "mcp_approval" in approvals.refused("r", (ApprovalRequest("c", "s", "n", "{}"),)).message


def test_responses_input_carries_approval_items() -> None:
    req = ResponsesRequest.model_validate(
        {
            "model": "m",
            "input": [
                {"type": "message", "role": "user", "content": "q"},
                {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "s", "name": "n", "arguments": "{}"},
                {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": False},
            ],
        }
    )
    items, _, _ = responses_input.parse_input(req)
    assert isinstance(items[1], Message) and items[1].tool_calls[0].name == approvals.APPROVAL_TOOL
    assert items[2] == ToolResult("mcpr_1", '{"approve": false}', approve=False)


def test_v2_annotations_and_approval_items_map_to_neutral_ones() -> None:
    url = foundry.annotation_of(
        {"type": "url_citation", "url": "https://e.x", "title": "E", "start_index": 3, "end_index": 9}
    )
    assert url == Annotation(kind="url_citation", start_index=3, end_index=9, url="https://e.x", title="E")
    container = foundry.annotation_of(
        {
            "type": "container_file_citation",
            "container_id": "cntr_1",
            "file_id": "cfile_1",
            "filename": "a.png",
            "start_index": 1,
            "end_index": 2,
        }
    )
    assert container is not None and container.container_id == "cntr_1"
    response = {"status": "completed", "output": [approvals.response_item(ApprovalRequest("mcpr_1", "s", "n", "{}"))]}
    assert foundry.outcome(response) == "tool_calls"
    assert foundry.approval_requests(response)[0].id == "mcpr_1"
