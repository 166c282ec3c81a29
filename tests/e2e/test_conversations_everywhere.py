"""`/v1/conversations` and `conversation` on every route kind, through the official `openai` client:
an Assistants route (a thread behind it), a Foundry v2 route (the project's own), an agent-endpoint route
(a history the bridge keeps). One contract: the same calls, shapes and errors on each."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis

from app.state.keys import Keys
from tests.support.agent_endpoint import KEYS, A, B, endpoint_routes
from tests.support.bridge import Bridge, running_bridge
from tests.support.servers import ServerThread

ROUTES = ["demo-assistant", "demo-agent", "endpoint-agent"]


@pytest.fixture
def keyed(emulator: ServerThread, redis_url: str, redis_prefix: str) -> Iterator[Bridge]:
    routes = endpoint_routes(emulator.url)
    with running_bridge(
        emulator.url, redis_url, redis_prefix, routes=routes, keys=KEYS, threads={"janitor": False}
    ) as bridge:
        yield bridge


def _texts(items: Any) -> list[str]:
    return [part.text for item in items.data for part in item.content]


@pytest.mark.parametrize("route", ROUTES)
def test_create_two_turns_and_list_them(keyed: Bridge, route: str) -> None:
    a, b = keyed.client(api_key=A), keyed.client(api_key=B)
    conversation = a.conversations.create(
        items=[{"type": "message", "role": "user", "content": "remember me"}],
        metadata={"team": "a"},
        extra_body={"model": route},
    )
    assert conversation.id.startswith("conv_") and conversation.metadata == {"team": "a"}
    first = a.responses.create(model=route, input="first", conversation=conversation.id)
    assert first.output_text == "Echo: first"
    second = a.responses.create(model=route, input="/recall", conversation=conversation.id)
    # What the agent was given: the conversation's items, whoever keeps them.
    assert second.output_text == "Recall: remember me | first"
    assert second.conversation is not None and second.conversation.id == conversation.id
    listed = a.conversations.items.list(conversation.id, order="asc")
    assert _texts(listed) == ["remember me", "first", "Echo: first", "/recall", "Recall: remember me | first"]
    # Chat continues the same conversation: `conversation` in the body, only the new message sent.
    chat = a.chat.completions.create(
        model=route, messages=[{"role": "user", "content": "/recall"}], extra_body={"conversation": conversation.id}
    )
    assert chat.choices[0].message.content == "Recall: remember me | first | /recall"
    for call in (
        lambda: b.conversations.retrieve(conversation.id),
        lambda: b.conversations.items.list(conversation.id),
        lambda: b.conversations.items.create(conversation.id, items=[{"role": "user", "content": "x"}]),
        lambda: b.conversations.delete(conversation.id),
        lambda: b.responses.create(model=route, input="steal", conversation=conversation.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()


@pytest.mark.parametrize("route", ROUTES)
def test_the_rest_of_the_surface_on_every_route_kind(keyed: Bridge, route: str) -> None:
    a = keyed.client(api_key=A)
    conversation = a.conversations.create(extra_body={"model": route})
    assert a.conversations.retrieve(conversation.id).metadata == {}
    assert a.conversations.update(conversation.id, metadata={"topic": "x"}).metadata == {"topic": "x"}
    assert a.conversations.retrieve(conversation.id).metadata == {"topic": "x"}
    added = a.conversations.items.create(
        conversation.id,
        items=[
            {"type": "message", "role": "user", "content": "one"},
            {"type": "message", "role": "user", "content": "two"},
        ],
    )
    assert [i.content[0].text for i in added.data] == ["one", "two"]  # type: ignore[union-attr]
    one = added.data[0].id
    assert a.conversations.items.retrieve(one, conversation_id=conversation.id).id == one  # type: ignore[union-attr]
    a.conversations.items.delete(one, conversation_id=conversation.id)
    assert _texts(a.conversations.items.list(conversation.id)) == ["two"]
    with pytest.raises(openai.NotFoundError):
        a.conversations.items.retrieve(one, conversation_id=conversation.id)
    # Chat continues it too: `conversation` in the body, the new messages only.
    chat = a.chat.completions.create(
        model=route, messages=[{"role": "user", "content": "/recall"}], extra_body={"conversation": conversation.id}
    )
    assert chat.choices[0].message.content == "Recall: two"
    assert a.conversations.delete(conversation.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        a.conversations.retrieve(conversation.id)


def test_an_assistants_conversation_is_a_thread_deleted_with_it(keyed: Bridge) -> None:
    a = keyed.client(api_key=A)
    conversation = a.conversations.create(
        items=[{"role": "user", "content": "hi"}], extra_body={"model": "demo-assistant"}
    )
    threads = keyed.emulator_threads()
    assert len(threads) == 1 and not threads[0]["deleted"]
    a.conversations.delete(conversation.id)
    assert keyed.emulator_threads()[0]["deleted"]


def test_a_conversation_whose_thread_is_gone_is_not_found(keyed: Bridge, redis_url: str, redis_prefix: str) -> None:
    """Never a new thread in its place: the janitor (or an admin) deleted it and forgot its record."""
    a = keyed.client(api_key=A)
    conversation = a.conversations.create(
        items=[{"role": "user", "content": "hi"}], extra_body={"model": "demo-assistant"}
    )
    (thread,) = keyed.emulator_threads()
    with redis.Redis.from_url(redis_url) as r:
        assert r.delete(Keys(redis_prefix).thread(thread["id"])) == 1
    with pytest.raises(openai.NotFoundError) as info:
        a.responses.create(model="demo-assistant", input="again", conversation=conversation.id)
    assert info.value.param == "conversation"
    assert len(keyed.emulator_threads()) == 1


def test_unknown_ids_get_one_error_body_whatever_the_route(keyed: Bridge) -> None:
    a = keyed.client(api_key=A)
    bodies = []
    for route in ROUTES:
        with pytest.raises(openai.NotFoundError) as info:
            a.responses.create(model=route, input="x", conversation="conv_unknown")
        bodies.append((info.value.status_code, info.value.body))
    with pytest.raises(openai.NotFoundError) as got:
        a.conversations.retrieve("conv_unknown")
    assert got.value.body == {
        "message": "Conversation with id 'conv_unknown' not found.",
        "type": "invalid_request_error",
        "param": "conversation_id",
        "code": "not_found",
    }
    for route in ROUTES:
        with pytest.raises(openai.NotFoundError) as chat:
            a.chat.completions.create(
                model=route, messages=[{"role": "user", "content": "x"}], extra_body={"conversation": "conv_unknown"}
            )
        bodies.append((chat.value.status_code, chat.value.body))
    assert [status for status, _ in bodies] == [404] * 6
    assert len({str(body) for _, body in bodies}) == 1, bodies


def test_a_conversation_is_for_the_kind_of_route_it_was_made_on(keyed: Bridge) -> None:
    a = keyed.client(api_key=A)
    conversation = a.conversations.create(extra_body={"model": "endpoint-agent"})
    with pytest.raises(openai.BadRequestError) as info:
        a.responses.create(model="demo-assistant", input="x", conversation=conversation.id)
    assert info.value.code == "conversation_route_mismatch"
