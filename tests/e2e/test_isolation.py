"""Clients kept apart: key B, knowing anything of key A's conversation, can neither read nor continue it."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.support.bridge import Bridge, running_bridge
from tests.support.chat import answered, turn
from tests.support.servers import ServerThread

A = "key-of-team-a-0123456789"
B = "key-of-team-b-0123456789"
C = "key-of-team-c-0123456789"
KEYS = [
    {"name": "team-a", "key": A},
    {"name": "team-b", "key": B},
    {"name": "team-c", "key": C, "models": ["demo-agent"]},
]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@pytest.fixture
def keyed(emulator: ServerThread, redis_url: str, redis_prefix: str) -> Any:
    with running_bridge(emulator.url, redis_url, redis_prefix, keys=KEYS, threads={"janitor": False}) as bridge:
        yield bridge


def _thread_messages(bridge: Bridge, thread_id: str) -> list[str]:
    thread = next(t for t in bridge.emulator_threads() if t["id"] == thread_id)
    return [m["text"] for m in thread["messages"]]


def test_missing_or_wrong_key_is_401(keyed: Bridge) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-key"}, {"Authorization": f"Basic {A}"}):
        response = httpx.post(
            f"{keyed.url}/v1/chat/completions",
            json={"model": "demo-assistant", "messages": [{"role": "user", "content": "x"}]},
            headers=headers,
        )
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["type"] == "authentication_error"
        assert A not in response.text
    with pytest.raises(openai.AuthenticationError):
        keyed.client(api_key="wrong").models.list()


def test_a_model_the_key_may_not_use_looks_unknown(keyed: Bridge) -> None:
    client = keyed.client(api_key=C)
    assert [m.id for m in client.models.list().data] == ["demo-agent"]
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="demo-assistant", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="demo-assistant", input="x")
    assert client.responses.create(model="demo-agent", input="allowed").output_text == "Echo: allowed"


def test_full_history_of_another_key_starts_a_new_thread(keyed: Bridge) -> None:
    a, b = keyed.client(api_key=A), keyed.client(api_key=B)
    history: list[dict[str, Any]] = [{"role": "user", "content": "secret plan"}]
    raw = a.chat.completions.with_raw_response.create(model="demo-assistant", messages=history)
    a_thread = raw.headers["x-thread-id"]
    history += [{"role": "assistant", "content": "Echo: secret plan"}, {"role": "user", "content": "from B"}]
    raw_b = b.chat.completions.with_raw_response.create(model="demo-assistant", messages=history)
    assert raw_b.headers["x-thread-id"] != a_thread
    assert _thread_messages(keyed, a_thread) == ["secret plan", "Echo: secret plan"]


def test_conversation_id_of_another_key(keyed: Bridge) -> None:
    a, b = keyed.client(api_key=A), keyed.client(api_key=B)
    headers = {"X-Conversation-Id": "shared-name"}
    raw = a.chat.completions.with_raw_response.create(
        model="demo-assistant", messages=[{"role": "user", "content": "mine"}], extra_headers=headers
    )
    raw_b = b.chat.completions.with_raw_response.create(
        model="demo-assistant", messages=[{"role": "user", "content": "theirs"}], extra_headers=headers
    )
    assert raw_b.headers["x-thread-id"] != raw.headers["x-thread-id"]
    assert _thread_messages(keyed, raw.headers["x-thread-id"]) == ["mine", "Echo: mine"]


def test_tool_call_id_of_another_key_is_unknown(keyed: Bridge) -> None:
    a, b = keyed.client(api_key=A), keyed.client(api_key=B)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "/tool lookup {}"}]
    first = turn(a, stream=False, model="demo-assistant", messages=messages, tools=TOOLS)
    messages += answered(first, "stolen answer")
    with pytest.raises(openai.BadRequestError) as info:
        turn(b, stream=False, model="demo-assistant", messages=messages, tools=TOOLS)
    assert info.value.code == "unknown_tool_call_id"
    # A's run still waits for A's answer, which still works.
    done = turn(a, stream=False, model="demo-assistant", messages=messages, tools=TOOLS)
    assert done.text == "Tool lookup returned: stolen answer"


@pytest.mark.parametrize("model", ["demo-assistant", "demo-agent"])
def test_response_ids_of_another_key_are_404(keyed: Bridge, model: str) -> None:
    a, b = keyed.client(api_key=A), keyed.client(api_key=B)
    created = a.responses.create(model=model, input="for A only")
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as info:
        b.responses.create(model=model, input="continue", previous_response_id=created.id)
    assert "previous_response_id" in str(info.value.body)
    assert a.responses.retrieve(created.id).output_text == "Echo: for A only"


def test_foundry_conversation_of_another_key_is_404(keyed: Bridge) -> None:
    """Ownership fails closed: a conversation made outside the bridge is no key's (not the first user's),
    and one made through the bridge is its creator's only."""
    with keyed.emulator() as c:
        outside = c.post(
            "/api/projects/demo/openai/v1/conversations", headers={"Authorization": "Bearer t"}, json={}
        ).json()["id"]
    a, b = keyed.client(api_key=A), keyed.client(api_key=B)
    with pytest.raises(openai.NotFoundError):
        a.responses.create(model="demo-agent", input="first", conversation=outside)
    conversation = a.conversations.create().id
    assert a.responses.create(model="demo-agent", input="first", conversation=conversation).output_text == "Echo: first"
    with pytest.raises(openai.NotFoundError):
        b.responses.create(model="demo-agent", input="peek", conversation=conversation)
    assert a.responses.create(model="demo-agent", input="again", conversation=conversation).output_text == "Echo: again"


def test_thread_ids_are_not_an_api(keyed: Bridge) -> None:
    """Knowing A's thread id gives B nothing: there is no client route that takes a thread id."""
    raw = keyed.client(api_key=A).chat.completions.with_raw_response.create(
        model="demo-assistant", messages=[{"role": "user", "content": "x"}]
    )
    thread_id = raw.headers["x-thread-id"]
    with httpx.Client(base_url=keyed.url, headers={"Authorization": f"Bearer {B}"}) as c:
        assert c.get(f"/admin/threads/{thread_id}").status_code == 403
        assert c.get(f"/v1/threads/{thread_id}").status_code == 404
        assert c.get(f"/v1/responses/{thread_id}").status_code == 404
