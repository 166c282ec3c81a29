"""What clients send and expect back: text parts, empty content, echoed fields, parameter warnings
and text that cannot be encoded. The official `openai` client -> bridge -> emulator."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import pytest

from app.core import params
from tests.support.bridge import Bridge
from tests.support.spec import validate

WARNING = "x-agent-bridge-warning"


def _thread_messages(bridge: Bridge, thread_id: str) -> list[dict[str, Any]]:
    """The thread's messages as Azure lists them (`GET /threads/{id}/messages`, oldest first)."""
    with bridge.emulator() as c:
        response = c.get(
            f"/openai/threads/{thread_id}/messages",
            params={"api-version": "2024-05-01-preview", "order": "asc"},
            headers={"api-key": "k"},
        )
        response.raise_for_status()
        messages: list[dict[str, Any]] = response.json()["data"]
        return messages


def _texts(message: dict[str, Any]) -> list[str]:
    return [part["text"]["value"] for part in message["content"] if part["type"] == "text"]


def _created_thread(bridge: Bridge) -> dict[str, Any]:
    (body,) = [
        r["body"] for r in bridge.emulator_requests() if r["method"] == "POST" and r["path"].endswith("/threads/runs")
    ]
    thread: dict[str, Any] = body["thread"]
    return thread


def _responses_bodies(bridge: Bridge) -> list[dict[str, Any]]:
    return [r["body"] for r in bridge.emulator_requests() if r["method"] == "POST" and r["path"].endswith("/responses")]


# -- text parts and empty content -----------------------------------------------------------------


@pytest.mark.parametrize("model", ["demo-assistant", "classic-assistant"])
def test_text_parts_reach_the_thread_as_parts(bridge: Bridge, model: str) -> None:
    raw = bridge.client().chat.completions.with_raw_response.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}],
            }
        ],
    )
    validate(raw.http_response.json(), "CreateChatCompletionResponse")
    (user, _reply) = _thread_messages(bridge, raw.headers["x-thread-id"])
    assert _texts(user) == ["part one", "part two"]
    assert _created_thread(bridge)["messages"][0]["content"] == [
        {"type": "text", "text": "part one"},
        {"type": "text", "text": "part two"},
    ]


def test_text_parts_reach_foundry_as_input_parts(bridge: Bridge) -> None:
    bridge.client().chat.completions.create(
        model="demo-agent",
        messages=[{"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}],
    )
    (body,) = _responses_bodies(bridge)
    assert body["input"] == [
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "one"}, {"type": "input_text", "text": "two"}],
        }
    ]


def test_system_text_parts_are_joined_with_a_newline(bridge: Bridge) -> None:
    raw = bridge.client().chat.completions.with_raw_response.create(
        model="demo-assistant",
        messages=[
            {
                "role": "system",
                "content": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            },
            {"role": "user", "content": "hi"},
        ],
    )
    assert raw.parse().choices[0].message.content
    (run_body,) = [
        r["body"] for r in bridge.emulator_requests() if r["method"] == "POST" and r["path"].endswith("/threads/runs")
    ]
    assert run_body["instructions"].endswith("Be brief.\nBe kind.")


@pytest.mark.parametrize("model", ["demo-assistant", "poll-assistant"])
def test_empty_content_reaches_the_thread_empty(bridge: Bridge, model: str) -> None:
    raw = bridge.client().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": ""}]
    )
    validate(raw.http_response.json(), "CreateChatCompletionResponse")
    user = _thread_messages(bridge, raw.headers["x-thread-id"])[0]
    assert _texts(user) == [""]
    assert _created_thread(bridge)["messages"][0]["content"] == ""
    assert "(empty)" not in json.dumps(bridge.emulator_requests())


# -- echoed fields ---------------------------------------------------------------------------------


