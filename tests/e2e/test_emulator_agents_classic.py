"""The emulator's Foundry Agent Service classic surface driven by azure-ai-agents' `AgentsClient`."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.ai.agents import AgentsClient
from azure.ai.agents.models import (
    FunctionDefinition,
    FunctionToolDefinition,
    ListSortOrder,
    MessageDeltaChunk,
    MessageRole,
    SubmitToolOutputsAction,
    ThreadRun,
    ToolOutput,
)
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import BearerTokenCredentialPolicy

from tests.support import seed
from tests.support.servers import ServerThread

SCOPE = "https://ai.azure.com/.default"


class StaticCredential:
    """A TokenCredential that never expires and never calls Entra."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == (SCOPE,)
        return AccessToken("t", int(time.time()) + 365 * 24 * 3600)


class BearerOverHttp(BearerTokenCredentialPolicy):
    """azure-core refuses bearer tokens over plain http; the emulator has no TLS."""

    def on_request(self, request: PipelineRequest[Any]) -> None:
        request.context["enforce_https"] = False
        super().on_request(request)


def _client(url: str, project: str = "demo") -> AgentsClient:
    credential = StaticCredential()
    return AgentsClient(
        endpoint=f"{url}/api/projects/{project}",
        credential=credential,  # type: ignore[arg-type]
        authentication_policy=BearerOverHttp(credential, SCOPE),  # type: ignore[arg-type]
        retry_total=0,
    )


@pytest.fixture
def client(emulator: ServerThread) -> Iterator[AgentsClient]:
    with _client(emulator.url) as c:
        yield c


def _seed_tools() -> list[FunctionToolDefinition]:
    return [FunctionToolDefinition(function=FunctionDefinition(**t["function"])) for t in seed.TOOLS]


def test_agent_thread_messages_and_create_and_process(client: AgentsClient, emulator: ServerThread) -> None:
    agent = client.create_agent(model="gpt-4o", name="classic-demo", instructions="Be brief.")
    assert agent.id.startswith("asst_")
    assert (agent.name, agent.model, agent.instructions) == ("classic-demo", "gpt-4o", "Be brief.")
    assert agent.id in {a.id for a in client.list_agents()}
    thread = client.threads.create(metadata={"owner": "test"})
    assert client.threads.get(thread.id).metadata == {"owner": "test"}
    message = client.messages.create(thread_id=thread.id, role=MessageRole.USER, content="hello classic")
    assert message.text_messages[0].text.value == "hello classic"

    run = client.runs.create_and_process(thread_id=thread.id, agent_id=agent.id, polling_interval=0.02)  # type: ignore[arg-type]
    assert run.status == "completed"
    assert run.agent_id == agent.id
    assert run.instructions == "Be brief."
    assert run.usage is not None
    assert run.usage.total_tokens > 0
    texts = [m.text_messages[0].text.value for m in client.messages.list(thread.id, order=ListSortOrder.ASCENDING)]
    assert texts == ["hello classic", "Echo: hello classic"]
    last = client.messages.get_last_message_text_by_role(thread_id=thread.id, role=MessageRole.AGENT)
    assert last is not None
    assert last.text.value == "Echo: hello classic"
    assert [r.id for r in client.runs.list(thread_id=thread.id)] == [run.id]
    steps = list(client.run_steps.list(thread_id=thread.id, run_id=run.id))
    assert [(s.type, s.status) for s in steps] == [("message_creation", "completed")]
    assert client.run_steps.get(thread_id=thread.id, run_id=run.id, step_id=steps[0].id).id == steps[0].id

    client.threads.delete(thread.id)
    with pytest.raises(ResourceNotFoundError, match=f"No thread found with id '{thread.id}'"):
        client.threads.get(thread.id)
    client.delete_agent(agent.id)
    with pytest.raises(ResourceNotFoundError):
        client.get_agent(agent.id)
    view = httpx.get(f"{emulator.url}/_emulator/threads").json()["data"]
    mine = next(t for t in view if t["id"] == thread.id)
    assert (mine["surface"], mine["project"], mine["deleted"]) == ("classic", "demo", True)
    assert [m["text"] for m in mine["messages"]] == ["hello classic", "Echo: hello classic"]


