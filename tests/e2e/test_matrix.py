"""The request matrix: chat and responses by Assistants and Foundry v2, streamed and not."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import openai
import pytest

from tests.support import seed
from tests.support.bridge import Bridge
from tests.support.chat import run_seed, turn
from tests.support.spec import validate

ASSISTANTS = ("demo-assistant", "flights-assistant")
FOUNDRY = ("demo-agent", "flights-agent")
BACKENDS = {"assistants": ASSISTANTS, "foundry": FOUNDRY}


def respond(client: openai.OpenAI, *, stream: bool, **kwargs: Any) -> Any:
    """A Response, through `responses.stream()` when streamed (its final response)."""
    if stream:
        with client.responses.stream(**kwargs) as events:
            for _ in events:
                pass
            return events.get_final_response()
    return client.responses.create(**kwargs)


def run_seed_responses(client: openai.OpenAI, model: str, *, stream: bool) -> tuple[Any, int]:
    """The seed scenario as a Responses client: function_call items answered through previous_response_id."""
    response = respond(client, stream=stream, model=model, input=seed.QUESTION, tools=seed.RESPONSES_TOOLS)
    rounds = 0
    while calls := [item for item in response.output if item.type == "function_call"]:
        rounds += 1
        assert rounds <= 5
        outputs = [
            {"type": "function_call_output", "call_id": c.call_id, "output": seed.call(c.name, c.arguments)}
            for c in calls
        ]
        response = respond(
            client,
            stream=stream,
            model=model,
            previous_response_id=response.id,
            input=outputs,
            tools=seed.RESPONSES_TOOLS,
        )
    return response, rounds


def _flights(text: str) -> int:
    match = re.search(r"There are (\d+) flights", text)
    assert match, text
    return int(match.group(1))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("backend", ["assistants", "foundry"])
def test_chat_cell(bridge: Bridge, backend: str, stream: bool) -> None:
    demo, flights = BACKENDS[backend]
    client = bridge.client()
    plain = turn(client, stream=stream, model=demo, messages=[{"role": "user", "content": "hello matrix"}])
    assert plain.text == "Echo: hello matrix"
    assert plain.finish_reason == "stop"
    answer, _, rounds = run_seed(client, flights, stream=stream)
    assert rounds == 2
    assert _flights(answer.text) == seed.expected_flights()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("backend", ["assistants", "foundry"])
def test_responses_cell(bridge: Bridge, backend: str, stream: bool) -> None:
    demo, flights = BACKENDS[backend]
    client = bridge.client()
    plain = respond(client, stream=stream, model=demo, input="hello matrix")
    assert plain.output_text == "Echo: hello matrix"
    assert plain.status == "completed"
    assert plain.model == demo
    assert plain.usage is not None and plain.usage.total_tokens > 0
    answer, rounds = run_seed_responses(client, flights, stream=stream)
    assert rounds == 2
    assert _flights(answer.output_text) == seed.expected_flights()


@pytest.mark.parametrize("model", ["demo-assistant", "demo-agent"])
def test_stream_helper_final_response_matches_the_plain_one(bridge: Bridge, model: str) -> None:
    client = bridge.client()
    plain = client.responses.create(model=model, input="same answer please")
    streamed = respond(client, stream=True, model=model, input="same answer please")

    def shape(r: Any) -> Any:
        return (
            [(o.type, [c.text for c in o.content] if o.type == "message" else (o.name, o.arguments)) for o in r.output],
            r.status,
            r.model,
            r.usage.total_tokens,
        )

    assert shape(streamed) == shape(plain)


# A Foundry v2 agent calls only the tools its version declares: there, the flights agent's own.
@pytest.mark.parametrize(("model", "tool"), [("demo-assistant", "f"), ("flights-agent", "get_flights")])
def test_every_response_and_stream_event_validates(bridge: Bridge, model: str, tool: str) -> None:
    with httpx.Client(timeout=30) as c:
        plain = c.post(f"{bridge.url}/v1/responses", json={"model": model, "input": "validate me"})
        assert plain.status_code == 200, plain.text
        validate(plain.json(), "Response")
        calls = c.post(
            f"{bridge.url}/v1/responses",
            json={
                "model": model,
                "input": f'/tool {tool} {{"x": 1}}',
                "tools": [{"type": "function", "name": tool, "parameters": {"type": "object"}}],
            },
        )
        validate(calls.json(), "Response")
        assert calls.json()["output"][0]["type"] == "function_call"
        for body in (
            {"model": model, "input": "stream validate", "stream": True},
            {
                "model": model,
                "input": f"/tool {tool} {{}}",
                "stream": True,
                "tools": [{"type": "function", "name": tool, "parameters": {"type": "object"}}],
            },
        ):
            with c.stream("POST", f"{bridge.url}/v1/responses", json=body) as response:
                assert response.status_code == 200
                events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
            assert [e["sequence_number"] for e in events] == list(range(len(events)))
            for event in events:
                validate(event, "ResponseStreamEvent")
            assert events[0]["type"] == "response.created"
            assert events[-1]["type"] == "response.completed"


def test_one_client_script_works_on_both_backends(bridge: Bridge) -> None:
    """The same code, only the model name differs: moving an agent is a config change."""

    def script(model: str) -> tuple[int, int, str]:
        client = bridge.client()
        answer, _, rounds = run_seed(client, model, stream=True)
        response, response_rounds = run_seed_responses(client, model, stream=False)
        return _flights(answer.text), rounds + response_rounds, response.output_text

    assistants = script("flights-assistant")
    foundry = script("flights-agent")
    assert assistants == foundry
    assert assistants[0] == seed.expected_flights()


def test_foundry_follow_up_costs_one_request_and_sends_only_new_items(bridge: Bridge) -> None:
    client = bridge.client()
    first = client.responses.create(model="demo-agent", input="first")
    bridge.reset_stats()
    second = client.responses.create(model="demo-agent", input="second", previous_response_id=first.id)
    assert second.output_text == "Echo: second"
    assert bridge.emulator_stats() == {"POST /api/projects/{project}/openai/v1/responses": 1}
    history: list[dict[str, Any]] = [{"role": "user", "content": "one"}]
    reply = turn(client, stream=False, model="demo-agent", messages=history)
    history += [{"role": "assistant", "content": reply.text}, {"role": "user", "content": "two"}]
    bridge.reset_stats()
    again = turn(client, stream=True, model="demo-agent", messages=history)
    assert again.text == "Echo: two"
    with bridge.emulator() as c:
        stats = c.get("/_emulator/stats").json()
    assert stats["by_operation"] == {"POST /api/projects/{project}/openai/v1/responses": 1}
    sent = stats["requests"][-1]["body"]
    assert sent["previous_response_id"]
    assert [item["content"] for item in sent["input"]] == ["two"]


@pytest.mark.parametrize(
    "extra",
    [
        {"agent_reference": {"type": "agent_reference", "name": "flights-demo", "version": "1"}},
        {"agent": {"type": "agent_reference", "name": "flights-demo"}},
        {"assistant_id": "asst_flights"},
    ],
)
@pytest.mark.parametrize("model", ["demo-assistant", "demo-agent"])
def test_callers_cannot_redirect_to_another_agent(bridge: Bridge, model: str, extra: dict[str, Any]) -> None:
    client = bridge.client()
    response = client.responses.create(model=model, input=seed.QUESTION, extra_body=extra)
    assert response.output_text == f"Echo: {seed.QUESTION}"
    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": seed.QUESTION}], extra_body=extra
    )
    assert chat.choices[0].message.content == f"Echo: {seed.QUESTION}"


@pytest.mark.parametrize("model", ["demo-assistant", "demo-agent"])
def test_get_and_delete_responses(bridge: Bridge, model: str) -> None:
    client = bridge.client()
    created = client.responses.create(model=model, input="keep me")
    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == "Echo: keep me"
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=model, input="x", previous_response_id=created.id)


@pytest.mark.parametrize("model", ["demo-assistant", "demo-agent"])
def test_responses_errors(bridge: Bridge, model: str) -> None:
    client = bridge.client()
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="nope", input="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=model, input="x", previous_response_id="resp_unknown")
    if model == "demo-assistant":
        # Foundry routes pass the body through: there, an empty input is the agent service's call.
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model=model, input=[])
    failed = httpx.post(f"{bridge.url}/v1/responses", json={"model": model, "input": "/fail server_error"}, timeout=30)
    assert failed.status_code == 502
    assert failed.json()["error"]["code"] == "server_error"


@pytest.mark.parametrize("model", ["demo-assistant", "demo-agent"])
def test_a_failure_after_the_stream_began_is_an_error_event(bridge: Bridge, model: str) -> None:
    with (
        httpx.Client(timeout=30) as c,
        c.stream(
            "POST", f"{bridge.url}/v1/responses", json={"model": model, "input": "/fail server_error", "stream": True}
        ) as response,
    ):
        assert response.status_code == 200
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert events[0]["type"] == "response.created"
    for event in events:
        validate(event, "ResponseStreamEvent")
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] in ("error", "response.failed")
    assert any(e["type"] == "error" or e.get("response", {}).get("status") == "failed" for e in events)


def test_responses_clients_resending_their_input_keep_one_thread(bridge: Bridge) -> None:
    """Without previous_response_id, a Responses client that resends everything is followed like a chat client."""
    client = bridge.client()
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    history: list[Any] = [{"role": "user", "content": "first"}]
    first = client.responses.create(model="demo-assistant", input=history, tools=tools)
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"role": "user", "content": "/tool lookup {}"})
    called = client.responses.create(model="demo-assistant", input=history, tools=tools)
    call = called.output[0]
    assert call.type == "function_call"
    history += [item.model_dump(exclude_none=True) for item in called.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "found"})
    answered = client.responses.create(model="demo-assistant", input=history, tools=tools)
    assert answered.output_text == "Tool lookup returned: found"
    history += [item.model_dump(exclude_none=True) for item in answered.output]
    history.append({"role": "user", "content": "last"})
    bridge.reset_stats()
    last = client.responses.create(model="demo-assistant", input=history, tools=tools)
    assert last.output_text == "Echo: last"
    assert bridge.emulator_stats() == {"POST /openai/threads/{thread_id}/runs": 1}
    (thread,) = bridge.emulator_threads()
    assert [m["text"] for m in thread["messages"] if m["role"] == "user"] == ["first", "/tool lookup {}", "last"]