def test_a_response_echoes_what_was_sent(bridge: Bridge) -> None:
    client = bridge.client()
    sent: dict[str, Any] = {
        "model": "demo-assistant",
        "input": "hello",
        "instructions": "Be brief.",
        "temperature": 0.3,
        "top_p": 0.8,
        "tool_choice": "none",
        "parallel_tool_calls": False,
        "max_output_tokens": 77,
        "metadata": {"k": "v"},
        "truncation": "auto",
        "store": False,
        "user": "end-user-1",
        "safety_identifier": "hashed-1",
        "prompt_cache_key": "cache-1",
    }
    raw = client.responses.with_raw_response.create(**sent)
    body = raw.http_response.json()
    validate(body, "Response")
    for key, value in sent.items():
        if key != "input":
            assert body[key] == value, key
    assert body["background"] is False
    streamed = client.responses.create(stream=True, **sent)
    events = list(streamed)
    final = events[-1].response.model_dump(mode="json")
    for key, value in sent.items():
        if key != "input":
            assert final[key] == value, key


def test_a_response_maps_text_format_to_the_run(bridge: Bridge) -> None:
    fmt = {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}
    body = bridge.client().responses.create(model="demo-assistant", input="hi", text={"format": fmt})
    assert body.text.format is not None and body.text.format.type == "json_schema"
    (run_body,) = [
        r["body"] for r in bridge.emulator_requests() if r["method"] == "POST" and r["path"].endswith("/threads/runs")
    ]
    assert run_body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }


# -- parameters the route cannot honour ------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_ignored_chat_parameters_are_named_in_the_warning_header(bridge: Bridge, stream: bool) -> None:
    client = bridge.client()
    # A handler on the access logger itself: the app's logging set-up may stop propagation to root.
    access = logging.getLogger("agent_bridge.access")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    access.addHandler(handler)
    previous = access.level
    access.setLevel(logging.INFO)
    try:
        raw = _warned_turn(client, stream)
        body_text = _drain(raw, stream)
        # The access line is written when the response has gone out, so it may trail the body.
        deadline = time.monotonic() + 5
        while not any(r.__dict__.get("endpoint") for r in records) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        access.removeHandler(handler)
        access.setLevel(previous)
    assert body_text == "Echo: hi"
    warning = raw.headers[WARNING]
    warned = [part.split(" ", 1)[0] for part in warning.split("; ")]
    assert warned == [
        "logprobs",
        "top_logprobs",
        "seed",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "functions",
        "function_call",
        "service_tier",
    ]
    assert warning.isascii()
    (line,) = [r for r in records if r.__dict__.get("endpoint") == "/v1/chat/completions"]
    assert [w.split(" ", 1)[0] for w in line.__dict__["warnings"]] == warned


def _drain(raw: Any, stream: bool) -> str:
    if stream:
        return "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    return str(raw.parse().choices[0].message.content)


def _warned_turn(client: Any, stream: bool) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="demo-assistant",
        messages=[{"role": "user", "content": "hi"}],
        seed=7,
        stop=["x"],
        logprobs=True,
        top_logprobs=2,
        presence_penalty=0.5,
        frequency_penalty=0.1,
        logit_bias={"50256": -100},
        functions=[{"name": "f", "parameters": {"type": "object", "properties": {}}}],
        function_call="auto",
        service_tier="flex",
        n=1,
        temperature=0.2,
        stream=stream,
    )


def test_honoured_or_harmless_parameters_get_no_warning(bridge: Bridge) -> None:
    raw = bridge.client().chat.completions.with_raw_response.create(
        model="demo-assistant",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.2,
        top_p=0.9,
        logprobs=False,
        n=1,
        presence_penalty=0,
        max_tokens=50,
    )
    assert WARNING not in raw.headers


@pytest.mark.parametrize("stream", [False, True])
def test_foundry_v2_chat_drops_what_azure_refuses_and_says_so(bridge: Bridge, stream: bool) -> None:
    raw = bridge.client().chat.completions.with_raw_response.create(
        model="demo-agent",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.2,
        top_p=0.9,
        tool_choice="none",
        parallel_tool_calls=False,
        max_tokens=40,
        stream=stream,
    )
    warning = raw.headers[WARNING]
    assert [part.split(" ", 2)[:2] for part in warning.split("; ")] == [
        ["tool_choice", "dropped:"],
        ["parallel_tool_calls", "dropped:"],
        ["temperature", "dropped:"],
        ["top_p", "dropped:"],
    ]
    if stream:
        list(raw.parse())
    else:
        assert raw.parse().choices[0].message.content == "Echo: hi"
    (body,) = _responses_bodies(bridge)
    assert not set(params.V2_REFUSED) & set(body)
    assert body["max_output_tokens"] == 40 and "agent_reference" in body


