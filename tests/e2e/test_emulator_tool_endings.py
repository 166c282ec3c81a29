"""Citations, content-filter endings and run-level rate limits on the emulator, through the official clients
(drivers `/cite`, `/filter prompt`, `/filter answer`, `/ratelimit`: app/emulator/script.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e.test_emulator_agents_classic import _client
from tests.support.servers import ServerThread
from tests.support.spec import validate

DEMO = {"agent_reference": {"type": "agent_reference", "name": "demo-agent"}}
pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")


def _raw(v2: openai.OpenAI, text: str) -> dict[str, Any]:
    """The Response as Azure sent it (the SDK's model fills in fields the wire did not carry)."""
    body: dict[str, Any] = v2.responses.with_raw_response.create(input=text, extra_body=DEMO).http_response.json()
    return body


def _raw_events(v2: openai.OpenAI, text: str) -> list[dict[str, Any]]:
    raw = v2.responses.with_raw_response.create(input=text, stream=True, extra_body=DEMO).http_response
    events = [json.loads(line[6:]) for line in raw.iter_lines() if line.startswith("data: ")]
    for event in events:
        validate(event, "ResponseStreamEvent")
    return events


@pytest.fixture
def aoai(emulator: ServerThread) -> Iterator[openai.AzureOpenAI]:
    with openai.AzureOpenAI(
        azure_endpoint=emulator.url, api_key="k", api_version="2024-05-01-preview", max_retries=0
    ) as client:
        yield client


@pytest.fixture
def v2(emulator: ServerThread) -> Iterator[openai.OpenAI]:
    base = f"{emulator.url}/api/projects/demo/openai/v1"
    with openai.OpenAI(base_url=base, api_key="entra-token", max_retries=0) as client:
        yield client


def _classic_run(aoai: openai.AzureOpenAI, text: str) -> tuple[Any, list[Any]]:
    run = aoai.beta.threads.create_and_run_poll(
        assistant_id="asst_demo", thread={"messages": [{"role": "user", "content": text}]}, poll_interval_ms=20
    )
    messages = list(aoai.beta.threads.messages.list(thread_id=run.thread_id, order="asc"))
    return run, messages


def test_classic_citations_carry_markers_and_annotations(aoai: openai.AzureOpenAI) -> None:
    run, messages = _classic_run(aoai, "/cite")
    assert run.status == "completed"
    text = messages[-1].content[0].text
    assert "【4:0†source】" in text.value and "【4:1†source】" in text.value
    kinds = [a.type for a in text.annotations]
    assert kinds == ["file_citation", "url_citation"]
    file_ann = text.annotations[0]
    assert text.value[file_ann.start_index : file_ann.end_index] == file_ann.text == "【4:0†source】"
    assert file_ann.file_citation.file_id == "assistant-cite0"  # type: ignore[union-attr]
    # Streamed, each annotation arrives in the delta that carries its marker.
    with aoai.beta.threads.create_and_run_stream(
        assistant_id="asst_demo", thread={"messages": [{"role": "user", "content": "/cite"}]}
    ) as stream:
        deltas = [e.data for e in stream if e.event == "thread.message.delta"]
    annotated = [d.delta.content[0].text for d in deltas if d.delta.content[0].text.annotations]  # type: ignore[union-attr]
    assert [t.value for t in annotated] == ["【4:0†source】", "【4:1†source】"]
    assert [t.annotations[0].index for t in annotated] == [0, 1]


def test_v2_citations_as_output_text_annotations(v2: openai.OpenAI) -> None:
    response = _raw(v2, "/cite")
    validate(response, "Response")
    annotations = response["output"][0]["content"][0]["annotations"]
    assert [a["type"] for a in annotations] == ["file_citation", "url_citation"]
    assert annotations[1]["url"] == "https://example.com/cited"
    added = [e for e in _raw_events(v2, "/cite") if e["type"] == "response.output_text.annotation.added"]
    assert [(e["annotation_index"], e["annotation"]) for e in added] == list(enumerate(annotations))
    parsed = v2.responses.create(input="/cite", extra_body=DEMO)
    assert parsed.output[0].content[0].annotations[0].type == "file_citation"  # type: ignore[union-attr]


def test_a_filtered_prompt_is_azures_400_on_both_backends(aoai: openai.AzureOpenAI, v2: openai.OpenAI) -> None:
    for call in (
        lambda: v2.responses.create(input="/filter prompt", extra_body=DEMO),
        lambda: aoai.beta.threads.create_and_run(
            assistant_id="asst_demo", thread={"messages": [{"role": "user", "content": "/filter prompt"}]}
        ),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            call()
        body: Any = refused.value.body
        assert (refused.value.code, body["param"]) == ("content_filter", "prompt")
        assert body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
        assert body["innererror"]["content_filter_result"]["violence"] == {"filtered": True, "severity": "medium"}


def test_a_filtered_answer_ends_incomplete_with_content_filter(aoai: openai.AzureOpenAI, v2: openai.OpenAI) -> None:
    run, messages = _classic_run(aoai, "/filter answer")
    assert (run.status, run.incomplete_details.reason) == ("incomplete", "content_filter")  # type: ignore[union-attr]
    assert messages[-1].incomplete_details.reason == "content_filter"  # type: ignore[union-attr]
    response = v2.responses.create(input="/filter answer", extra_body=DEMO)
    assert (response.status, response.incomplete_details.reason) == ("incomplete", "content_filter")  # type: ignore[union-attr]
    validate(_raw(v2, "/filter answer"), "Response")
    assert _raw_events(v2, "/filter answer")[-1]["type"] == "response.incomplete"


def test_a_rate_limited_run_fails_with_azures_message(
    aoai: openai.AzureOpenAI, v2: openai.OpenAI, emulator: ServerThread
) -> None:
    """danny-avila/LibreChat#6728: `last_error.code: rate_limit_exceeded`, "Try again in N seconds"."""
    run, _ = _classic_run(aoai, "/ratelimit")
    assert run.status == "failed"
    assert (run.last_error.code, run.last_error.message) == (  # type: ignore[union-attr]
        "rate_limit_exceeded",
        "Rate limit is exceeded. Try again in 20 seconds.",
    )
    with _client(emulator.url) as agents:
        thread = agents.threads.create()
        agents.messages.create(thread_id=thread.id, role="user", content="/ratelimit")
        classic = agents.runs.create_and_process(thread_id=thread.id, agent_id="asst_demo", polling_interval=0.05)
        assert classic.last_error["code"] == "rate_limit_exceeded"
    failed = v2.responses.create(input="/ratelimit", extra_body=DEMO)
    assert (failed.status, failed.error.code) == ("failed", "rate_limit_exceeded")  # type: ignore[union-attr]
    events = _raw_events(v2, "/ratelimit")
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["code"] == "rate_limit_exceeded"
    assert events[-1]["response"]["error"]["code"] == "rate_limit_exceeded"
