"""The emulator's Azure OpenAI Assistants surface driven by openai's `AzureOpenAI`, as the seed notebook does."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import AzureOpenAI
from openai.types.beta.threads import Run

from tests.support import seed
from tests.support.servers import ServerThread

# openai marks every Assistants method deprecated; these tests drive them on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

API_VERSION = "2024-05-01-preview"
POLL_MS = 20
WAITING = ("queued", "in_progress", "cancelling")
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Looks a key up",
        "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}, "required": ["q"]},
    },
}


@pytest.fixture
def client(emulator: ServerThread) -> Iterator[AzureOpenAI]:
    with AzureOpenAI(azure_endpoint=emulator.url, api_key="k", api_version=API_VERSION, max_retries=0) as c:
        yield c


def _poll(client: AzureOpenAI, thread_id: str, run_id: str, timeout: float = 10) -> Run:
    """The notebook's loop (every 5 s there; every 20 ms here) until the run leaves queued/in_progress."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.beta.threads.runs.retrieve(thread_id=thread_id, run_id=run_id)
        if run.status not in WAITING:
            return run
        assert time.monotonic() < deadline, f"run still {run.status}"
        time.sleep(POLL_MS / 1000)


def _outputs(run: Run, calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, str]]:
    """Run the seed's own functions for every requested call, as the notebook's cell does."""
    assert run.required_action is not None
    outputs = []
    for tc in run.required_action.submit_tool_outputs.tool_calls:
        calls.append((tc.function.name, json.loads(tc.function.arguments)))
        outputs.append({"tool_call_id": tc.id, "output": seed.call(tc.function.name, tc.function.arguments)})
    return outputs


def _flights_assistant(client: AzureOpenAI) -> Any:
    return client.beta.assistants.create(
        name="flights-demo",
        description="You are a helpful AI assistant who helps answering questions",
        tools=seed.TOOLS,  # type: ignore[arg-type]
        model="gpt-4o",
    )


def _assert_flights_answer(text: str) -> None:
    match = re.match(r"There are (\d+) flights between", text)
    assert match, text
    assert int(match.group(1)) == seed.expected_flights()


def _assert_seed_calls(calls: list[tuple[str, dict[str, Any]]]) -> None:
    born = json.loads(seed.my_cat_born_date("Mike"))["cat_born_date"]
    assert calls == [
        ("my_cat_born_date", {"cat_name": "Mike"}),
        ("get_flights", {"date_1": born, "date_2": "2021-04-04"}),
    ]


def _teardown(client: AzureOpenAI, thread_id: str, assistant_id: str) -> None:
    """The notebook's teardown: every message, then the thread, then the assistant."""
    for message in client.beta.threads.messages.list(thread_id):
        deleted = client.beta.threads.messages.delete(message_id=message.id, thread_id=thread_id)
        assert (deleted.id, deleted.deleted, deleted.object) == (message.id, True, "thread.message.deleted")
    assert client.beta.threads.messages.list(thread_id).data == []
    assert client.beta.threads.delete(thread_id=thread_id).deleted is True
    assert client.beta.assistants.delete(assistant_id).deleted is True
    with pytest.raises(openai.NotFoundError) as err:
        client.beta.threads.retrieve(thread_id)
    assert err.value.body["message"] == f"No thread found with id '{thread_id}'."  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.retrieve(assistant_id)


