"""Code interpreter on the Foundry v2 emulator (agent `code-agent`, drivers `/image` and `/file NAME`:
app/emulator/script.py, app/emulator/foundry_v2_code.py), through azure-ai-projects' `get_openai_client()`:
the `code_interpreter_call` item, the answer's `container_file_citation`, the streamed events in OpenAI's
order, and the container files endpoints (bytes, 404s, Entra only)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from azure.ai.projects import AIProjectClient
from azure.ai.projects.models import CodeInterpreterTool, PromptAgentDefinition
from openai.types.responses import ResponseCodeInterpreterToolCall

from tests.e2e.test_emulator_foundry_v2 import HTTP, StaticCredential
from tests.support.servers import ServerThread
from tests.support.spec import validate

CODE_AGENT = {"agent_reference": {"type": "agent_reference", "name": "code-agent"}}
OUTPUTS = ["code_interpreter_call.outputs"]
CALL_EVENTS = [
    "response.output_item.added",
    "response.code_interpreter_call.in_progress",
    "response.code_interpreter_call_code.delta",
    "response.code_interpreter_call_code.done",
    "response.code_interpreter_call.interpreting",
    "response.code_interpreter_call.completed",
    "response.output_item.done",
]


@pytest.fixture
def project(emulator: ServerThread) -> Iterator[AIProjectClient]:
    with AIProjectClient(endpoint=f"{emulator.url}/api/projects/demo", credential=StaticCredential()) as client:
        yield client


@pytest.fixture
def v2(project: AIProjectClient) -> Iterator[openai.OpenAI]:
    with project.get_openai_client() as client:
        yield client


def _streamed(v2: openai.OpenAI, agent: dict[str, Any] = CODE_AGENT, **body: Any) -> list[dict[str, Any]]:
    raw = v2.responses.with_raw_response.create(**body, stream=True, extra_body=agent).http_response
    events = [json.loads(line[6:]) for line in raw.iter_lines() if line.startswith("data: ")]
    for event in events:
        validate(event, "ResponseStreamEvent")
    return events


def _citation(response: dict[str, Any]) -> dict[str, Any]:
    message = response["output"][-1]
    [part] = message["content"]
    [note] = part["annotations"]
    assert note["type"] == "container_file_citation"
    assert part["text"][note["start_index"] : note["end_index"]] == f"sandbox:/mnt/data/{note['filename']}"
    return note


def test_a_written_file_is_a_code_call_and_a_container_file_citation(v2: openai.OpenAI) -> None:
    response = v2.responses.create(input="/file report.csv", include=OUTPUTS, extra_body=CODE_AGENT)  # type: ignore[list-item]
    body = response.model_dump(mode="json", exclude_unset=True)
    validate(body, "Response")
    assert [i["type"] for i in body["output"]] == ["code_interpreter_call", "message"]
    call = response.output[0]
    assert isinstance(call, ResponseCodeInterpreterToolCall)
    assert call.status == "completed" and "report.csv" in (call.code or "")
    assert [o.model_dump() for o in call.outputs or []] == [{"type": "logs", "logs": "wrote /mnt/data/report.csv"}]
    assert any(t["type"] == "code_interpreter" for t in body["tools"])
    note = _citation(body)
    assert (note["container_id"], note["filename"]) == (call.container_id, "report.csv")
    content = v2.containers.files.content.retrieve(note["file_id"], container_id=note["container_id"])
    assert content.read() == b"name,value\nreport.csv,42\n"
    described = v2.containers.files.retrieve(note["file_id"], container_id=note["container_id"])
    validate(described.model_dump(mode="json", exclude_unset=True), "ContainerFileResource")
    assert (described.path, described.bytes) == ("/mnt/data/report.csv", len(b"name,value\nreport.csv,42\n"))


def test_a_streamed_chart_in_openais_event_order(v2: openai.OpenAI) -> None:
    events = _streamed(v2, input="/image")
    kinds = [e["type"] for e in events]
    call_at = kinds.index("response.code_interpreter_call.in_progress") - 1
    window = kinds[call_at : kinds.index("response.code_interpreter_call.completed") + 2]
    runs = [k for n, k in enumerate(window) if n == 0 or k != window[n - 1]]
    assert runs == CALL_EVENTS  # the code comes in one or more deltas
    added = events[call_at]["item"]
    assert (added["type"], added["status"], added["code"]) == ("code_interpreter_call", "in_progress", "")
    code = "".join(e["delta"] for e in events if e["type"] == "response.code_interpreter_call_code.delta")
    done = next(e for e in events if e["type"] == "response.code_interpreter_call_code.done")
    assert code == done["code"] and "savefig" in code
    # The citation arrives with the text, before the text is done; the final Response has the same.
    assert kinds.index("response.output_text.annotation.added") < kinds.index("response.output_text.done")
    streamed = next(e for e in events if e["type"] == "response.output_text.annotation.added")["annotation"]
    final = events[-1]["response"]
    assert kinds[-1] == "response.completed"
    assert final["output"][0]["outputs"] is None  # not asked for with `include`
    note = _citation(final)
    assert note == streamed and note["filename"] == "chart.png"
    png = v2.containers.files.content.retrieve(note["file_id"], container_id=note["container_id"])
    assert png.read().startswith(b"\x89PNG")
    assert png.response.headers["content-type"] == "image/png"


def test_a_chain_of_responses_keeps_its_container(v2: openai.OpenAI) -> None:
    first = v2.responses.create(input="/image", include=OUTPUTS, extra_body=CODE_AGENT)  # type: ignore[list-item]
    image: Any = first.output[0]
    assert image.outputs[0].type == "image" and image.outputs[0].url.startswith("data:image/png;base64,")
    second = v2.responses.create(input="/file b.csv", previous_response_id=first.id, extra_body=CODE_AGENT)
    call: Any = second.output[0]
    assert call.container_id == image.container_id
    files = v2.containers.files.list(container_id=call.container_id)
    assert sorted(f.path for f in files) == ["/mnt/data/b.csv", "/mnt/data/chart.png"]
    other = v2.responses.create(input="/file c.csv", extra_body=CODE_AGENT)
    assert other.output[0].container_id != call.container_id  # type: ignore[union-attr]


def test_unknown_container_files_are_404_and_projects_take_entra_only(
    v2: openai.OpenAI, emulator: ServerThread
) -> None:
    response = v2.responses.create(input="/file a.csv", extra_body=CODE_AGENT)
    note = _citation(response.model_dump(mode="json"))
    for file_id, container_id in (("cfile_none", note["container_id"]), (note["file_id"], "cntr_none")):
        with pytest.raises(openai.NotFoundError) as info:
            v2.containers.files.content.retrieve(file_id, container_id=container_id)
        body = info.value.response.json()
        validate(body["error"], "Error")
        assert body["error"]["code"] == "not_found"
    path = f"/api/projects/demo/openai/v1/containers/{note['container_id']}/files/{note['file_id']}/content"
    refused = httpx.get(emulator.url + path, headers={"api-key": "k"})
    assert refused.status_code == 401


def test_an_agent_without_the_tool_runs_no_code(v2: openai.OpenAI) -> None:
    demo = {"agent_reference": {"type": "agent_reference", "name": "demo-agent"}}
    response = v2.responses.create(input="/image", extra_body=demo)
    assert [i.type for i in response.output] == ["message"]
    assert response.output_text == "I have no code interpreter tool."


def test_an_agent_made_with_azure_ai_projects_code_interpreter_tool(
    project: AIProjectClient, v2: openai.OpenAI
) -> None:
    definition = PromptAgentDefinition(model="gpt-4o", instructions="Run code.", tools=[CodeInterpreterTool()])
    version = project.agents.create_version(agent_name="sdk-coder", definition=definition, **HTTP)
    assert version.definition["tools"] == [{"type": "code_interpreter"}]
    agent = {"agent_reference": {"type": "agent_reference", "name": "sdk-coder", "version": version.version}}
    events = _streamed(v2, agent, input="/file out.csv")
    final = events[-1]["response"]
    validate(final, "Response")
    assert final["tools"] == [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": []}}]
    assert _citation(final)["filename"] == "out.csv"
