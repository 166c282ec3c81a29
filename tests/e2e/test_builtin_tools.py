"""Citations, filtered answers and run-level rate limits from the emulator's built-in-tool agents, through
the official openai client on both backends (`/cite`, `/filter answer`, `/ratelimit`)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.support.bridge import Bridge, running_bridge
from tests.support.servers import ServerThread
from tests.support.spec import validate

BOTH = ["demo-assistant", "demo-agent"]
OWNER_A = "key-of-files-team-a-0123"
OWNER_B = "key-of-files-team-b-0123"


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


def test_a_cited_file_is_relayed_only_to_the_owner_of_the_turn(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    keys = [{"name": "team-a", "key": OWNER_A}, {"name": "team-b", "key": OWNER_B}]
    with running_bridge(emulator.url, redis_url, redis_prefix, keys=keys) as bridge:
        bridge.client(api_key=OWNER_A).chat.completions.create(
            model="demo-assistant", messages=[{"role": "user", "content": "/cite"}]
        )
        bridge.reset_stats()
        url = f"{bridge.url}/v1/files/assistant-cite0/content"
        other = httpx.get(url, headers={"Authorization": f"Bearer {OWNER_B}"}, timeout=10)
        assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
        assert not any("files" in op for op in bridge.emulator_stats())  # never reached Azure
        unknown = httpx.get(
            f"{bridge.url}/v1/files/assistant-none/content", headers={"Authorization": f"Bearer {OWNER_A}"}
        )
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
        owner = httpx.get(url, headers={"Authorization": f"Bearer {OWNER_A}"}, timeout=10)
        # The owner's request goes to the route that produced the file (a file-search source is not
        # a file code interpreter wrote, so Azure's answer there is its 404).
        assert any(op.endswith("/files/assistant-cite0/content") for op in bridge.emulator_stats()), owner.text


@pytest.mark.parametrize("ask", ["/image", "/file report.csv"])
def test_a_code_interpreter_file_is_fetched_by_its_owner_through_the_openai_client(
    emulator: ServerThread, redis_url: str, redis_prefix: str, ask: str
) -> None:
    keys = [{"name": "team-a", "key": OWNER_A}, {"name": "team-b", "key": OWNER_B}]
    with running_bridge(emulator.url, redis_url, redis_prefix, keys=keys) as bridge:
        owner = bridge.client(api_key=OWNER_A)
        completion = owner.chat.completions.create(model="demo-assistant", messages=[{"role": "user", "content": ask}])
        validate(completion.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionResponse")
        files = [
            a.url_citation.model_extra or {}
            for a in completion.choices[0].message.annotations or []
            if (a.url_citation.model_extra or {}).get("file_id")
        ]
        assert files, completion.choices[0].message
        file_id = str(files[0]["file_id"])
        # What Azure itself serves for that id (the emulator's Azure OpenAI files endpoint).
        with httpx.Client(base_url=emulator.url, timeout=10) as azure:
            upstream = azure.get(
                f"/openai/files/{file_id}/content",
                params={"api-version": "2024-05-01-preview"},
                headers={"api-key": "k"},
            )
        assert upstream.status_code == 200 and upstream.content
        relayed = owner.files.content(file_id)
        assert relayed.content == upstream.content
        assert relayed.response.headers["content-type"].split(";")[0] == upstream.headers["content-type"].split(";")[0]
        # A file the agent wrote is never rendered in the bridge's origin: an attachment, not sniffed, and
        # streamed (chunked as Azure sends it, not buffered into one Content-Length body).
        assert relayed.response.headers["content-disposition"] == "attachment"
        assert relayed.response.headers["x-content-type-options"] == "nosniff"
        assert "content-length" not in relayed.response.headers
        with pytest.raises(openai.NotFoundError) as info:
            bridge.client(api_key=OWNER_B).files.content(file_id)
        assert info.value.code == "not_found"