def test_seed_notebook_flow_by_polling(client: AzureOpenAI, emulator: ServerThread) -> None:
    assistant = _flights_assistant(client)
    assert assistant.id.startswith("asst_")
    assert [t.function.name for t in assistant.tools] == ["get_flights", "my_cat_born_date"]  # type: ignore[union-attr]
    thread = client.beta.threads.create()
    assert thread.id.startswith("thread_")
    message = client.beta.threads.messages.create(thread_id=thread.id, role="user", content=seed.QUESTION)
    listed = client.beta.threads.messages.list(thread.id)
    assert [m.id for m in listed.data] == [message.id]
    assert listed.data[0].content[0].text.value == seed.QUESTION  # type: ignore[union-attr]

    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert (run.status, run.assistant_id, run.model, run.usage) == ("queued", assistant.id, "gpt-4o", None)
    calls: list[tuple[str, dict[str, Any]]] = []
    run = _poll(client, thread.id, run.id)
    rounds = 0
    while run.status == "requires_action":
        rounds += 1
        run = client.beta.threads.runs.submit_tool_outputs(
            thread_id=thread.id,
            run_id=run.id,
            tool_outputs=_outputs(run, calls),  # type: ignore[arg-type]
        )
        assert run.status == "queued"
        run = _poll(client, thread.id, run.id)
    assert (run.status, rounds) == ("completed", 2)
    _assert_seed_calls(calls)
    assert run.usage is not None
    assert run.usage.total_tokens == run.usage.prompt_tokens + run.usage.completion_tokens > 0
    assert run.completed_at is not None

    messages = client.beta.threads.messages.list(thread_id=thread.id)
    assert [m.role for m in messages.data] == ["assistant", "user"]
    assert messages.data[0].run_id == run.id
    _assert_flights_answer(messages.data[0].content[0].text.value)  # type: ignore[union-attr]
    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc")
    assert [s.type for s in steps.data] == ["tool_calls", "tool_calls", "message_creation"]
    assert all(s.status == "completed" for s in steps.data)
    first_call = steps.data[0].step_details.tool_calls[0]  # type: ignore[union-attr]
    assert json.loads(first_call.function.output)["cat_born_date"] == calls[1][1]["date_1"]  # type: ignore[union-attr]

    _teardown(client, thread.id, assistant.id)
    view = httpx.get(f"{emulator.url}/_emulator/threads").json()["data"]
    mine = next(t for t in view if t["id"] == thread.id)
    assert (mine["surface"], mine["deleted"], mine["messages"]) == ("openai", True, [])
    assert mine["runs"] == [{"id": run.id, "status": "completed", "assistant_id": assistant.id}]


def test_seed_notebook_flow_streamed(client: AzureOpenAI) -> None:
    assistant = _flights_assistant(client)
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content=seed.QUESTION)
    calls: list[tuple[str, dict[str, Any]]] = []
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        events = [event.event for event in stream]
        run = stream.current_run
        steps = stream.get_final_run_steps()
    assert events[:5] == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
    ]
    assert "thread.run.step.delta" in events
    assert events[-1] == "thread.run.requires_action"
    # the step deltas add up to the whole call, as the client accumulates them
    call = steps[0].step_details.tool_calls[0]  # type: ignore[union-attr]
    assert (call.function.name, json.loads(call.function.arguments)) == ("my_cat_born_date", {"cat_name": "Mike"})  # type: ignore[union-attr]

    texts = []
    while run is not None and run.status == "requires_action":
        with client.beta.threads.runs.submit_tool_outputs_stream(
            thread_id=thread.id,
            run_id=run.id,
            tool_outputs=_outputs(run, calls),  # type: ignore[arg-type]
        ) as stream:
            events = [event.event for event in stream]
            run = stream.current_run
            assert events[:2] == ["thread.run.queued", "thread.run.in_progress"]
            assert events[2] == "thread.run.step.completed"  # the tool step, now with its outputs
            if events[-1] == "thread.run.completed":
                texts = [m.content[0].text.value for m in stream.get_final_messages()]  # type: ignore[union-attr]
    assert run is not None
    assert run.status == "completed"
    assert events[-1] == "thread.run.completed"
    assert events.count("thread.message.delta") > 3
    _assert_seed_calls(calls)
    assert len(texts) == 1
    _assert_flights_answer(texts[0])
    _teardown(client, thread.id, assistant.id)


def test_seed_notebook_flow_with_poll_helpers(client: AzureOpenAI) -> None:
    assistant = _flights_assistant(client)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": seed.QUESTION}])
    calls: list[tuple[str, dict[str, Any]]] = []
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=POLL_MS
    )
    while run.status == "requires_action":
        run = client.beta.threads.runs.submit_tool_outputs_and_poll(
            thread_id=thread.id,
            run_id=run.id,
            tool_outputs=_outputs(run, calls),  # type: ignore[arg-type]
            poll_interval_ms=POLL_MS,
        )
    assert run.status == "completed"
    _assert_seed_calls(calls)
    answer = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
    assert len(answer) == 1
    _assert_flights_answer(answer[0].content[0].text.value)  # type: ignore[union-attr]
    _teardown(client, thread.id, assistant.id)