@pytest.mark.parametrize("stream", [False, True])
def test_foundry_v2_responses_drop_what_azure_refuses_and_say_so(bridge: Bridge, stream: bool) -> None:
    raw = bridge.client().responses.with_raw_response.create(
        model="demo-agent", input="hi", temperature=0.2, top_p=0.5, stream=stream
    )
    assert [part.split(" ", 2)[:2] for part in raw.headers[WARNING].split("; ")] == [
        ["temperature", "dropped:"],
        ["top_p", "dropped:"],
    ]
    if stream:
        assert list(raw.parse())[-1].type == "response.completed"
    else:
        validate(raw.http_response.json(), "Response")
    (body,) = _responses_bodies(bridge)
    assert "temperature" not in body and "top_p" not in body


def test_responses_on_assistants_warn_about_what_runs_cannot_do(bridge: Bridge) -> None:
    raw = bridge.client().responses.with_raw_response.create(
        model="demo-assistant",
        input="hi",
        truncation="disabled",
        top_logprobs=3,
        include=["reasoning.encrypted_content"],
    )
    warned = [part.split(" ", 1)[0] for part in raw.headers[WARNING].split("; ")]
    assert warned == ["truncation", "include", "top_logprobs"]
    assert raw.http_response.json()["truncation"] == "disabled"


def test_the_docs_table_is_the_code_s_table() -> None:
    from pathlib import Path

    api = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    assert params.table_markdown() in api


# -- text that cannot be encoded -------------------------------------------------------------------


def _raw(bridge: Bridge, path: str, body: str) -> httpx.Response:
    # The official client cannot send a lone surrogate (it encodes its JSON as UTF-8 first), so the
    # body is written by hand, the way a client with a broken string would send it.
    with bridge.http() as http:
        return http.post(path, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("stream", ["false", "true"])
@pytest.mark.parametrize("model", ["demo-assistant", "demo-agent"])
@pytest.mark.parametrize(
    ("content", "param"),
    [
        ('"broken \\ud800 text"', "messages[0].content"),
        ('[{"type": "text", "text": "ok"}, {"type": "text", "text": "\\udfff"}]', "messages[0].content[1].text"),
    ],
)
def test_a_lone_surrogate_in_chat_is_a_400_naming_the_field(
    bridge: Bridge, stream: str, model: str, content: str, param: str
) -> None:
    body = f'{{"model": "{model}", "stream": {stream}, "messages": [{{"role": "user", "content": {content}}}]}}'
    response = _raw(bridge, "/v1/chat/completions", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["code"] == "invalid_text" and error["type"] == "invalid_request_error"
    assert param in error["message"]
    assert bridge.emulator_requests() == []


@pytest.mark.parametrize("stream", ["false", "true"])
@pytest.mark.parametrize("model", ["demo-assistant", "demo-agent"])
@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ('"input": "\\ud83d alone"', "input"),
        (
            '"input": [{"role": "user", "content": [{"type": "input_text", "text": "\\udc00"}]}]',
            "input[0].content[0].text",
        ),
        ('"input": "fine", "metadata": {"k": "\\ud800"}', "metadata.k"),
    ],
)
def test_a_lone_surrogate_in_responses_is_a_400_naming_the_field(
    bridge: Bridge, stream: str, model: str, fields: str, param: str
) -> None:
    response = _raw(bridge, "/v1/responses", f'{{"model": "{model}", "stream": {stream}, {fields}}}')
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["code"] == "invalid_text"
    assert bridge.emulator_requests() == []


def test_a_valid_surrogate_pair_is_text(bridge: Bridge) -> None:
    body = '{"model": "demo-assistant", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    response = _raw(bridge, "/v1/chat/completions", body)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Echo: \U0001f600"
