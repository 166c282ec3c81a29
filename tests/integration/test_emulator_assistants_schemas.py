"""Every object and stream event of the emulator's Assistants surfaces matches OpenAI's schemas (Azure mirrors them)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import VERSION
from tests.support import seed
from tests.support.servers import ServerThread
from tests.support.spec import validate

LOOKUP = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


def _schema_of(event: str) -> str:
    if event == "thread.created":
        return "ThreadObject"
    if event == "thread.run.step.delta":
        return "RunStepDeltaObject"
    if event.startswith("thread.run.step."):
        return "RunStepObject"
    if event.startswith("thread.run."):
        return "RunObject"
    if event == "thread.message.delta":
        return "MessageDeltaObject"
    if event.startswith("thread.message."):
        return "MessageObject"
    raise AssertionError(f"unexpected event {event}")


def _check_event(event: str, data: Any) -> None:
    if event != "done":
        validate(data, _schema_of(event))
    validate({"event": event, "data": data}, "AssistantStreamEvent")


def _events(response: httpx.Response) -> list[tuple[str, Any]]:
    """Read an SSE body strictly (`event:` then one `data:` line, `\\n\\n` between events) and validate it all."""
    assert response.status_code == 200, response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = "".join(response.iter_text())
    assert "\r" not in raw
    assert raw.endswith("event: done\ndata: [DONE]\n\n")
    events = []
    for block in raw[:-2].split("\n\n"):
        lines = block.split("\n")
        assert len(lines) == 2, block
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        event, payload = lines[0][len("event: ") :], lines[1][len("data: ") :]
        data = payload if event == "done" else json.loads(payload)
        _check_event(event, data)
        events.append((event, data))
    return events


def _stream(client: httpx.Client, path: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        return _events(response)


def _thread(client: httpx.Client, text: str) -> str:
    thread = client.post("/threads", json={"messages": [{"role": "user", "content": text}]}).json()
    validate(thread, "ThreadObject")
    return str(thread["id"])


def _wait(client: httpx.Client, thread_id: str, run_id: str, *statuses: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while (run := client.get(f"/threads/{thread_id}/runs/{run_id}").json())["status"] not in statuses:
        assert time.monotonic() < deadline, run["status"]
        time.sleep(0.02)
    validate(run, "RunObject")
    return run


def _validate_thread_contents(client: httpx.Client, thread_id: str) -> None:
    messages = client.get(f"/threads/{thread_id}/messages").json()
    validate(messages, "ListMessagesResponse")
    for message in messages["data"]:
        validate(client.get(f"/threads/{thread_id}/messages/{message['id']}").json(), "MessageObject")
    runs = client.get(f"/threads/{thread_id}/runs").json()
    validate(runs, "ListRunsResponse")
    for run in runs["data"]:
        modified = client.post(f"/threads/{thread_id}/runs/{run['id']}", json={"metadata": {"seen": "yes"}}).json()
        validate(modified, "RunObject")
        assert modified["metadata"] == {"seen": "yes"}
        steps = client.get(f"/threads/{thread_id}/runs/{run['id']}/steps").json()
        if steps["data"]:
            validate(steps, "ListRunStepsResponse")
        for step in steps["data"]:
            validate(client.get(f"/threads/{thread_id}/runs/{run['id']}/steps/{step['id']}").json(), "RunStepObject")


def test_assistant_objects_lists_and_deletions(aoai: httpx.Client) -> None:
    created = aoai.post(
        "/assistants",
        json={
            "model": "gpt-4o",
            "name": "flights-demo",
            "description": "d",
            "instructions": "i",
            "tools": seed.TOOLS,
            "metadata": {"k": "v"},
            "temperature": 0.5,
            "top_p": 0.9,
            "response_format": {"type": "json_object"},
        },
    ).json()
    validate(created, "AssistantObject")
    assert created["tools"][0]["function"]["strict"] is False
    modified = aoai.post(f"/assistants/{created['id']}", json={"name": "renamed", "tools": [LOOKUP]}).json()
    validate(modified, "AssistantObject")
    assert (modified["name"], modified["description"]) == ("renamed", "d")
    listed = aoai.get("/assistants", params={"limit": 2, "order": "asc"}).json()
    validate(listed, "ListAssistantsResponse")
    assert [a["id"] for a in listed["data"]] == ["asst_demo", "asst_flights"]
    assert listed["has_more"] is True
    for assistant in ("asst_demo", "asst_flights"):
        validate(aoai.get(f"/assistants/{assistant}").json(), "AssistantObject")
    validate(aoai.delete(f"/assistants/{created['id']}").json(), "DeleteAssistantResponse")

    thread_id = _thread(aoai, "hi")
    validate(aoai.post(f"/threads/{thread_id}", json={"metadata": {"a": "b"}}).json(), "ThreadObject")
    message = aoai.post(
        f"/threads/{thread_id}/messages",
        json={
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "image_file", "image_file": {"file_id": "assistant-1", "detail": "low"}},
            ],
            "attachments": [{"file_id": "assistant-2", "tools": [{"type": "file_search"}]}],
            "metadata": {"m": "1"},
        },
    ).json()
    validate(message, "MessageObject")
    validate(aoai.post(f"/threads/{thread_id}/messages/{message['id']}", json={"metadata": {}}).json(), "MessageObject")
    validate(aoai.delete(f"/threads/{thread_id}/messages/{message['id']}").json(), "DeleteMessageResponse")
    validate(aoai.delete(f"/threads/{thread_id}").json(), "DeleteThreadResponse")


def test_reply_stream_from_create_thread_and_run(aoai: httpx.Client) -> None:
    events = _stream(
        aoai,
        "/threads/runs",
        {
            "assistant_id": "asst_demo",
            "thread": {"messages": [{"role": "user", "content": "hello schema"}]},
            "instructions": "Be exact.",
            "tool_choice": "none",
            "truncation_strategy": {"type": "last_messages", "last_messages": 5},
            "max_prompt_tokens": 1000,
            "max_completion_tokens": 500,
            "temperature": 0.2,
            "parallel_tool_calls": False,
            "metadata": {"k": "v"},
        },
    )
    names = [e for e, _ in events]
    assert names == [
        "thread.created",
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.message.created",
        "thread.message.in_progress",
        "thread.message.delta",
        "thread.message.delta",
        "thread.message.delta",
        "thread.message.completed",
        "thread.run.step.completed",
        "thread.run.completed",
        "done",
    ]
    run = events[-2][1]
    assert (run["instructions"], run["tool_choice"], run["temperature"], run["parallel_tool_calls"]) == (
        "Be exact.",
        "none",
        0.2,
        False,
    )
    assert run["truncation_strategy"] == {"type": "last_messages", "last_messages": 5}
    assert run["usage"]["completion_tokens"] == 3
    assert events[11][1]["content"][0]["text"]["value"] == "Echo: hello schema"
    assert [d["delta"]["content"][0]["text"]["value"] for e, d in events if e == "thread.message.delta"] == [
        "Echo: ",
        "hello ",
        "schema",
    ]
    _validate_thread_contents(aoai, run["thread_id"])


def test_tool_call_streams_and_submit_stream(aoai: httpx.Client) -> None:
    thread_id = _thread(aoai, seed.QUESTION)
    events = _stream(aoai, f"/threads/{thread_id}/runs", {"assistant_id": "asst_flights"})
    names = [e for e, _ in events]
    assert names[-2:] == ["thread.run.requires_action", "done"]
    deltas = [d for e, d in events if e == "thread.run.step.delta"]
    assert len(deltas) == 3
    arguments = "".join(d["delta"]["step_details"]["tool_calls"][0]["function"]["arguments"] for d in deltas)
    assert json.loads(arguments) == {"cat_name": "Mike"}
    run = events[-2][1]
    for round_ in range(2):
        calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
        outputs = [
            {"tool_call_id": c["id"], "output": seed.call(c["function"]["name"], c["function"]["arguments"])}
            for c in calls
        ]
        path = f"/threads/{thread_id}/runs/{run['id']}/submit_tool_outputs"
        events = _stream(aoai, path, {"tool_outputs": outputs})
        names = [e for e, _ in events]
        assert names[:3] == ["thread.run.queued", "thread.run.in_progress", "thread.run.step.completed"]
        completed_step = events[2][1]
        assert completed_step["step_details"]["tool_calls"][0]["function"]["output"] == outputs[0]["output"]
        assert completed_step["usage"]["total_tokens"] > 0
        run = events[-2][1]
        assert run["status"] == ("requires_action" if round_ == 0 else "completed")
    _validate_thread_contents(aoai, thread_id)


@pytest.mark.parametrize(
    ("command", "status"), [("/fail rate_limit_exceeded", "failed"), ("/incomplete", "incomplete")]
)
def test_failed_and_incomplete_runs(aoai: httpx.Client, command: str, status: str) -> None:
    thread_id = _thread(aoai, command)
    events = _stream(aoai, f"/threads/{thread_id}/runs", {"assistant_id": "asst_demo"})
    run = events[-2][1]
    assert (events[-2][0], run["status"]) == (f"thread.run.{status}", status)
    if status == "failed":
        assert run["last_error"]["code"] == "rate_limit_exceeded"
        assert run["failed_at"] is not None
    else:
        assert run["incomplete_details"] == {"reason": "max_completion_tokens"}
        message = next(d for e, d in events if e == "thread.message.incomplete")
        assert message["incomplete_details"] == {"reason": "max_tokens"}
    _validate_thread_contents(aoai, thread_id)


def test_cancelled_stream(aoai: httpx.Client, emulator: ServerThread) -> None:
    httpx.post(f"{emulator.url}/_emulator/config", json={"token_delay_ms": 100}).raise_for_status()
    thread_id = _thread(aoai, "a b c d e f g h i j k l m n o p")
    seen = threading.Event()
    result: list[list[tuple[str, Any]]] = []

    def consume() -> None:
        with (
            httpx.Client(base_url=str(aoai.base_url), headers={"api-key": "k"}, params=VERSION) as c,
            c.stream(
                "POST", f"/threads/{thread_id}/runs", json={"assistant_id": "asst_demo", "stream": True}
            ) as response,
        ):
            original = response.iter_text

            def watching() -> Iterator[str]:
                for chunk in original():
                    if "thread.message.delta" in chunk:
                        seen.set()
                    yield chunk

            response.iter_text = watching  # type: ignore[method-assign]
            result.append(_events(response))

    reader = threading.Thread(target=consume)
    reader.start()
    assert seen.wait(5)
    run_id = aoai.get(f"/threads/{thread_id}/runs").json()["first_id"]
    cancelling = aoai.post(f"/threads/{thread_id}/runs/{run_id}/cancel")
    validate(cancelling.json(), "RunObject")
    assert cancelling.json()["status"] == "cancelling"
    reader.join(5)
    names = [e for e, _ in result[0]]
    assert names[-5:] == [
        "thread.run.cancelling",
        "thread.run.step.cancelled",
        "thread.message.incomplete",
        "thread.run.cancelled",
        "done",
    ]
    assert result[0][-3][1]["incomplete_details"] == {"reason": "run_cancelled"}
    _validate_thread_contents(aoai, thread_id)


def test_expired_run(aoai: httpx.Client, emulator: ServerThread) -> None:
    httpx.post(f"{emulator.url}/_emulator/config", json={"run_expiry_s": 0.3}).raise_for_status()
    thread_id = _thread(aoai, seed.QUESTION)
    created = aoai.post(f"/threads/{thread_id}/runs", json={"assistant_id": "asst_flights"}).json()
    validate(created, "RunObject")
    run = _wait(aoai, thread_id, created["id"], "expired")
    _check_event("thread.run.expired", run)
    steps = aoai.get(f"/threads/{thread_id}/runs/{run['id']}/steps").json()
    validate(steps, "ListRunStepsResponse")
    _check_event("thread.run.step.expired", steps["data"][0])
    _validate_thread_contents(aoai, thread_id)
