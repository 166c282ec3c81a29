"""Citations, filtered answers and run-level rate limits from the emulator's built-in-tool agents, through
the official openai client on both backends (`/cite`, `/filter answer`, `/ratelimit`)."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.support.bridge import Bridge
from tests.support.spec import validate

BOTH = ["demo-assistant", "demo-agent"]


@pytest.mark.parametrize("model", BOTH)
@pytest.mark.parametrize("stream", [False, True])
def test_chat_citations_are_numbered_with_annotations(bridge: Bridge, model: str, stream: bool) -> None:
    client = bridge.client()
    messages = [{"role": "user", "content": "/cite"}]
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        raw: list[dict[str, Any]] = [
            a for c in chunks if c.choices for a in (c.choices[0].delta.model_extra or {}).get("annotations") or []
        ]
        for chunk in chunks:
            validate(chunk.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionStreamResponse")
    else:
        completion = client.chat.completions.create(model=model, messages=messages)
        validate(completion.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionResponse")
        text = completion.choices[0].message.content or ""
        raw = [a.model_dump(mode="json") for a in completion.choices[0].message.annotations or []]
    assert "【" not in text and "[1]" in text and "[2]" in text
    assert {a["type"] for a in raw} == {"url_citation"}
    for a in raw:
        span = text[a["url_citation"]["start_index"] : a["url_citation"]["end_index"]]
        assert span in ("[1]", "[2]")


@pytest.mark.parametrize("model", BOTH)
@pytest.mark.parametrize("stream", [False, True])
def test_responses_citations_on_both_backends(bridge: Bridge, model: str, stream: bool) -> None:
    client = bridge.client()
    if stream:
        events = [
            e.model_dump(mode="json", exclude_unset=True)
            for e in client.responses.create(model=model, input="/cite", stream=True)
        ]
        for event in events:
            validate(event, "ResponseStreamEvent")
        assert any(e["type"] == "response.output_text.annotation.added" for e in events)
        response = events[-1]["response"]
    else:
        response = client.responses.create(model=model, input="/cite").model_dump(mode="json", exclude_unset=True)
    validate(response, "Response")
    part = response["output"][0]["content"][0]
    assert {a["type"] for a in part["annotations"]} == {"file_citation", "url_citation"}


@pytest.mark.parametrize("model", BOTH)
def test_a_filtered_answer_is_content_filter_not_length(bridge: Bridge, model: str) -> None:
    client = bridge.client()
    completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "/filter answer"}])
    assert completion.choices[0].finish_reason == "content_filter"
    response = client.responses.create(model=model, input="/filter answer")
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "content_filter"


@pytest.mark.parametrize("model", BOTH)
def test_a_run_level_rate_limit_is_429_with_azures_wait(bridge: Bridge, model: str) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        bridge.client().chat.completions.create(model=model, messages=[{"role": "user", "content": "/ratelimit"}])
    assert info.value.response.headers["retry-after"] == "20"
