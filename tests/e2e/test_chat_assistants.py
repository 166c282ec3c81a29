"""Chat Completions on Assistants agents, with the official `openai` client -> bridge -> emulator."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from app import __version__
from tests.support import seed
from tests.support.bridge import Bridge
from tests.support.chat import answered, raw_sse, run_seed, turn
from tests.support.spec import validate


def _run(bridge: Bridge, thread_id: str, run_id: str) -> dict[str, Any]:
    with bridge.emulator() as c:
        response = c.get(
            f"/openai/threads/{thread_id}/runs/{run_id}",
            params={"api-version": "2024-05-01-preview"},
            headers={"api-key": "k"},
        )
        response.raise_for_status()
        run: dict[str, Any] = response.json()
        return run


def _thread(bridge: Bridge, thread_id: str) -> dict[str, Any]:
    return next(t for t in bridge.emulator_threads() if t["id"] == thread_id)


@pytest.mark.parametrize("model", ["demo-assistant", "classic-assistant", "poll-assistant"])
def test_plain_reply_matches_the_run(bridge: Bridge, model: str) -> None:
    client = bridge.client()
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
    )
    completion = raw.parse()
    body = raw.http_response.json()
    validate(body, "CreateChatCompletionResponse")
    assert completion.choices[0].message.content == "Echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == model
    thread_id = raw.headers["x-thread-id"]
    assert raw.headers["x-request-id"]
    assert float(raw.headers["x-agent-bridge-overhead-ms"]) >= 0
    thread = _thread(bridge, thread_id)
    (run,) = thread["runs"]
    upstream = _run(bridge, thread_id, run["id"])
    assert upstream["status"] == "completed"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == upstream["usage"]["prompt_tokens"]
    assert completion.usage.completion_tokens == upstream["usage"]["completion_tokens"]
    assert completion.usage.total_tokens == upstream["usage"]["total_tokens"]
    # The system message is the run's additional instructions, not a thread message.
    assert [m["role"] for m in thread["messages"]] == ["user", "assistant"]
    assert upstream["instructions"].endswith("Be brief.")


@pytest.mark.parametrize("model", ["demo-assistant", "demo-agent"])
def test_streamed_reply_with_usage_validates_chunk_by_chunk(bridge: Bridge, model: str) -> None:
    payloads = raw_sse(
        f"{bridge.url}/v1/chat/completions",
        {
            "model": model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "one two three four"}],
        },
    )
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Echo: one two three four"
    deltas = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(deltas) > 2, "the reply should arrive in several deltas"
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finish == ["stop"]
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    if model == "demo-agent":
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
        return
    thread = bridge.emulator_threads()[-1]
    upstream = _run(bridge, thread["id"], thread["runs"][0]["id"])
    assert usage == {k: upstream["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def test_streamed_with_the_sdk(bridge: Bridge) -> None:
    reply = turn(
        bridge.client(),
        stream=True,
        model="demo-assistant",
        messages=[{"role": "user", "content": "stream me"}],
        stream_options={"include_usage": True},
    )
    assert reply.text == "Echo: stream me"
    assert reply.finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens > 0


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", ["flights-assistant", "classic-flights", "poll-flights"])
def test_seed_scenario_end_to_end(bridge: Bridge, model: str, stream: bool) -> None:
    answer, history, rounds = run_seed(bridge.client(), model, stream=stream)
    assert rounds == 2
    match = re.search(r"There are (\d+) flights", answer.text)
    assert match, answer.text
    assert int(match.group(1)) == seed.expected_flights()
    # One thread for the whole scenario, and both tool rounds answered on the same run.
    (thread,) = bridge.emulator_threads()
    assert len(thread["runs"]) == 1
    assert thread["runs"][0]["status"] == "completed"
    tool_messages = [m for m in history if m["role"] == "tool"]
    assert len(tool_messages) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_parallel_tool_calls_answered_in_one_submit(bridge: Bridge, stream: bool) -> None:
    client = bridge.client()
    tools = [
        {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "mul", "parameters": {"type": "object", "properties": {}}}},
    ]
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": '/tool add {"a": 1, "b": 2}\n/tool mul {"a": 3, "b": 4}'}
    ]
    first = turn(client, stream=stream, model="demo-assistant", messages=messages, tools=tools)
    assert first.finish_reason == "tool_calls"
    assert [c["name"] for c in first.tool_calls] == ["add", "mul"]
    assert json.loads(first.tool_calls[1]["arguments"]) == {"a": 3, "b": 4}
    messages += answered(first, "3", "12")
    bridge.reset_stats()
    final = turn(client, stream=stream, model="demo-assistant", messages=messages, tools=tools)
    assert final.finish_reason == "stop"
    assert final.text == "Tool add returned: 3\nTool mul returned: 12"
    stats = bridge.emulator_stats()
    assert stats == {"POST /openai/threads/{thread_id}/runs/{run_id}/submit_tool_outputs": 1}


def test_request_tools_replace_the_agent_function_tools(bridge: Bridge) -> None:
    """flights-demo has the seed's tools; a request with other tools makes those the run's tools."""
    client = bridge.client()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    raw = client.chat.completions.with_raw_response.create(
        model="flights-assistant", messages=[{"role": "user", "content": "/tool lookup {}"}], tools=tools
    )
    assert raw.parse().choices[0].finish_reason == "tool_calls"
    thread = _thread(bridge, raw.headers["x-thread-id"])
    run = _run(bridge, thread["id"], thread["runs"][0]["id"])
    assert [t["function"]["name"] for t in run["tools"] if t["type"] == "function"] == ["lookup"]


def _chat(bridge: Bridge, messages: list[dict[str, Any]], **kwargs: Any) -> tuple[str, str]:
    raw = bridge.client().chat.completions.with_raw_response.create(model="demo-assistant", messages=messages, **kwargs)
    return raw.parse().choices[0].message.content or "", raw.headers["x-thread-id"]


def test_five_turns_resending_history_make_one_thread(bridge: Bridge) -> None:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are terse."}]
    threads = set()
    bridge.reset_stats()
    for n in range(5):
        messages.append({"role": "user", "content": f"message number {n}"})
        reply, thread_id = _chat(bridge, messages)
        assert reply == f"Echo: message number {n}"
        threads.add(thread_id)
        messages.append({"role": "assistant", "content": reply})
    assert len(threads) == 1
    (thread,) = bridge.emulator_threads()
    roles = [m["role"] for m in thread["messages"]]
    assert roles.count("user") == 5 and roles.count("assistant") == 5
    assert [m["text"] for m in thread["messages"] if m["role"] == "user"] == [f"message number {n}" for n in range(5)]
    # Upstream cost: the first turn creates the thread and its run in one request (plus, because of the
    # system prompt, one read of the agent's instructions, cached per route); each follow-up is one.
    assert bridge.emulator_stats() == {
        "GET /openai/assistants/{assistant_id}": 1,
        "POST /openai/threads/runs": 1,
        "POST /openai/threads/{thread_id}/runs": 4,
    }
    messages[-1:] = []
    bridge.reset_stats()
    _chat(bridge, [messages[0], {"role": "user", "content": "a second conversation"}])
    assert bridge.emulator_stats() == {"POST /openai/threads/runs": 1}


def test_sdk_differences_in_the_echoed_history_still_match(bridge: Bridge) -> None:
    _, first = _chat(bridge, [{"role": "user", "content": "hi"}])
    # The client echoes the reply as text parts instead of a string: the same conversation.
    reply, second = _chat(
        bridge,
        [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Echo: hi"}]},
            {"role": "user", "content": "again"},
        ],
    )
    assert reply == "Echo: again"
    assert first == second


def test_editing_an_earlier_message_starts_a_new_thread(bridge: Bridge) -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "first"}]
    reply, t1 = _chat(bridge, history)
    history += [{"role": "assistant", "content": reply}, {"role": "user", "content": "second"}]
    _, t2 = _chat(bridge, history)
    assert t1 == t2
    edited = [{"role": "user", "content": "first, edited"}, *history[1:]]
    _, t3 = _chat(bridge, edited)
    assert t3 != t1
    new_thread = _thread(bridge, t3)
    # The new thread is seeded with the whole edited history.
    assert [m["text"] for m in new_thread["messages"]][:3] == ["first, edited", "Echo: first", "second"]


def test_different_system_or_developer_text_never_continues_another_end_users_thread(bridge: Bridge) -> None:
    """One key, two end users whose apps differ only in their system (or developer) prompt, with the
    same visible history: each continues its own thread, never the other's (and its hidden tool outputs)."""
    history = [{"role": "user", "content": "what do you know?"}]
    reply, alice = _chat(bridge, [{"role": "system", "content": "Tenant Alice."}, *history])
    follow = [*history, {"role": "assistant", "content": reply}, {"role": "user", "content": "tell me"}]
    for instructions in ({"role": "system", "content": "Tenant Bob."}, {"role": "developer", "content": "Tenant Bob."}):
        _, other = _chat(bridge, [instructions, *follow])
        assert other != alice
    _, again = _chat(bridge, [{"role": "system", "content": "Tenant Alice."}, *follow])
    assert again == alice


