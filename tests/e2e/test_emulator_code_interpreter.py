"""Code interpreter and file search on classic threads (drivers `/image`, `/file NAME`, `/cite`:
app/emulator/script.py): their run steps, the image and file they leave in the answer, and the files
endpoints of both classic surfaces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from azure.ai.agents.models import (
    MessageImageFileContent,
    MessageTextContent,
    MessageTextFilePathAnnotation,
    RunStepCodeInterpreterImageOutput,
    RunStepCodeInterpreterToolCall,
    RunStepFileSearchToolCall,
    RunStepToolCallDetails,
)

from tests.e2e.test_emulator_agents_classic import _client
from tests.support.servers import ServerThread
from tests.support.spec import validate

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")


@pytest.fixture
def aoai(emulator: ServerThread) -> Iterator[openai.AzureOpenAI]:
    with openai.AzureOpenAI(
        azure_endpoint=emulator.url, api_key="k", api_version="2024-05-01-preview", max_retries=0
    ) as client:
        yield client


def _run(aoai: openai.AzureOpenAI, text: str) -> tuple[Any, list[Any], list[Any]]:
    run = aoai.beta.threads.create_and_run_poll(
        assistant_id="asst_demo", thread={"messages": [{"role": "user", "content": text}]}, poll_interval_ms=20
    )
    raw = aoai.beta.threads.runs.steps.with_raw_response.list(thread_id=run.thread_id, run_id=run.id, order="asc")
    steps = raw.http_response.json()["data"]
    for step in steps:
        validate(step, "RunStepObject")
    messages = aoai.beta.threads.messages.with_raw_response.list(thread_id=run.thread_id, order="asc")
    return run, steps, messages.http_response.json()["data"]


def test_image_output_is_a_run_step_and_an_image_file_part(aoai: openai.AzureOpenAI, emulator: ServerThread) -> None:
    run, steps, messages = _run(aoai, "/image")
    assert run.status == "completed"
    assert [s["type"] for s in steps] == ["tool_calls", "message_creation"]
    [call] = steps[0]["step_details"]["tool_calls"]
    assert call["type"] == "code_interpreter" and "savefig" in call["code_interpreter"]["input"]
    [image] = [o for o in call["code_interpreter"]["outputs"] if o["type"] == "image"]
    answer = messages[-1]
    validate(answer, "MessageObject")
    assert [p["type"] for p in answer["content"]] == ["image_file", "text"]
    file_id = answer["content"][0]["image_file"]["file_id"]
    assert file_id == image["image"]["file_id"]
    content = aoai.files.content(file_id)
    assert content.read().startswith(b"\x89PNG")
    file = aoai.files.retrieve(file_id)
    assert (file.filename, file.purpose) == ("chart.png", "assistants_output")
    # Streamed: the step events and the image part arrive before the text.
    with aoai.beta.threads.create_and_run_stream(
        assistant_id="asst_demo", thread={"messages": [{"role": "user", "content": "/image"}]}
    ) as stream:
        events = list(stream)
    names = [e.event for e in events]
    assert names.index("thread.run.step.delta") < names.index("thread.message.created")
    first_delta: Any = next(e.data for e in events if e.event == "thread.message.delta")
    assert first_delta.delta.content[0].type == "image_file"


def test_file_output_is_a_sandbox_link_with_a_file_path_annotation(aoai: openai.AzureOpenAI) -> None:
    _, steps, messages = _run(aoai, "/file report.csv")
    text = messages[-1]["content"][0]["text"]
    assert "sandbox:/mnt/data/report.csv" in text["value"]
    [note] = text["annotations"]
    assert note["type"] == "file_path"
    assert text["value"][note["start_index"] : note["end_index"]] == note["text"] == "sandbox:/mnt/data/report.csv"
    logs = steps[0]["step_details"]["tool_calls"][0]["code_interpreter"]["outputs"]
    assert logs == [{"type": "logs", "logs": "wrote /mnt/data/report.csv"}]
    assert aoai.files.content(note["file_path"]["file_id"]).read() == b"name,value\nreport.csv,42\n"


def test_cite_runs_a_file_search_step(aoai: openai.AzureOpenAI) -> None:
    _, steps, _ = _run(aoai, "/cite")
    [call] = steps[0]["step_details"]["tool_calls"]
    assert call["type"] == "file_search"
    assert call["file_search"]["results"][0]["file_id"] == "assistant-cite0"


def test_azure_ai_agents_models_the_steps_and_serves_the_files(emulator: ServerThread) -> None:
    with _client(emulator.url) as agents:
        thread = agents.threads.create()
        agents.messages.create(thread_id=thread.id, role="user", content="/image\n")
        run = agents.runs.create_and_process(thread_id=thread.id, agent_id="asst_demo", polling_interval=0.05)
        assert run.status == "completed"
        steps = list(agents.run_steps.list(thread_id=thread.id, run_id=run.id))
        details = next(s.step_details for s in steps if isinstance(s.step_details, RunStepToolCallDetails))
        assert isinstance(details, RunStepToolCallDetails)
        call = details.tool_calls[0]
        assert isinstance(call, RunStepCodeInterpreterToolCall)
        image = next(o for o in call.code_interpreter.outputs if isinstance(o, RunStepCodeInterpreterImageOutput))
        answer = next(m for m in agents.messages.list(thread_id=thread.id) if m.role == "assistant")
        part = answer.content[0]
        assert isinstance(part, MessageImageFileContent) and part.image_file.file_id == image.image.file_id
        data = b"".join(agents.files.get_content(part.image_file.file_id))
        assert data.startswith(b"\x89PNG")
        assert agents.files.get(part.image_file.file_id).filename == "chart.png"

        thread = agents.threads.create()
        agents.messages.create(thread_id=thread.id, role="user", content="/file out.csv")
        run = agents.runs.create_and_process(thread_id=thread.id, agent_id="asst_demo", polling_interval=0.05)
        answer = next(m for m in agents.messages.list(thread_id=thread.id) if m.role == "assistant")
        text = answer.content[0]
        assert isinstance(text, MessageTextContent)
        note = text.text.annotations[0]
        assert isinstance(note, MessageTextFilePathAnnotation)
        assert b"".join(agents.files.get_content(note.file_path.file_id)).startswith(b"name,value")

        thread = agents.threads.create()
        agents.messages.create(thread_id=thread.id, role="user", content="/cite")
        run = agents.runs.create_and_process(thread_id=thread.id, agent_id="asst_demo", polling_interval=0.05)
        steps = list(agents.run_steps.list(thread_id=thread.id, run_id=run.id))
        calls = [
            c for s in steps if isinstance(s.step_details, RunStepToolCallDetails) for c in s.step_details.tool_calls
        ]
        assert isinstance(calls[0], RunStepFileSearchToolCall)


def test_unknown_files_are_404(aoai: openai.AzureOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        aoai.files.content("assistant-nope")


@pytest.mark.parametrize("text", ["/image", "/cite"])
def test_completed_tool_steps_carry_their_usage_and_the_run_counts_them(aoai: openai.AzureOpenAI, text: str) -> None:
    """A step's usage is null only while it is in progress (openai-openapi `RunStepCompletionUsage`); a
    run's usage covers all its steps."""
    run, steps, _ = _run(aoai, text)
    assert [s["status"] for s in steps] == ["completed"] * len(steps)
    assert all(s["usage"]["prompt_tokens"] > 0 and s["usage"]["completion_tokens"] > 0 for s in steps)
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert getattr(run.usage, field) == sum(s["usage"][field] for s in steps)
