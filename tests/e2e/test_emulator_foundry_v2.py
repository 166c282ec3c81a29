"""The emulator's Foundry v2 surface driven by the official clients: azure-ai-projects and openai."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.ai.projects import AIProjectClient
from azure.ai.projects.models import FunctionTool, PromptAgentDefinition
from azure.core.credentials import AccessToken
from openai import OpenAI

from tests.support import seed
from tests.support.servers import ServerThread

# azure-core refuses bearer tokens over plain http unless told per call.
HTTP = {"enforce_https": False}
WEATHER = FunctionTool(
    name="get_weather",
    description="Current weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    strict=False,
)


class StaticCredential:
    """A TokenCredential that never expires and never calls Entra."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("t", int(time.time()) + 365 * 24 * 3600)


@pytest.fixture
def project(emulator: ServerThread) -> Iterator[AIProjectClient]:
    with AIProjectClient(endpoint=f"{emulator.url}/api/projects/demo", credential=StaticCredential()) as client:
        yield client


@pytest.fixture
def openai_client(project: AIProjectClient) -> Iterator[OpenAI]:
    with project.get_openai_client() as client:
        yield client


def _weather_agent(project: AIProjectClient) -> Any:
    definition = PromptAgentDefinition(model="gpt-4o", instructions="You report the weather.", tools=[WEATHER])
    return project.agents.create_version(agent_name="weather-agent", definition=definition, **HTTP)


def test_create_version_and_get_it_back(project: AIProjectClient) -> None:
    first = _weather_agent(project)
    second = _weather_agent(project)
    assert (first.name, first.version, second.version) == ("weather-agent", "1", "2")
    assert first.id == "weather-agent:1"
    assert first.definition["tools"][0]["name"] == "get_weather"
    agent = project.agents.get(agent_name="weather-agent", **HTTP)
    assert agent.versions.latest.version == "2"
    names = {a.name for a in project.agents.list(**HTTP)}
    assert {"demo-agent", "flights-demo", "weather-agent"} <= names
    versions = [v.version for v in project.agents.list_versions(agent_name="weather-agent", **HTTP)]
    assert sorted(versions) == ["1", "2"]


def test_text_reply_with_agent_reference(project: AIProjectClient, openai_client: OpenAI) -> None:
    agent = _weather_agent(project)
    ref = {"type": "agent_reference", "name": agent.name, "version": agent.version}
    response = openai_client.responses.create(input="hello there", extra_body={"agent_reference": ref})
    assert response.status == "completed"
    assert response.output_text == "Echo: hello there"
    assert response.id.startswith("resp_")
    assert response.model == "gpt-4o"
    assert response.usage is not None
    assert response.usage.total_tokens > 0
    assert openai_client.responses.retrieve(response.id).output_text == "Echo: hello there"


def test_streamed_text_reply(openai_client: OpenAI) -> None:
    ref = {"type": "agent_reference", "name": "demo-agent"}
    events = list(
        openai_client.responses.create(input="stream me please", stream=True, extra_body={"agent_reference": ref})
    )
    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1
    assert "".join(deltas) == "Echo: stream me please"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.output_text == "Echo: stream me please"


def test_function_call_round_trip_with_previous_response_id(project: AIProjectClient, openai_client: OpenAI) -> None:
    agent = _weather_agent(project)
    ref = {"type": "agent_reference", "name": agent.name}
    first = openai_client.responses.create(
        input='/tool get_weather {"city": "Paris"}', extra_body={"agent_reference": ref}
    )
    assert first.status == "completed"
    [call] = [o for o in first.output if o.type == "function_call"]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id.startswith("call_")
    assert call.id is not None
    assert call.id.startswith("fc_")
    second = openai_client.responses.create(
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}],
        extra_body={"agent_reference": ref},
    )
    assert second.output_text == "Tool get_weather returned: sunny, 21C"
    assert second.previous_response_id == first.id


def test_function_call_round_trip_in_a_conversation(project: AIProjectClient, openai_client: OpenAI) -> None:
    agent = _weather_agent(project)
    ref = {"type": "agent_reference", "name": agent.name}
    conversation = openai_client.conversations.create()
    assert conversation.id.startswith("conv_")
    first = openai_client.responses.create(
        conversation=conversation.id,
        input='/tool get_weather {"city": "Oslo"}',
        extra_body={"agent_reference": ref},
    )
    [call] = [o for o in first.output if o.type == "function_call"]
    second = openai_client.responses.create(
        conversation=conversation.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "snow"}],
        extra_body={"agent_reference": ref},
    )
    assert second.output_text == "Tool get_weather returned: snow"
    items = list(openai_client.conversations.items.list(conversation.id, order="asc"))
    assert [i.type for i in items] == ["message", "function_call", "function_call_output", "message"]
    assert items[-1].content[0].text == "Tool get_weather returned: snow"  # type: ignore[union-attr]


def test_flights_demo_scenario_with_the_seed_functions(openai_client: OpenAI) -> None:
    ref = {"type": "agent_reference", "name": "flights-demo"}
    response = openai_client.responses.create(input=seed.QUESTION, extra_body={"agent_reference": ref})
    called: list[str] = []
    for _ in range(5):
        calls = [o for o in response.output if o.type == "function_call"]
        if not calls:
            break
        outputs = [
            {"type": "function_call_output", "call_id": c.call_id, "output": seed.call(c.name, c.arguments)}
            for c in calls
        ]
        called += [c.name for c in calls]
        response = openai_client.responses.create(
            previous_response_id=response.id, input=outputs, extra_body={"agent_reference": ref}
        )
    assert called == ["my_cat_born_date", "get_flights"]
    assert response.output_text.startswith(f"There are {seed.expected_flights()} flights")