def test_conversation_id_header_with_only_the_newest_message(bridge: Bridge) -> None:
    headers = {"X-Conversation-Id": "support-ticket-42"}
    threads = set()
    bridge.reset_stats()
    for n in range(3):
        reply, thread_id = _chat(bridge, [{"role": "user", "content": f"only new {n}"}], extra_headers=headers)
        assert reply == f"Echo: only new {n}"
        threads.add(thread_id)
    assert len(threads) == 1
    (thread,) = bridge.emulator_threads()
    assert [m["role"] for m in thread["messages"]] == ["user", "assistant"] * 3
    assert bridge.emulator_stats() == {"POST /openai/threads/runs": 1, "POST /openai/threads/{thread_id}/runs": 2}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_upstream_cost_per_turn_and_no_polling(bridge: Bridge, stream: bool) -> None:
    client = bridge.client()
    bridge.reset_stats()
    turn(
        client, stream=stream, model="flights-assistant", messages=[{"role": "user", "content": "hi"}], tools=seed.TOOLS
    )
    # Cold: request tools replace only the agent's function tools, so its definition is read once (cached).
    assert bridge.emulator_stats() == {"GET /openai/assistants/{assistant_id}": 1, "POST /openai/threads/runs": 1}
    bridge.reset_stats()
    answer, history, _ = run_seed(client, "flights-assistant", stream=stream)
    stats = bridge.emulator_stats()
    # New conversation: 1 request (thread + run); each of the two tool rounds: 1 submit. No polling.
    assert stats == {
        "POST /openai/threads/runs": 1,
        "POST /openai/threads/{thread_id}/runs/{run_id}/submit_tool_outputs": 2,
    }
    history.append({"role": "assistant", "content": answer.text})
    history.append({"role": "user", "content": "thanks"})
    bridge.reset_stats()
    follow = turn(client, stream=stream, model="flights-assistant", messages=history, tools=seed.TOOLS)
    assert follow.text == "Echo: thanks"
    assert bridge.emulator_stats() == {"POST /openai/threads/{thread_id}/runs": 1}


