"""Agent-endpoint routes (`agent.endpoint_scoped`) through the official `openai` client: the endpoint keeps
nothing, the bridge keeps the conversation and sends it whole; the echo agent's `/recall` shows what it got."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis

from tests.support import seed
from tests.support.agent_endpoint import KEYS, A, B, endpoint_routes
from tests.support.bridge import Bridge, running_bridge
from tests.support.servers import ServerThread

ENDPOINT = "POST /api/projects/{project}/agents/{agent_name}/endpoint/protocols/openai/responses"
RESPONSES_TOOLS = [{"type": "function", **t["function"]} for t in seed.TOOLS]


@pytest.fixture
def keyed(emulator: ServerThread, redis_url: str, redis_prefix: str) -> Iterator[Bridge]:
    with running_bridge(
        emulator.url,
        redis_url,
        redis_prefix,
        routes=endpoint_routes(emulator.url),
        keys=KEYS,
        threads={"janitor": False},
        limits={"max_history_items": 8},
    ) as bridge:
        yield bridge


def _sent(bridge: Bridge) -> list[dict[str, Any]]:
    return [r["body"] for r in bridge.emulator_requests() if r["operation"] == ENDPOINT]


def test_previous_response_id_continues_and_branches(keyed: Bridge) -> None:
    a, b = keyed.client(api_key=A), keyed.client(api_key=B)
    first = a.responses.create(model="endpoint-agent", input="alpha")
    second = a.responses.create(model="endpoint-agent", input="/recall", previous_response_id=first.id)
    assert second.output_text == "Recall: alpha"
    assert second.previous_response_id == first.id and second.store is True
    # A branch from the first response sees the first turn only, not the other branch.
    with a.responses.stream(model="endpoint-agent", input="beta", previous_response_id=first.id) as events:
        branch = events.get_final_response()
    again = a.responses.create(model="endpoint-agent", input="/recall", previous_response_id=branch.id)
    assert again.output_text == "Recall: alpha | beta"
    after_second = a.responses.create(model="endpoint-agent", input="/recall", previous_response_id=second.id)
    assert after_second.output_text == "Recall: alpha | /recall"
    # The endpoint got the history as input, never conversation context (it would refuse it).
    sent = _sent(keyed)
    assert sent and not any({"previous_response_id", "conversation", "agent_reference"} & set(s) for s in sent)
    assert all(s["store"] is False and "background" not in s for s in sent)
    assert [len(s["input"]) for s in sent] == [1, 3, 3, 5, 5]
    # Kept by the bridge: the response and the input it was made from, for its owner only.
    assert a.responses.retrieve(second.id).output_text == "Recall: alpha"
    inputs = a.responses.input_items.list(second.id)
    assert [i.content[0].text for i in inputs.data] == ["/recall"]  # type: ignore[union-attr]
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.create(model="endpoint-agent", input="steal", previous_response_id=second.id)


def test_a_tool_round_trip_with_previous_response_id(keyed: Bridge) -> None:
    client = keyed.client(api_key=A)
    response = client.responses.create(model="endpoint-flights", input=seed.QUESTION, tools=RESPONSES_TOOLS)  # type: ignore[arg-type]
    for _ in range(3):
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            break
        outputs = [
            {"type": "function_call_output", "call_id": c.call_id, "output": seed.call(c.name, c.arguments)}
            for c in calls
        ]
        response = client.responses.create(
            model="endpoint-flights",
            input=outputs,  # type: ignore[arg-type]
            previous_response_id=response.id,
            tools=RESPONSES_TOOLS,  # type: ignore[arg-type]
        )
    assert f"There are {seed.expected_flights()} flights" in response.output_text


def test_chat_with_x_conversation_id_sends_only_new_messages(keyed: Bridge) -> None:
    client = keyed.client(api_key=A)
    header = {"X-Conversation-Id": "chat-1"}
    first = client.chat.completions.create(
        model="endpoint-agent", messages=[{"role": "user", "content": "alpha"}], extra_headers=header
    )
    assert first.choices[0].message.content == "Echo: alpha"
    recalled = client.chat.completions.create(
        model="endpoint-agent", messages=[{"role": "user", "content": "/recall"}], extra_headers=header
    )
    assert recalled.choices[0].message.content == "Recall: alpha"
    # Another key's conversation of the same name is its own.
    other = keyed.client(api_key=B).chat.completions.create(
        model="endpoint-agent", messages=[{"role": "user", "content": "/recall"}], extra_headers=header
    )
    assert other.choices[0].message.content == "Recall: nothing"


def test_chat_without_a_conversation_id_is_sent_as_the_client_holds_it(keyed: Bridge) -> None:
    client = keyed.client(api_key=A)
    messages: list[Any] = [
        {"role": "user", "content": "alpha"},
        {"role": "assistant", "content": "Echo: alpha"},
        {"role": "user", "content": "/recall"},
    ]
    reply = client.chat.completions.create(model="endpoint-agent", messages=messages)
    assert reply.choices[0].message.content == "Recall: alpha"


@pytest.mark.parametrize("conversation", [False, True], ids=["stateless", "x-conversation-id"])
def test_a_chat_tool_round_trip(keyed: Bridge, conversation: bool) -> None:
    client = keyed.client(api_key=A)
    headers = {"X-Conversation-Id": "flights-1"} if conversation else {}
    messages: list[Any] = [{"role": "user", "content": seed.QUESTION}]
    for _ in range(3):
        reply = client.chat.completions.create(
            model="endpoint-flights", messages=messages, tools=seed.TOOLS, extra_headers=headers
        ).choices[0]
        if reply.finish_reason != "tool_calls":
            break
        messages.append(reply.message.model_dump(exclude_none=True))
        messages += [
            {"role": "tool", "tool_call_id": c.id, "content": seed.call(c.function.name, c.function.arguments)}  # type: ignore[union-attr]
            for c in reply.message.tool_calls or []
        ]
    assert f"There are {seed.expected_flights()} flights" in (reply.message.content or "")


def test_past_the_bound_a_turn_is_a_clear_400(keyed: Bridge) -> None:
    """limits.max_history_items is 8 here: each turn keeps its input and the agent's answer."""
    client = keyed.client(api_key=A)
    response = client.responses.create(model="endpoint-agent", input="1")
    for n in range(2, 5):
        response = client.responses.create(model="endpoint-agent", input=str(n), previous_response_id=response.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="endpoint-agent", input="9", previous_response_id=response.id)
    assert info.value.code == "conversation_too_long"
    assert "holds 8 items" in info.value.message and "limits.max_history_items" in info.value.message
    header = {"X-Conversation-Id": "long"}
    for n in range(4):
        client.chat.completions.create(
            model="endpoint-agent", messages=[{"role": "user", "content": str(n)}], extra_headers=header
        )
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(
            model="endpoint-agent", messages=[{"role": "user", "content": "9"}], extra_headers=header
        )
    assert chat.value.code == "conversation_too_long"
    conversation = client.conversations.create(
        items=[{"role": "user", "content": str(n)} for n in range(8)], extra_body={"model": "endpoint-agent"}
    )
    with pytest.raises(openai.BadRequestError) as added:
        client.conversations.items.create(conversation.id, items=[{"role": "user", "content": "9"}])
    assert added.value.code == "conversation_too_long" and added.value.param == "items"


