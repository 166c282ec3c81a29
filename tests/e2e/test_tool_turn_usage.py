"""Usage on turns that end in tool calls, through the official `openai` client, against the figures the
emulator reports for the same run or response (read independently through `openai.AzureOpenAI` and
azure-ai-projects' OpenAI client).

Assistants: a run's `usage` is null until it ends and a step's while it is in progress, so a run waiting
for tool outputs reports only its completed steps. Each turn of a run gives what Azure reported for it
since the previous turn; the turns of a run add up to its final (cumulative) usage. Foundry v2: each
Response has its own usage, function_call endings included.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from azure.ai.projects import AIProjectClient
from azure.core.credentials import AccessToken
from openai import AzureOpenAI

from tests.support import seed
from tests.support.bridge import Bridge
from tests.support.chat import Collected, answer_calls, collect
from tests.support.spec import validate

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

Tokens = tuple[int, int, int]
ZERO: Tokens = (0, 0, 0)


def _tokens(usage: Any) -> Tokens:
    if usage is None:
        return ZERO
    if hasattr(usage, "input_tokens"):
        return (usage.input_tokens, usage.output_tokens, usage.total_tokens)
    return (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


def _sum(figures: list[Tokens]) -> Tokens:
    return (sum(f[0] for f in figures), sum(f[1] for f in figures), sum(f[2] for f in figures))


def _minus(a: Tokens, b: Tokens) -> Tokens:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


class StaticCredential:
    """A TokenCredential that never calls Entra (the emulator's project paths take any bearer token)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("t", int(time.time()) + 3600)


@pytest.fixture
def azure(bridge: Bridge) -> Iterator[AzureOpenAI]:
    with AzureOpenAI(
        azure_endpoint=bridge.emulator_url, api_key="k", api_version="2024-05-01-preview", max_retries=0
    ) as client:
        yield client


@pytest.fixture
def project_openai(bridge: Bridge) -> Iterator[openai.OpenAI]:
    with (
        AIProjectClient(endpoint=f"{bridge.emulator_url}/api/projects/demo", credential=StaticCredential()) as project,
        project.get_openai_client() as client,
    ):
        yield client


# -- one turn through the official client, streamed or not, with the headers it came with -------------------


def _chat(client: openai.OpenAI, model: str, messages: list[dict[str, Any]], *, stream: bool) -> tuple[Collected, Any]:
    kwargs: dict[str, Any] = {"model": model, "messages": messages, "tools": seed.TOOLS}
    if stream:
        raw = client.chat.completions.with_raw_response.create(
            stream=True, stream_options={"include_usage": True}, **kwargs
        )
        chunks = list(raw.parse())
        for chunk in chunks:
            validate(chunk.to_dict(), "CreateChatCompletionStreamResponse")
        reply = collect(chunks)
        assert reply.usage is not None, "include_usage asks for the usage chunk"
        return reply, raw.headers
    raw = client.chat.completions.with_raw_response.create(**kwargs)
    validate(raw.http_response.json(), "CreateChatCompletionResponse")
    completion = raw.parse()
    choice = completion.choices[0]
    reply = Collected(
        text=choice.message.content or "",
        tool_calls=[
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in choice.message.tool_calls or []
        ],
        finish_reason=choice.finish_reason,
        usage=completion.usage,
    )
    return reply, raw.headers


def _respond(client: openai.OpenAI, *, stream: bool, **kwargs: Any) -> tuple[Any, Any]:
    if stream:
        raw = client.responses.with_raw_response.create(stream=True, **kwargs)
        final = None
        for event in raw.parse():
            validate(event.to_dict(), "ResponseStreamEvent")
            if event.type in ("response.completed", "response.incomplete", "response.failed"):
                final = event.response
        assert final is not None
        return final, raw.headers
    raw = client.responses.with_raw_response.create(**kwargs)
    body = raw.http_response.json()
    validate(body, "Response")
    assert body["usage"] is not None
    return raw.parse(), raw.headers


# -- what Azure (the emulator) reports ------------------------------------------------------------------------


def _azure_run(azure: AzureOpenAI, thread_id: str) -> tuple[Any, list[Any]]:
    (run,) = azure.beta.threads.runs.list(thread_id=thread_id).data  # the scenario plays on one run
    steps = list(azure.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id, order="asc"))
    return run, steps


