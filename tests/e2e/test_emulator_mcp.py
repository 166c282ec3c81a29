"""MCP tools with approvals on the emulator (driver `/mcp NAME {json}`, app/emulator/script.py): classic runs
stop in `requires_action` / `submit_tool_approval` and take `tool_approvals`; v2 answers with
`mcp_list_tools` and `mcp_approval_request` items and takes an `mcp_approval_response` input item.

azure-ai-agents 1.1.0 (the newest on PyPI here) has no MCP models yet, so approvals go through its raw JSON
body overload and are checked on the wire; openai.AzureOpenAI reads the streams."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from azure.ai.projects import AIProjectClient

from tests.e2e.test_emulator_agents_classic import _client
from tests.e2e.test_emulator_foundry_v2 import StaticCredential as ProjectCredential
from tests.support.servers import ServerThread
from tests.support.spec import validate

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")
ASK = '/mcp search {"q": "emulators"}'
OUTPUT = json.dumps({"tool": "search", "arguments": {"q": "emulators"}, "result": "search ran"})


@pytest.fixture
def aoai(emulator: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{emulator.url}/openai", params={"api-version": "2025-05-15-preview"}, headers={"api-key": "k"}
    ) as client:
        yield client


def _waiting(c: httpx.Client, text: str = ASK, **extra: Any) -> dict[str, Any]:
    thread = {"messages": [{"role": "user", "content": text}]}
    run: dict[str, Any] = c.post("/threads/runs", json={"assistant_id": "asst_mcp", "thread": thread, **extra}).json()
    deadline = time.monotonic() + 5
    while run["status"] in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
        run = c.get(f"/threads/{run['thread_id']}/runs/{run['id']}").json()
    return run


def _events(response: httpx.Response) -> list[tuple[str, Any]]:
    lines = response.text.split("\n\n")
    out = []
    for block in lines:
        if block.startswith("event: "):
            name, data = block.split("\n", 1)
            payload = data.removeprefix("data: ")
            out.append((name[7:], payload if payload == "[DONE]" else json.loads(payload)))
    return out


def test_classic_run_waits_for_an_approval_and_uses_the_mcp_result(aoai: httpx.Client) -> None:
    run = _waiting(aoai)
    assert run["status"] == "requires_action"
    action = run["required_action"]
    assert action["type"] == "submit_tool_approval"
    [call] = action["submit_tool_approval"]["tool_calls"]
    assert {k: call[k] for k in ("type", "name", "arguments", "server_label")} == {
        "type": "mcp",
        "name": "search",
        "arguments": '{"q": "emulators"}',
        "server_label": "docs",
    }
    where = f"/threads/{run['thread_id']}/runs/{run['id']}"
    approve = {"tool_approvals": [{"tool_call_id": call["id"], "approve": True}], "stream": True}
    events = _events(aoai.post(f"{where}/submit_tool_outputs", json=approve))
    names = [n for n, _ in events]
    assert names[0] == "thread.run.queued" and names[-2:] == ["thread.run.completed", "done"]
    completed = [d for n, d in events if n == "thread.run.step.completed"]
    assert completed[0]["step_details"]["tool_calls"][0]["output"] == OUTPUT
    validate(completed[-1], "RunStepObject")  # OpenAI's schema has no `mcp` tool call; the message step
    messages = aoai.get(f"/threads/{run['thread_id']}/messages", params={"order": "asc"}).json()["data"]
    assert messages[-1]["content"][0]["text"]["value"] == f"MCP search returned: {OUTPUT}"
    steps = aoai.get(f"{where}/steps", params={"order": "asc"}).json()["data"]
    assert [s["type"] for s in steps] == ["tool_calls", "message_creation"]
    assert steps[0]["step_details"]["tool_calls"][0] == {**call, "output": OUTPUT}


def test_classic_denied_call_is_not_made(aoai: httpx.Client) -> None:
    run = _waiting(aoai)
    call_id = run["required_action"]["submit_tool_approval"]["tool_calls"][0]["id"]
    where = f"/threads/{run['thread_id']}/runs/{run['id']}"
    deny = {"tool_approvals": [{"tool_call_id": call_id, "approve": False}]}
    assert aoai.post(f"{where}/submit_tool_outputs", json=deny).json()["status"] == "queued"
    deadline = time.monotonic() + 5
    while (done := aoai.get(where).json())["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert done["usage"]["total_tokens"] > 0
    last = aoai.get(f"/threads/{run['thread_id']}/messages").json()["data"][0]
    assert last["content"][0]["text"]["value"] == "MCP search was not approved, so it was not called."
    steps = aoai.get(f"{where}/steps", params={"order": "asc"}).json()["data"]
    assert steps[0]["step_details"]["tool_calls"][0]["output"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"tool_approvals": []}, "Expected tool approvals for call_ids"),
        ({"tool_approvals": [{"tool_call_id": "call_other", "approve": True}]}, "Expected tool approvals"),
        ({"tool_outputs": [{"tool_call_id": "x", "output": "y"}]}, "waiting for tool approvals"),
        ({"tool_approvals": [{"tool_call_id": "x"}]}, "Missing required parameter: 'tool_approvals[0].approve'."),
        ({}, "Missing required parameter: 'tool_outputs'."),
    ],
)
def test_classic_approvals_must_answer_every_call(aoai: httpx.Client, body: dict[str, Any], message: str) -> None:
    run = _waiting(aoai)
    where = f"/threads/{run['thread_id']}/runs/{run['id']}"
    refused = aoai.post(f"{where}/submit_tool_outputs", json=body)
    assert refused.status_code == 400 and message in refused.json()["error"]["message"]
    assert aoai.get(where).json()["status"] == "requires_action"  # still waiting, nothing half-applied


def test_classic_function_runs_refuse_approvals(aoai: httpx.Client) -> None:
    thread = {"messages": [{"role": "user", "content": "/tool get_flights {}"}]}
    run = aoai.post("/threads/runs", json={"assistant_id": "asst_flights", "thread": thread}).json()
    where = f"/threads/{run['thread_id']}/runs/{run['id']}"
    while aoai.get(where).json()["status"] != "requires_action":
        time.sleep(0.02)
    refused = aoai.post(f"{where}/submit_tool_outputs", json={"tool_approvals": []})
    assert refused.status_code == 400 and "waiting for tool outputs" in refused.json()["error"]["message"]


def test_classic_never_needs_no_approval_and_waiting_runs_expire(aoai: httpx.Client, emulator: ServerThread) -> None:
    resources = {"mcp": [{"server_label": "docs", "require_approval": "never", "headers": {}}]}
    run = _waiting(aoai, tool_resources=resources)
    assert run["status"] == "completed"
    steps = aoai.get(f"/threads/{run['thread_id']}/runs/{run['id']}/steps", params={"order": "asc"}).json()
    assert steps["data"][0]["step_details"]["tool_calls"][0]["output"] == OUTPUT
    httpx.post(f"{emulator.url}/_emulator/config", json={"run_expiry_s": 0.3}).raise_for_status()
    waiting = _waiting(aoai)
    time.sleep(0.5)
    expired = aoai.get(f"/threads/{waiting['thread_id']}/runs/{waiting['id']}").json()
    assert (expired["status"], expired["required_action"]) == ("expired", None)


def test_classic_approval_through_azure_ai_agents(emulator: ServerThread) -> None:
    """The project surface, through AgentsClient: the run and its steps parse, and the raw body carries
    `tool_approvals` (as the SDK's `ToolApproval` serializes, azure-ai-agents samples `sample_agents_mcp.py`)."""
    with _client(emulator.url) as agents:
        thread = agents.threads.create()
        agents.messages.create(thread_id=thread.id, role="user", content=ASK)
        run = agents.runs.create(thread_id=thread.id, agent_id="asst_mcp")
        while run.status in ("queued", "in_progress"):
            time.sleep(0.02)
            run = agents.runs.get(thread_id=thread.id, run_id=run.id)
        assert run.status == "requires_action"
        action: Any = run.required_action
        call = action["submit_tool_approval"]["tool_calls"][0]
        body = {"tool_approvals": [{"tool_call_id": call["id"], "approve": True, "headers": {"k": "v"}}]}
        agents.runs.submit_tool_outputs(thread.id, run.id, body)
        while run.status not in ("completed", "failed"):
            time.sleep(0.02)
            run = agents.runs.get(thread_id=thread.id, run_id=run.id)
        assert run.status == "completed"
        steps = list(agents.run_steps.list(thread_id=thread.id, run_id=run.id))
        tool_step = next(s for s in steps if s.type == "tool_calls")
        assert tool_step.step_details["tool_calls"][0]["type"] == "mcp"


def test_classic_stream_reaches_requires_action_through_openai(emulator: ServerThread) -> None:
    with (
        openai.AzureOpenAI(
            azure_endpoint=emulator.url, api_key="k", api_version="2025-05-15-preview", max_retries=0
        ) as client,
        client.beta.threads.create_and_run_stream(
            assistant_id="asst_mcp", thread={"messages": [{"role": "user", "content": ASK}]}
        ) as stream,
    ):
        events = list(stream)
    names = [e.event for e in events]
    assert names[-1] == "thread.run.requires_action"
    assert "thread.run.step.delta" in names
    run: Any = events[-1].data
    assert run.required_action.type == "submit_tool_approval"


MCP_AGENT = {"agent_reference": {"type": "agent_reference", "name": "mcp-agent"}}


@pytest.fixture
def v2(emulator: ServerThread) -> Iterator[openai.OpenAI]:
    with (
        AIProjectClient(endpoint=f"{emulator.url}/api/projects/demo", credential=ProjectCredential()) as project,
        project.get_openai_client() as client,
    ):
        yield client


def _raw(v2: openai.OpenAI, stream: bool = False, **body: Any) -> Any:
    raw = v2.responses.with_raw_response.create(**body, stream=stream, extra_body=MCP_AGENT).http_response
    if not stream:
        return raw.json()
    events = [json.loads(line[6:]) for line in raw.iter_lines() if line.startswith("data: ")]
    for event in events:
        validate(event, "ResponseStreamEvent")
    return events


def test_v2_approval_request_then_mcp_call(v2: openai.OpenAI) -> None:
    first = _raw(v2, input=ASK)
    validate(first, "Response")
    assert first["status"] == "completed"
    assert [i["type"] for i in first["output"]] == ["mcp_list_tools", "mcp_approval_request"]
    listing, request = first["output"]
    assert (listing["server_label"], [t["name"] for t in listing["tools"]]) == ("docs", ["search"])
    assert {k: request[k] for k in ("server_label", "name", "arguments")} == {
        "server_label": "docs",
        "name": "search",
        "arguments": '{"q": "emulators"}',
    }
    assert any(t["type"] == "mcp" for t in first["tools"])
    answer = {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}
    second = v2.responses.create(input=[answer], previous_response_id=first["id"], extra_body=MCP_AGENT)  # type: ignore[list-item]
    assert [i.type for i in second.output] == ["mcp_call", "message"]
    call: Any = second.output[0]
    assert (call.output, call.approval_request_id, call.server_label) == (OUTPUT, request["id"], "docs")
    assert second.output_text == f"MCP search returned: {OUTPUT}"
    assert second.usage is not None and second.usage.total_tokens > 0


def test_v2_denied_and_streamed(v2: openai.OpenAI) -> None:
    events = _raw(v2, stream=True, input=ASK)
    kinds = [e["type"] for e in events]
    assert "response.mcp_list_tools.completed" in kinds and kinds[-1] == "response.completed"
    request = events[-1]["response"]["output"][1]
    assert request["type"] == "mcp_approval_request"
    deny = {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": False}
    denied = _raw(v2, input=[deny], previous_response_id=events[-1]["response"]["id"])
    validate(denied, "Response")
    assert [i["type"] for i in denied["output"]] == ["message"]
    assert denied["output"][0]["content"][0]["text"] == "MCP search was not approved, so it was not called."
    # Approved and streamed: the mcp_call item with its events, then the message.
    again = _raw(v2, stream=True, input=ASK)
    approve = {**deny, "approval_request_id": again[-1]["response"]["output"][1]["id"], "approve": True}
    made = _raw(v2, stream=True, input=[approve], previous_response_id=again[-1]["response"]["id"])
    kinds = [e["type"] for e in made]
    for expected in (
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
    ):
        assert expected in kinds
    assert [i["type"] for i in made[-1]["response"]["output"]] == ["mcp_call", "message"]


def test_v2_in_a_conversation_lists_tools_once(v2: openai.OpenAI) -> None:
    conversation = v2.conversations.create()
    first = _raw(v2, input=ASK, conversation=conversation.id)
    request = first["output"][-1]
    answer = {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}
    second = _raw(v2, input=[answer], conversation=conversation.id)
    assert [i["type"] for i in second["output"]] == ["mcp_call", "message"]
    third = _raw(v2, input=ASK, conversation=conversation.id)
    assert [i["type"] for i in third["output"]] == ["mcp_approval_request"]  # the listing is in the context


def test_v2_refuses_unknown_approvals_and_server_side_mcp_items(emulator: ServerThread) -> None:
    with httpx.Client(
        base_url=f"{emulator.url}/api/projects/demo/openai/v1", headers={"Authorization": "Bearer t"}
    ) as c:
        first = c.post("/responses", json={"input": ASK, **MCP_AGENT}).json()
        unknown = {"type": "mcp_approval_response", "approval_request_id": "mcpr_nope", "approve": True}
        refused = c.post("/responses", json={"input": [unknown], "previous_response_id": first["id"], **MCP_AGENT})
        assert refused.status_code == 400 and "mcpr_nope" in refused.json()["error"]["message"]
        bad = {"type": "mcp_approval_response", "approval_request_id": first["output"][1]["id"], "approve": "yes"}
        refused = c.post("/responses", json={"input": [bad], "previous_response_id": first["id"], **MCP_AGENT})
        assert (refused.status_code, refused.json()["error"]["param"]) == (400, "input[0].approve")
        for item in first["output"]:  # what the service produced may not come back as input
            resent = c.post("/responses", json={"input": [{"role": "user", "content": "hi"}, item], **MCP_AGENT})
            assert (resent.status_code, resent.json()["error"]["code"]) == (400, "invalid_payload")
