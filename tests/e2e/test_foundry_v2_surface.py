"""Foundry v2 as Azure is: overrides dropped with a warning, undeclared tools refused, and the surface
clients call beyond create (input_items, models/{id}, conversations), owner-checked per key."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.support import seed
from tests.support.bridge import Bridge, running_bridge
from tests.support.servers import ServerThread
from tests.support.spec import validate

A = "key-of-team-a-0123456789"
B = "key-of-team-b-0123456789"
KEYS = [{"name": "team-a", "key": A}, {"name": "team-b", "key": B}]
CREATE = "POST /api/projects/{project}/openai/v1/responses"
AGENT_VERSION = "GET /api/projects/{project}/agents/{agent_name}/versions/{version}"
WARNING = "x-agent-bridge-warning"


@pytest.fixture
def keyed(emulator: ServerThread, redis_url: str, redis_prefix: str) -> Any:
    with running_bridge(emulator.url, redis_url, redis_prefix, keys=KEYS, threads={"janitor": False}) as bridge:
        yield bridge


def test_chat_with_temperature_and_the_seed_tools_answers_with_a_warning(bridge: Bridge) -> None:
    client = bridge.client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": seed.QUESTION}]
    warnings: list[str] = []
    for _ in range(5):
        raw = client.chat.completions.with_raw_response.create(
            model="flights-agent", messages=messages, tools=seed.TOOLS, temperature=0.2, tool_choice="required"
        )
        warnings.append(raw.headers.get(WARNING, ""))
        reply = raw.parse().choices[0]
        if reply.finish_reason != "tool_calls":
            break
        calls = reply.message.tool_calls or []
        messages.append(reply.message.model_dump(exclude_none=True))
        messages += [
            {"role": "tool", "tool_call_id": c.id, "content": seed.call(c.function.name, c.function.arguments)}
            for c in calls
        ]
    assert f"There are {seed.expected_flights()} flights" in (reply.message.content or "")
    assert all("temperature" in w and "tool_choice" in w for w in warnings), warnings
    sent = [r["body"] for r in bridge.emulator_requests() if r["operation"] == CREATE]
    assert sent and not any({"temperature", "tools", "tool_choice"} & set(body) for body in sent)
    # The agent's definition was read once for the three turns (then cached).
    assert bridge.emulator_stats().get(AGENT_VERSION) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_responses_with_temperature_get_the_answer_and_the_warning(bridge: Bridge, stream: bool) -> None:
    with httpx.Client(timeout=30) as c:
        body = {"model": "demo-agent", "input": "warm", "temperature": 0.2, "top_p": 0.5, "stream": stream}
        answer = c.post(f"{bridge.url}/v1/responses", json=body)
    assert answer.status_code == 200, answer.text
    warned = answer.headers[WARNING].split("; ")
    assert [w.split(" ", 2)[:2] for w in warned] == [["temperature", "dropped:"], ["top_p", "dropped:"]]
    assert "Echo: warm" in answer.text


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_tool_the_agent_lacks_is_a_400_naming_it_and_where_to_declare_it(bridge: Bridge, api: str) -> None:
    client = bridge.client()
    bridge.reset_stats()

    def send() -> Any:
        if api == "chat":
            return client.chat.completions.create(
                model="flights-agent",
                messages=[{"role": "user", "content": "hi"}],
                tools=[*seed.TOOLS, {"type": "function", "function": {"name": "book_hotel"}}],
            )
        return client.responses.create(
            model="flights-agent", input="hi", tools=[{"type": "function", "name": "book_hotel"}]
        )

    with pytest.raises(openai.BadRequestError) as info:
        send()
    error = info.value
    assert error.code == "tool_not_declared" and error.param == "tools"
    assert "'book_hotel'" in error.message and "agent 'flights-demo' version 1" in error.message
    assert "agent's definition" in error.message
    assert CREATE not in bridge.emulator_stats()  # nothing was sent that Azure would refuse


def test_an_unknown_previous_response_has_the_same_code_on_both_backends(bridge: Bridge) -> None:
    client = bridge.client()
    codes = []
    for model in ("demo-assistant", "demo-agent"):
        with pytest.raises(openai.NotFoundError) as info:
            client.responses.create(model=model, input="x", previous_response_id="resp_unknown")
        codes.append((info.value.code, info.value.param))
    assert codes == [("previous_response_not_found", "previous_response_id")] * 2


def test_azure_details_reach_the_client_and_code_is_never_null(bridge: Bridge) -> None:
    # An empty input on a Foundry route is Azure's call: its error comes back with a code.
    with httpx.Client(timeout=30) as c:
        answer = c.post(f"{bridge.url}/v1/responses", json={"model": "demo-agent", "input": [{"type": "bogus"}]})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] and error["message"]


@pytest.mark.parametrize("model", ["demo-assistant", "demo-agent"])
def test_input_items_through_the_openai_client_and_404_for_another_key(keyed: Bridge, model: str) -> None:
    a, b = keyed.client(api_key=A), keyed.client(api_key=B)
    first = a.responses.create(model=model, input="first words")
    items = a.responses.input_items.list(first.id)
    validate(items.model_dump(exclude_none=True), "ResponseItemList")
    [item] = items.data
    assert item.type == "message" and item.role == "user"
    assert item.content[0].text == "first words"  # type: ignore[union-attr]
    second = a.responses.create(
        model=model,
        input=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
        previous_response_id=first.id,
    )
    listed = a.responses.input_items.list(second.id, order="asc")
    assert [i.content[0].text for i in listed.data] == ["one", "two"]  # type: ignore[union-attr]
    page = a.responses.input_items.list(second.id, limit=1)
    assert [i.content[0].text for i in page.data] == ["two"] and page.has_more  # type: ignore[union-attr]
    with pytest.raises(openai.NotFoundError):
        b.responses.input_items.list(first.id)


def test_models_retrieve_and_404_for_a_model_the_key_may_not_use(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    keys = [{"name": "team-a", "key": A}, {"name": "team-b", "key": B, "models": ["demo-agent"]}]
    with running_bridge(emulator.url, redis_url, redis_prefix, keys=keys, threads={"janitor": False}) as bridge:
        a, b = bridge.client(api_key=A), bridge.client(api_key=B)
        model = a.models.retrieve("flights-agent")
        assert (model.id, model.object, model.owned_by) == ("flights-agent", "model", "azure-foundry")
        assert b.models.retrieve("demo-agent").id == "demo-agent"
        for client, name in ((b, "flights-agent"), (a, "no-such-model")):
            with pytest.raises(openai.NotFoundError) as info:
                client.models.retrieve(name)
            assert info.value.code == "model_not_found"


def test_conversations_relayed_to_the_project_and_owner_checked(keyed: Bridge) -> None:
    a, b = keyed.client(api_key=A), keyed.client(api_key=B)
    conversation = a.conversations.create(
        items=[{"type": "message", "role": "user", "content": "remember me"}], metadata={"team": "a"}
    )
    assert conversation.id.startswith("conv_") and conversation.metadata == {"team": "a"}
    assert a.conversations.retrieve(conversation.id).id == conversation.id
    added = a.conversations.items.create(
        conversation.id, items=[{"type": "message", "role": "user", "content": "and this"}]
    )
    assert len(added.data) == 1
    listed = a.conversations.items.list(conversation.id, order="asc")
    assert [i.content[0].text for i in listed.data] == ["remember me", "and this"]  # type: ignore[union-attr]
    answer = a.responses.create(model="demo-agent", input="next", conversation=conversation.id)
    assert answer.output_text == "Echo: next"
    for call in (
        lambda: b.conversations.retrieve(conversation.id),
        lambda: b.conversations.items.list(conversation.id),
        lambda: b.conversations.items.create(conversation.id, items=[{"role": "user", "content": "x"}]),
        lambda: b.conversations.delete(conversation.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.NotFoundError):
        b.responses.create(model="demo-agent", input="steal", conversation=conversation.id)
    deleted = a.conversations.delete(conversation.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        a.conversations.retrieve(conversation.id)