def test_plain_text_is_echoed_in_several_deltas(client: AzureOpenAI) -> None:
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="hello from the notebook")
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id="asst_demo") as stream:
        deltas = list(stream.text_deltas)
        run = stream.get_final_run()
    assert deltas == ["Echo: ", "hello ", "from ", "the ", "notebook"]
    assert "".join(deltas) == "Echo: hello from the notebook"
    assert run.status == "completed"
    assert run.instructions == "You are a helpful assistant."
    assert run.usage is not None
    assert run.usage.completion_tokens == 5
    # a non-streamed run on the same thread sees the whole conversation and echoes the last user message
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="and again")
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id="asst_demo", poll_interval_ms=POLL_MS
    )
    assert run.status == "completed"
    texts = [m.content[0].text.value for m in client.beta.threads.messages.list(thread.id, order="asc")]  # type: ignore[union-attr]
    assert texts == ["hello from the notebook", "Echo: hello from the notebook", "and again", "Echo: and again"]


def test_two_tool_lines_are_two_parallel_calls_answered_at_once(client: AzureOpenAI) -> None:
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(
        thread_id=thread.id, role="user", content='/tool lookup {"q": 1}\n/tool lookup {"q": 2}'
    )
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id="asst_demo",
        tools=[LOOKUP],
        poll_interval_ms=POLL_MS,  # type: ignore[list-item]
    )
    assert run.status == "requires_action"
    assert run.parallel_tool_calls is True
    assert run.tools[0].function.name == "lookup"  # type: ignore[union-attr]
    assert run.required_action is not None
    tool_calls = run.required_action.submit_tool_outputs.tool_calls
    assert [json.loads(tc.function.arguments) for tc in tool_calls] == [{"q": 1}, {"q": 2}]
    assert len({tc.id for tc in tool_calls}) == 2
    assert all(tc.id.startswith("call_") for tc in tool_calls)
    outputs = [{"tool_call_id": tc.id, "output": f"value {n}"} for n, tc in enumerate(tool_calls, 1)]
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id,
        run_id=run.id,
        tool_outputs=outputs,
        poll_interval_ms=POLL_MS,  # type: ignore[arg-type]
    )
    assert run.status == "completed"
    last = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert last.content[0].text.value == "Tool lookup returned: value 1\nTool lookup returned: value 2"  # type: ignore[union-attr]


def test_create_thread_and_run_streams_the_thread_first(client: AzureOpenAI) -> None:
    with client.beta.threads.create_and_run_stream(
        assistant_id="asst_demo",
        thread={"messages": [{"role": "user", "content": "one shot"}], "metadata": {"k": "v"}},
        metadata={"run": "yes"},
    ) as stream:
        events = [(event.event, event.data) for event in stream]
    assert events[0][0] == "thread.created"
    thread = events[0][1]
    assert thread.metadata == {"k": "v"}  # type: ignore[union-attr]
    assert events[-1][0] == "thread.run.completed"
    run = events[-1][1]
    assert (run.thread_id, run.metadata) == (thread.id, {"run": "yes"})  # type: ignore[union-attr]
    assert client.beta.threads.messages.list(thread.id).data[0].content[0].text.value == "Echo: one shot"  # type: ignore[union-attr]


def test_cancel_stops_a_running_run(client: AzureOpenAI) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "/sleep 5000\nslow"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id="asst_demo")
    cancelling = client.beta.threads.runs.cancel(thread_id=thread.id, run_id=run.id)
    assert cancelling.status == "cancelling"
    started = time.monotonic()
    run = _poll(client, thread.id, run.id)
    assert run.status == "cancelled"
    assert run.cancelled_at is not None
    assert time.monotonic() - started < 1
    with pytest.raises(openai.BadRequestError) as err:
        client.beta.threads.runs.cancel(thread_id=thread.id, run_id=run.id)
    assert err.value.body["message"] == "Cannot cancel run with status 'cancelled'."  # type: ignore[index]
    # the thread is free again
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="next")
