"""Azure's Foundry v2 rules as the official clients meet them: azure-ai-projects, its OpenAI client,
azure-ai-agents and openai.AzureOpenAI, against the emulator (sources in the emulator's docstrings)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from azure.ai.agents import AgentsClient
from azure.ai.projects import AIProjectClient
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from tests.support.servers import ServerThread

HTTP = {"enforce_https": False}
FLIGHTS = {"type": "agent_reference", "name": "flights-demo"}
SEED_TOOLS = [
    {"type": "function", "name": "my_cat_born_date", "parameters": {"type": "object", "properties": {}}},
    {"type": "function", "name": "get_flights", "parameters": {"type": "object", "properties": {}}},
]


class StaticCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("t", int(time.time()) + 3600)


class MintedCredential:
    """A token from the emulator's managed-identity endpoint, for the resource given."""

    def __init__(self, emulator: ServerThread, resource: str) -> None:
        self.url, self.resource = emulator.url, resource

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        params = {"api-version": "2019-08-01", "resource": self.resource}
        body = httpx.get(f"{self.url}/msi/token", params=params, headers={"X-IDENTITY-HEADER": "s"}).json()
        return AccessToken(body["access_token"], int(body["expires_on"]))


@pytest.fixture
def project(emulator: ServerThread) -> Iterator[AIProjectClient]:
    with AIProjectClient(endpoint=f"{emulator.url}/api/projects/demo", credential=StaticCredential()) as client:
        yield client


@pytest.fixture
def responses(project: AIProjectClient) -> Iterator[openai.OpenAI]:
    with project.get_openai_client(max_retries=0) as client:
        yield client


def test_seed_tools_and_a_temperature_are_refused_with_azures_details(responses: openai.OpenAI) -> None:
    """microsoft/agent-framework#2573 (temperature, top_p), #5130 (tools): 400 `invalid_payload`."""
    with pytest.raises(openai.BadRequestError) as refused:
        responses.responses.create(
            input="How many flights?", tools=SEED_TOOLS, temperature=0.2, extra_body={"agent_reference": FLIGHTS}
        )
    assert refused.value.status_code == 400
    assert refused.value.code == "invalid_payload"
    body: Any = refused.value.body
    assert [d["param"] for d in body["details"]] == ["tools", "temperature"]
    with pytest.raises(openai.BadRequestError) as one:
        responses.responses.create(input="x", tool_choice="auto", extra_body={"agent_reference": FLIGHTS})
    one_body: Any = one.value.body
    assert (one.value.param, one_body["message"]) == ("tool_choice", "Not allowed when agent is specified.")
    # Without the overrides the agent's own tools drive the seed scenario.
    first = responses.responses.create(input="How many flights?", extra_body={"agent_reference": FLIGHTS})
    assert [o.type for o in first.output] == ["function_call"]


def test_server_side_items_as_input_are_refused(responses: openai.OpenAI) -> None:
    """microsoft/agent-framework#5338."""
    listing = {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "docs", "tools": []}
    with pytest.raises(openai.BadRequestError) as refused:
        responses.responses.create(
            input=[{"role": "user", "content": "hi"}, listing],  # type: ignore[list-item]
            extra_body={"agent_reference": FLIGHTS},
        )
    body: Any = refused.value.body
    assert (body["message"], body["param"]) == ("The provided data does not match the expected schema", "/")


def test_definitions_through_azure_ai_projects(project: AIProjectClient) -> None:
    agent = project.agents.get(agent_name="flights-demo", **HTTP)
    latest = agent.versions.latest
    assert latest.definition["kind"] == "prompt"
    assert sorted(t["name"] for t in latest.definition["tools"]) == ["get_flights", "my_cat_born_date"]
    version = project.agents.get_version(agent_name="flights-demo", agent_version="1", **HTTP)
    assert version.definition == latest.definition


def test_background_cancel_through_the_openai_client(responses: openai.OpenAI) -> None:
    ref = {"agent_reference": {"type": "agent_reference", "name": "demo-agent"}}
    slow = responses.responses.create(input="/sleep 5000\nslow", background=True, extra_body=ref)
    assert slow.status == "queued"
    assert responses.responses.cancel(slow.id).status == "cancelled"
    foreground = responses.responses.create(input="hi", extra_body=ref)
    with pytest.raises(openai.BadRequestError) as refused:
        responses.responses.cancel(foreground.id)
    assert "background" in refused.value.message
    streamed = responses.responses.create(input="hello", background=True, stream=True, extra_body=ref)
    kinds = [event.type for event in streamed]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"


def test_project_endpoints_take_entra_tokens_not_keys(emulator: ServerThread) -> None:
    """Agent operations take Entra tokens for https://ai.azure.com (azure-as-it-is.md §1); the 401 body
    is the Cognitive Services gateway's (Azure/azure-sdk-for-python#40260)."""
    project = f"{emulator.url}/api/projects/demo"
    keyed = httpx.post(f"{project}/openai/v1/responses", headers={"api-key": "k"}, json={"input": "hi"})
    assert keyed.status_code == 401
    assert keyed.json() == {
        "statusCode": 401,
        "message": "Unauthorized. Access token is missing, invalid, audience is incorrect (https://ai.azure.com), "
        "or have expired.",
    }
    # azure-ai-agents (classic agents on the project) with a token for the wrong audience is refused ...
    wrong = MintedCredential(emulator, "https://cognitiveservices.azure.com")
    with AgentsClient(endpoint=project, credential=wrong) as agents, pytest.raises(ClientAuthenticationError):
        agents.get_agent("asst_demo", **HTTP)
    # ... and with one for https://ai.azure.com it is let in.
    right = MintedCredential(emulator, "https://ai.azure.com")
    with AgentsClient(endpoint=project, credential=right) as agents:
        assert agents.get_agent("asst_demo", **HTTP).id == "asst_demo"
    # Azure OpenAI's own Assistants still take a key.
    with openai.AzureOpenAI(azure_endpoint=emulator.url, api_key="k", api_version="2024-05-01-preview") as aoai:
        assert aoai.beta.assistants.retrieve("asst_demo").id == "asst_demo"


def test_a_gateway_in_front_takes_keys_when_the_emulator_is_told(emulator: ServerThread) -> None:
    project = f"{emulator.url}/api/projects/demo"
    with httpx.Client() as c:
        c.post(f"{emulator.url}/_emulator/config", json={"accept_api_key_on_projects": True}).raise_for_status()
        with openai.OpenAI(base_url=f"{project}/openai/v1", api_key="unused", default_headers={"api-key": "k"}) as o:
            # openai sends `Authorization: Bearer unused` too; the key alone must pass, so go raw as well.
            assert o.responses.create(input="hi", extra_body={"agent_reference": FLIGHTS | {"name": "demo-agent"}})
        keyed = c.post(f"{project}/openai/v1/responses", headers={"api-key": "k"}, json={"input": "hi", "model": "m"})
        assert keyed.status_code == 200