def test_threads_list_pages_to_the_end_and_stays_in_its_project(client: AgentsClient, emulator: ServerThread) -> None:
    created = [client.threads.create().id for _ in range(5)]
    deleted = client.threads.create().id
    client.threads.delete(deleted)
    with _client(emulator.url, "other") as other:
        elsewhere = other.threads.create().id
        assert [t.id for t in other.threads.list()] == [elsewhere]
    httpx.post(
        f"{emulator.url}/openai/threads", params={"api-version": "2024-05-01-preview"}, headers={"api-key": "k"}
    ).raise_for_status()
    listed = [t.id for t in client.threads.list(limit=2)]  # three pages, then an empty one ends it
    assert listed == list(reversed(created))
    ascending = [t.id for t in client.threads.list(limit=2, order=ListSortOrder.ASCENDING)]
    assert ascending == created


def test_streamed_run_with_a_function_tool_round_trip(client: AgentsClient) -> None:
    agent = client.create_agent(model="gpt-4o", name="flights-demo", tools=_seed_tools())
    thread = client.threads.create()
    client.messages.create(thread_id=thread.id, role=MessageRole.USER, content=seed.QUESTION)
    events: list[str] = []
    calls: list[tuple[str, dict[str, Any]]] = []
    text = ""
    final: ThreadRun | None = None
    with client.runs.stream(thread_id=thread.id, agent_id=agent.id) as stream:
        for event_type, data, _ in stream:
            events.append(event_type)
            if isinstance(data, MessageDeltaChunk):
                text += data.text
            if isinstance(data, ThreadRun):
                final = data
                if data.status == "requires_action" and isinstance(data.required_action, SubmitToolOutputsAction):
                    outputs = []
                    for tc in data.required_action.submit_tool_outputs.tool_calls:
                        calls.append((tc.function.name, json.loads(tc.function.arguments)))
                        output = seed.call(tc.function.name, tc.function.arguments)
                        outputs.append(ToolOutput(tool_call_id=tc.id, output=output))
                    client.runs.submit_tool_outputs_stream(
                        thread_id=thread.id, run_id=data.id, tool_outputs=outputs, event_handler=stream
                    )
    assert final is not None
    assert final.status == "completed"
    assert [name for name, _ in calls] == ["my_cat_born_date", "get_flights"]
    assert calls[1][1]["date_2"] == "2021-04-04"
    assert events.count("thread.run.requires_action") == 2
    assert events.count("done") == 3  # one per stream: the run's and the two after tool outputs
    assert events[-2:] == ["thread.run.completed", "done"]
    match = re.match(r"There are (\d+) flights", text)
    assert match, text
    assert int(match.group(1)) == seed.expected_flights()
    last = client.messages.get_last_message_text_by_role(thread_id=thread.id, role=MessageRole.AGENT)
    assert last is not None
    assert last.text.value == text

    client.threads.delete(thread.id)
    client.delete_agent(agent.id)


def test_create_thread_and_run_and_errors_the_sdk_sees(client: AgentsClient) -> None:
    run = client.create_thread_and_run(
        agent_id="asst_demo",
        thread={"messages": [{"role": "user", "content": "/tool lookup {}"}]},  # type: ignore[arg-type]
    )
    assert run.status == "queued"
    # asst_demo has no tools, so the script answers instead of calling one
    deadline = time.monotonic() + 5
    while (run := client.runs.get(thread_id=run.thread_id, run_id=run.id)).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    last = client.messages.get_last_message_text_by_role(thread_id=run.thread_id, role=MessageRole.AGENT)
    assert last is not None
    assert last.text.value == "I have no tool named lookup."
    with pytest.raises(HttpResponseError) as err:
        client.runs.submit_tool_outputs(
            thread_id=run.thread_id, run_id=run.id, tool_outputs=[ToolOutput(tool_call_id="call_x", output="1")]
        )
    assert err.value.status_code == 400
    assert 'Runs in status "completed" do not accept tool outputs.' in str(err.value)
