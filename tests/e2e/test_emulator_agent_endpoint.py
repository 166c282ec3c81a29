"""The emulator's agent endpoint (`{project}/agents/{name}/endpoint/protocols/openai/responses`), driven by
the official `openai` client as a team given that endpoint alone would use it: stateless, as Azure's is."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.servers import ServerThread

STATELESS = "Endpoint-scoped response APIs are stateless and do not support conversation context."


@pytest.fixture
def endpoint(emulator: ServerThread) -> Iterator[openai.OpenAI]:
    # The openai client sends its key as `Authorization: Bearer`: here, an Entra token (not validated).
    base = f"{emulator.url}/api/projects/demo/agents/demo-agent/endpoint/protocols/openai"
    with openai.OpenAI(base_url=base, api_key="entra-token", max_retries=0) as client:
        yield client


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_response_answers_and_is_not_kept(endpoint: openai.OpenAI, emulator: ServerThread, stream: bool) -> None:
    if stream:
        with endpoint.responses.stream(model="ignored", input="hello") as events:
            response = events.get_final_response()
    else:
        response = endpoint.responses.create(model="ignored", input="hello")
    assert response.output_text == "Echo: hello"
    assert response.store is False
    with httpx.Client(base_url=emulator.url, headers={"authorization": "Bearer t"}) as c:
        kept = c.get(f"/api/projects/demo/openai/v1/responses/{response.id}")
    assert kept.status_code == 404, kept.text


def test_the_whole_conversation_in_input_is_what_the_agent_sees(endpoint: openai.OpenAI) -> None:
    history = [
        {"role": "user", "content": "alpha"},
        {"role": "assistant", "content": "Echo: alpha"},
        {"role": "user", "content": "/recall"},
    ]
    assert endpoint.responses.create(model="ignored", input=history).output_text == "Recall: alpha"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"), [("conversation", "conv_abc"), ("previous_response_id", "resp_abc")], ids=["conv", "prev"]
)
def test_conversation_context_is_refused_as_azure_refuses_it(endpoint: openai.OpenAI, field: str, value: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        endpoint.responses.create(model="ignored", input="hi", **{field: value})  # type: ignore[call-overload]
    assert info.value.status_code == 400
    error = info.value.body
    assert isinstance(error, dict)
    assert error["message"] == f"{STATELESS} Remove the '{field}' property."
    assert error["param"] == field


def test_an_api_key_alone_is_refused(emulator: ServerThread) -> None:
    """Agent Service takes Entra ID only; the endpoint is no exception."""
    url = f"{emulator.url}/api/projects/demo/agents/demo-agent/endpoint/protocols/openai/responses"
    answer = httpx.post(url, json={"input": "hi"}, headers={"api-key": "k"})
    assert answer.status_code == 401