def _azure_so_far(azure: AzureOpenAI, thread_id: str) -> Tokens:
    """The run's usage if it has one (it ended), else what its completed steps report."""
    run, steps = _azure_run(azure, thread_id)
    if run.usage is not None:
        return _tokens(run.usage)
    for step in steps:
        assert (step.usage is None) == (step.status == "in_progress"), step
    return _sum([_tokens(s.usage) for s in steps if s.status == "completed"])


def _check_run(azure: AzureOpenAI, thread_id: str, reported: list[Tokens], expected: list[Tokens]) -> None:
    assert len(reported) == 3, "my_cat_born_date, then get_flights, then the answer"
    assert reported == expected
    # The first turn: the run waits, its only step (the calls) is in progress: Azure has no figure yet.
    assert reported[0] == ZERO
    run, steps = _azure_run(azure, thread_id)
    first_calls = steps[0]
    assert first_calls.type == "tool_calls" and first_calls.usage is not None
    # The second turn carries the tokens of the first call step, completed when its outputs arrived ...
    assert reported[1] == _tokens(first_calls.usage)
    assert min(reported[1]) > 0 and min(reported[2]) > 0
    # ... and the three turns add up to the run's own usage: nothing counted twice, nothing lost.
    assert _sum(reported) == _tokens(run.usage)


# -- Assistants routes ----------------------------------------------------------------------------------------

ASSISTANTS_CASES = [("flights-assistant", False), ("flights-assistant", True), ("poll-flights", False)]
ASSISTANTS_IDS = ["streamed-upstream", "streamed", "polled-upstream"]


@pytest.mark.parametrize(("model", "stream"), ASSISTANTS_CASES, ids=ASSISTANTS_IDS)
def test_chat_tool_turns_carry_what_azure_reported_for_the_run(
    bridge: Bridge, azure: AzureOpenAI, model: str, stream: bool
) -> None:
    client = bridge.client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": seed.QUESTION}]
    reported: list[Tokens] = []
    expected: list[Tokens] = []
    while True:
        reply, headers = _chat(client, model, messages, stream=stream)
        thread_id = headers["x-thread-id"]
        expected.append(_minus(_azure_so_far(azure, thread_id), _sum(reported)))
        reported.append(_tokens(reply.usage))
        if reply.finish_reason != "tool_calls":
            break
        assert len(reported) < 5
        answer_calls(messages, reply)
    assert f"There are {seed.expected_flights()} flights" in reply.text
    _check_run(azure, thread_id, reported, expected)


@pytest.mark.parametrize(("model", "stream"), ASSISTANTS_CASES, ids=ASSISTANTS_IDS)
def test_responses_tool_endings_carry_what_azure_reported_for_the_run(
    bridge: Bridge, azure: AzureOpenAI, model: str, stream: bool
) -> None:
    client = bridge.client()
    kwargs: dict[str, Any] = {"model": model, "input": seed.QUESTION, "tools": seed.RESPONSES_TOOLS}
    reported: list[Tokens] = []
    expected: list[Tokens] = []
    while True:
        response, headers = _respond(client, stream=stream, **kwargs)
        assert response.usage is not None
        thread_id = headers["x-thread-id"]
        expected.append(_minus(_azure_so_far(azure, thread_id), _sum(reported)))
        reported.append(_tokens(response.usage))
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            break
        assert len(reported) < 5
        outputs = [
            {"type": "function_call_output", "call_id": c.call_id, "output": seed.call(c.name, c.arguments)}
            for c in calls
        ]
        kwargs = {"model": model, "previous_response_id": response.id, "input": outputs, "tools": seed.RESPONSES_TOOLS}
    assert f"There are {seed.expected_flights()} flights" in response.output_text
    _check_run(azure, thread_id, reported, expected)