def test_poll_mode_polls_and_gets_the_same_answers(bridge: Bridge) -> None:
    bridge.reset_stats()
    answer, _, rounds = run_seed(bridge.client(), "poll-flights", stream=False)
    assert rounds == 2
    assert f"There are {seed.expected_flights()} flights" in answer.text
    stats = bridge.emulator_stats()
    assert stats["POST /openai/threads/runs"] == 1
    assert stats["POST /openai/threads/{thread_id}/runs/{run_id}/submit_tool_outputs"] == 2
    assert stats["GET /openai/threads/{thread_id}/runs/{run_id}"] >= 3
    assert stats["GET /openai/threads/{thread_id}/messages"] == 1
    # A waiting run has no usage: each tool-call turn reads its completed steps' usage once.
    assert stats["GET /openai/threads/{thread_id}/runs/{run_id}/steps"] == 2


def test_every_thread_is_recorded_with_route_owner_and_times(bridge: Bridge) -> None:
    _, t1 = _chat(bridge, [{"role": "user", "content": "a"}])
    raw = bridge.client().chat.completions.with_raw_response.create(
        model="classic-assistant", messages=[{"role": "user", "content": "b"}]
    )
    t2 = raw.headers["x-thread-id"]
    store = bridge.state.store
    created = {t["id"] for t in bridge.emulator_threads()}
    assert created == {t1, t2}
    for thread_id, route in ((t1, "demo-assistant"), (t2, "classic-assistant")):
        record = bridge.server.call(store.get_thread(thread_id))
        assert record is not None
        assert record.route == route
        assert record.owner == "anonymous"
        assert record.backend == "assistants"
        assert 0 < record.created_at <= record.last_used_at
        assert record.turns == 1
    thread = _thread(bridge, t1)
    assert thread["metadata"]["created_by"] == "agent-bridge"


def test_healthz_readyz_and_models(bridge: Bridge) -> None:
    with bridge.http() as c:
        assert c.get("/healthz").json() == {"status": "ok", "version": __version__}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
    models = bridge.client().models.list()
    assert {m.id for m in models.data} == set(bridge.settings.routes)
    with httpx.Client() as c:
        body = c.get(f"{bridge.url}/v1/models").json()
    validate(body, "ListModelsResponse")


def test_embedded_redis_when_redis_url_is_unset(emulator: Any, redis_prefix: str, caplog: Any) -> None:
    """`make run` without REDIS_URL: the in-process Redis must do everything the real one does."""
    from tests.support.bridge import running_bridge

    with running_bridge(emulator.url, None, redis_prefix) as embedded:
        client = embedded.client()
        history: list[dict[str, Any]] = [{"role": "user", "content": "one"}]
        first, thread_id = _chat(embedded, history)
        history += [{"role": "assistant", "content": first}, {"role": "user", "content": "two"}]
        second, same = _chat(embedded, history)
        assert (first, second) == ("Echo: one", "Echo: two") and same == thread_id
        tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
        called = turn(
            client,
            stream=True,
            model="demo-assistant",
            messages=[{"role": "user", "content": "/tool f {}"}],
            tools=tools,
        )
        assert called.finish_reason == "tool_calls"
    assert "REDIS_URL is not set" in caplog.text