def test_a_response_whose_history_expired_is_not_found(keyed: Bridge, redis_url: str, redis_prefix: str) -> None:
    """The history lives `threads.ttl`, a response record `responses.ttl`: past the first, no silent amnesia."""
    client = keyed.client(api_key=A)
    first = client.responses.create(model="endpoint-agent", input="alpha")
    with redis.Redis.from_url(redis_url) as r:
        assert r.delete(*r.scan_iter(match=f"{redis_prefix}history:*")) == 1
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="endpoint-agent", input="/recall", previous_response_id=first.id)
    assert info.value.code == "previous_response_not_found"


def test_item_references_to_earlier_output_continue_its_chain(keyed: Bridge) -> None:
    """The Vercel AI SDK resends earlier output as `item_reference`s, without previous_response_id."""
    a, b = keyed.client(api_key=A), keyed.client(api_key=B)
    question: dict[str, Any] = {"role": "user", "content": seed.QUESTION}
    response = a.responses.create(model="endpoint-flights", input=[question], tools=RESPONSES_TOOLS)  # type: ignore[arg-type]
    sent: list[Any] = [question]
    for _ in range(3):
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            break
        sent += [{"type": "item_reference", "id": c.id} for c in calls]
        sent += [
            {"type": "function_call_output", "call_id": c.call_id, "output": seed.call(c.name, c.arguments)}
            for c in calls
        ]
        response = a.responses.create(model="endpoint-flights", input=sent, tools=RESPONSES_TOOLS)  # type: ignore[arg-type]
    assert f"There are {seed.expected_flights()} flights" in response.output_text
    with pytest.raises(openai.BadRequestError) as info:
        b.responses.create(model="endpoint-flights", input=sent, tools=RESPONSES_TOOLS)  # type: ignore[arg-type]
    assert info.value.param == "input[1].id"