def test_a_turn_after_the_run_ended_starts_counting_again(bridge: Bridge, azure: AzureOpenAI) -> None:
    """The figure kept for a run belongs to that run: the next run's tool-call turn owes nothing to it."""
    client = bridge.client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "/tool my_cat_born_date {}"}]
    first, headers = _chat(client, "demo-assistant", messages, stream=False)
    assert first.finish_reason == "tool_calls"
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [_echo(c) for c in first.tool_calls]},
        *[{"role": "tool", "tool_call_id": c["id"], "content": "42"} for c in first.tool_calls],
    ]
    answer, _ = _chat(client, "demo-assistant", messages, stream=False)
    assert answer.finish_reason == "stop"
    messages += [{"role": "assistant", "content": answer.text}, {"role": "user", "content": "/tool get_flights {}"}]
    again, again_headers = _chat(client, "demo-assistant", messages, stream=True)
    assert again.finish_reason == "tool_calls"
    assert again_headers["x-thread-id"] == headers["x-thread-id"]
    runs = azure.beta.threads.runs.list(thread_id=headers["x-thread-id"], order="asc").data
    assert [r.status for r in runs] == ["completed", "requires_action"]
    assert _tokens(first.usage) == ZERO  # its run waited with no completed step
    assert _tokens(answer.usage) == _tokens(runs[0].usage)  # the whole first run, in its last turn
    assert _tokens(again.usage) == ZERO  # a new run: nothing of the first one carries over


def test_a_polled_turn_that_cannot_read_the_steps_still_hands_out_its_calls(bridge: Bridge, azure: AzureOpenAI) -> None:
    """Reading the usage never fails a turn: what it could not count goes to the run's next turn."""
    client = bridge.client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": seed.QUESTION}]
    first, headers = _chat(client, "poll-flights", messages, stream=False)
    answer_calls(messages, first)
    bridge.fault(path=r"/runs/[^/]+/steps$", method="GET", status=404, count=1)
    second, _ = _chat(client, "poll-flights", messages, stream=False)
    assert second.finish_reason == "tool_calls" and [c["name"] for c in second.tool_calls] == ["get_flights"]
    assert _tokens(second.usage) == ZERO
    answer_calls(messages, second)
    last, _ = _chat(client, "poll-flights", messages, stream=False)
    assert last.finish_reason == "stop"
    run, _ = _azure_run(azure, headers["x-thread-id"])
    assert _sum([_tokens(first.usage), _tokens(last.usage)]) == _tokens(run.usage)


def _echo(call: dict[str, Any]) -> dict[str, Any]:
    return {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}


# -- Foundry v2 routes: every Response carries its own usage --------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_v2_chat_tool_turns_carry_the_responses_usage(
    bridge: Bridge, project_openai: openai.OpenAI, stream: bool
) -> None:
    client = bridge.client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": seed.QUESTION}]
    turns: list[tuple[str | None, Tokens]] = []
    while True:
        reply, headers = _chat(client, "flights-agent", messages, stream=stream)
        upstream = project_openai.responses.retrieve(headers["x-response-id"])
        assert _tokens(reply.usage) == _tokens(upstream.usage)
        turns.append((reply.finish_reason, _tokens(reply.usage)))
        if reply.finish_reason != "tool_calls":
            break
        assert len(turns) < 5
        answer_calls(messages, reply)
    assert [reason for reason, _ in turns] == ["tool_calls", "tool_calls", "stop"]
    assert all(min(tokens) > 0 for _, tokens in turns)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_v2_function_call_endings_carry_the_responses_usage(
    bridge: Bridge, project_openai: openai.OpenAI, stream: bool
) -> None:
    client = bridge.client()
    kwargs: dict[str, Any] = {"model": "flights-agent", "input": seed.QUESTION, "tools": seed.RESPONSES_TOOLS}
    endings: list[str] = []
    while True:
        response, _ = _respond(client, stream=stream, **kwargs)
        upstream = project_openai.responses.retrieve(response.id)
        assert _tokens(response.usage) == _tokens(upstream.usage)
        assert min(_tokens(response.usage)) > 0
        calls = [item for item in response.output if item.type == "function_call"]
        endings.append("function_call" if calls else "message")
        if not calls:
            break
        assert len(endings) < 5
        outputs = [
            {"type": "function_call_output", "call_id": c.call_id, "output": seed.call(c.name, c.arguments)}
            for c in calls
        ]
        kwargs = {
            "model": "flights-agent",
            "previous_response_id": response.id,
            "input": outputs,
            "tools": seed.RESPONSES_TOOLS,
        }
    assert endings == ["function_call", "function_call", "message"]
