"""The emulator's Assistants surfaces are strict like Azure: api-version, bodies, ids, active runs, tool outputs,
expiry, credentials."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.integration.conftest import VERSION
from tests.support import seed
from tests.support.servers import ServerThread

LOOKUP = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    return error


def _wait(client: httpx.Client, thread_id: str, run_id: str, *statuses: str, timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = client.get(f"/threads/{thread_id}/runs/{run_id}").json()
        if run["status"] in statuses:
            return run
        assert time.monotonic() < deadline, run["status"]
        time.sleep(0.02)


def _waiting_run(client: httpx.Client, content: str = seed.QUESTION, **run: Any) -> tuple[str, dict[str, Any]]:
    """A thread whose run waits in requires_action (flights-demo asks for my_cat_born_date first)."""
    thread = client.post("/threads", json={"messages": [{"role": "user", "content": content}]}).json()
    created = client.post(f"/threads/{thread['id']}/runs", json={"assistant_id": "asst_flights", **run}).json()
    return thread["id"], _wait(client, thread["id"], created["id"], "requires_action")


def test_api_version_is_required_on_both_surfaces(emulator: ServerThread) -> None:
    # A key for Azure OpenAI, a token for the project (which takes Entra only).
    with httpx.Client(base_url=emulator.url, headers={"api-key": "k", "Authorization": "Bearer t"}) as c:
        for method, path in [
            ("GET", "/openai/assistants"),
            ("POST", "/openai/threads"),
            ("GET", "/openai/threads/thread_x/runs"),
            ("POST", "/api/projects/demo/threads"),
        ]:
            error = _error(c.request(method, path, json={}), 400)
            assert error["message"] == "Missing required query parameter 'api-version'."
            assert error["param"] == "api-version"
        assert c.get("/openai/assistants", params=VERSION).status_code == 200


def test_azure_headers_on_every_answer(aoai: httpx.Client) -> None:
    ok = aoai.get("/assistants")
    missing = aoai.get("/threads/thread_nope")
    for response in (ok, missing):
        assert len(response.headers["apim-request-id"]) == 36
        assert int(response.headers["x-ratelimit-remaining-requests"]) >= 0
    assert ok.headers["apim-request-id"] != missing.headers["apim-request-id"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/assistants", {"model": "gpt-4o", "temprature": 1}, "temprature"),
        ("/threads", {"messages": [], "foo": 1}, "foo"),
        ("/threads/runs", {"assistant_id": "asst_demo", "additional_messages": []}, "additional_messages"),
        ("/threads/runs", {"assistant_id": "asst_demo", "thread": {"messages": [], "x": 1}}, "thread.x"),
        (
            "/threads",
            {"messages": [{"role": "user", "content": "hi", "file_ids": ["f"]}]},
            "messages[0].file_ids",
        ),
        (
            "/assistants",
            {"model": "gpt-4o", "tools": [{"type": "function", "function": {"name": "f", "strict": True, "x": 1}}]},
            "tools[0].function.x",
        ),
    ],
)
def test_unknown_body_fields_are_400(aoai: httpx.Client, path: str, body: dict[str, Any], param: str) -> None:
    error = _error(aoai.post(path, json=body), 400)
    assert (error["code"], error["param"]) == ("unknown_parameter", param)
    assert error["message"] == f"Unknown parameter: '{param}'."
    assert error["type"] == "invalid_request_error"


def test_unknown_fields_on_messages_runs_and_tool_outputs(aoai: httpx.Client) -> None:
    thread_id, run = _waiting_run(aoai)
    error = _error(
        aoai.post(f"/threads/{thread_id}/runs", json={"assistant_id": "asst_demo", "stream_options": {}}), 400
    )
    assert (error["code"], error["param"]) == ("unknown_parameter", "stream_options")
    call_id = run["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
    error = _error(
        aoai.post(
            f"/threads/{thread_id}/runs/{run['id']}/submit_tool_outputs",
            json={"tool_outputs": [{"tool_call_id": call_id, "output": "x", "extra": 1}]},
        ),
        400,
    )
    assert (error["code"], error["param"]) == ("unknown_parameter", "tool_outputs[0].extra")
    message_id = aoai.get(f"/threads/{thread_id}/messages").json()["first_id"]
    error = _error(aoai.post(f"/threads/{thread_id}/messages/{message_id}", json={"metadata": {}, "content": "y"}), 400)
    assert error["code"] == "unknown_parameter"
    # and bad values are refused as well
    assert _error(aoai.post("/assistants", json={"name": "no model"}), 400)["param"] == "model"
    bad_role = _error(aoai.post("/threads", json={"messages": [{"role": "system", "content": "x"}]}), 400)
    assert (bad_role["param"], bad_role["code"]) == ("messages[0].role", "invalid_value")


def test_one_active_run_per_thread_with_azures_messages(aoai: httpx.Client) -> None:
    thread_id, run = _waiting_run(aoai)
    error = _error(aoai.post(f"/threads/{thread_id}/messages", json={"role": "user", "content": "more"}), 400)
    assert error == {
        "message": f"Can't add messages to {thread_id} while a run {run['id']} is active.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    error = _error(aoai.post(f"/threads/{thread_id}/runs", json={"assistant_id": "asst_demo"}), 400)
    assert error["message"] == f"Thread {thread_id} already has an active run {run['id']}."
    # while queued (before it even starts) the run is active too
    other = aoai.post("/threads", json={"messages": [{"role": "user", "content": "/sleep 300\nhi"}]}).json()["id"]
    queued = aoai.post(f"/threads/{other}/runs", json={"assistant_id": "asst_demo"}).json()
    assert queued["status"] == "queued"
    message = _error(aoai.post(f"/threads/{other}/messages", json={"role": "user", "content": "x"}), 400)["message"]
    assert message == f"Can't add messages to {other} while a run {queued['id']} is active."
    _wait(aoai, other, queued["id"], "completed")
    assert aoai.post(f"/threads/{other}/messages", json={"role": "user", "content": "x"}).status_code == 200


def test_tool_outputs_must_answer_every_call(aoai: httpx.Client) -> None:
    thread = aoai.post("/threads", json={"messages": [{"role": "user", "content": "/tool lookup {}\n/tool lookup {}"}]})
    thread_id = thread.json()["id"]
    created = aoai.post(f"/threads/{thread_id}/runs", json={"assistant_id": "asst_demo", "tools": [LOOKUP]}).json()
    run = _wait(aoai, thread_id, created["id"], "requires_action")
    first, second = (c["id"] for c in run["required_action"]["submit_tool_outputs"]["tool_calls"])
    submit = f"/threads/{thread_id}/runs/{run['id']}/submit_tool_outputs"
    error = _error(aoai.post(submit, json={"tool_outputs": [{"tool_call_id": second, "output": "2"}]}), 400)
    assert error["message"] == f"Expected tool outputs for call_ids ['{first}', '{second}'], got ['{second}']"
    wrong = [{"tool_call_id": first, "output": "1"}, {"tool_call_id": "call_nope", "output": "2"}]
    error = _error(aoai.post(submit, json={"tool_outputs": wrong}), 400)
    assert (
        error["message"] == f"Expected tool outputs for call_ids ['{first}', '{second}'], got ['{first}', 'call_nope']"
    )
    assert _wait(aoai, thread_id, run["id"], "requires_action")["status"] == "requires_action"
    both = [{"tool_call_id": first, "output": "1"}, {"tool_call_id": second, "output": "2"}]
    accepted = aoai.post(submit, json={"tool_outputs": both})
    assert (accepted.status_code, accepted.json()["status"]) == (200, "queued")
    assert accepted.json()["required_action"] is None
    done = _wait(aoai, thread_id, run["id"], "completed")
    error = _error(aoai.post(submit, json={"tool_outputs": both}), 400)
    assert error["message"] == 'Runs in status "completed" do not accept tool outputs.'
    assert done["usage"]["total_tokens"] > 0


def test_unknown_ids_are_404(aoai: httpx.Client) -> None:
    assert _error(aoai.get("/threads/thread_nope"), 404)["message"] == "No thread found with id 'thread_nope'."
    assert _error(aoai.get("/assistants/asst_nope"), 404)["message"] == "No assistant found with id 'asst_nope'."
    thread_id = aoai.post("/threads").json()["id"]
    assert _error(aoai.get(f"/threads/{thread_id}/runs/run_nope"), 404)["message"] == "No run found with id 'run_nope'."
    error = _error(aoai.get(f"/threads/{thread_id}/messages/msg_nope"), 404)
    assert error["message"] == "No message found with id 'msg_nope'."
    error = _error(aoai.post(f"/threads/{thread_id}/runs", json={"assistant_id": "asst_nope"}), 404)
    assert error["message"] == "No assistant found with id 'asst_nope'."
    aoai.post(f"/threads/{thread_id}/messages", json={"role": "user", "content": "hi"})
    run = aoai.post(f"/threads/{thread_id}/runs", json={"assistant_id": "asst_demo"}).json()
    error = _error(aoai.get(f"/threads/{thread_id}/runs/{run['id']}/steps/step_nope"), 404)
    assert error["message"] == "No run step found with id 'step_nope'."
    assert _error(aoai.delete("/threads/thread_nope"), 404)["code"] is None
    assert aoai.delete(f"/threads/{thread_id}").json() == {"id": thread_id, "object": "thread.deleted", "deleted": True}
    assert (
        _error(aoai.get(f"/threads/{thread_id}/messages"), 404)["message"] == f"No thread found with id '{thread_id}'."
    )


def test_unanswered_tool_calls_expire_at_expires_at(aoai: httpx.Client, emulator: ServerThread) -> None:
    httpx.post(f"{emulator.url}/_emulator/config", json={"run_expiry_s": 1}).raise_for_status()
    thread_id, run = _waiting_run(aoai)
    assert run["expires_at"] == run["created_at"] + 1
    call_id = run["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
    expired = _wait(aoai, thread_id, run["id"], "expired", timeout=3)
    assert time.time() >= expired["expires_at"]
    assert expired["required_action"] is None
    steps = aoai.get(f"/threads/{thread_id}/runs/{run['id']}/steps").json()["data"]
    assert [(s["status"], s["expired_at"] is not None) for s in steps] == [("expired", True)]
    error = _error(
        aoai.post(
            f"/threads/{thread_id}/runs/{run['id']}/submit_tool_outputs",
            json={"tool_outputs": [{"tool_call_id": call_id, "output": "late"}]},
        ),
        400,
    )
    assert error["message"] == 'Runs in status "expired" do not accept tool outputs.'
    # an expired run no longer blocks the thread
    assert aoai.post(f"/threads/{thread_id}/messages", json={"role": "user", "content": "again"}).status_code == 200


def test_missing_credentials_are_401(emulator: ServerThread) -> None:
    response = httpx.get(f"{emulator.url}/openai/assistants", params=VERSION)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "401"
    assert "api-key" in error["message"]
    # A project endpoint answers with the gateway's Entra body (see test_emulator_project_auth.py).
    response = httpx.get(f"{emulator.url}/api/projects/demo/threads", params=VERSION)
    assert response.status_code == 401
    assert response.json()["statusCode"] == 401
    assert (
        httpx.get(
            f"{emulator.url}/openai/assistants", params=VERSION, headers={"Authorization": "Basic abc"}
        ).status_code
        == 401
    )


def test_threads_are_listed_only_on_foundry_classic(aoai: httpx.Client, classic: httpx.Client) -> None:
    openai_thread = aoai.post("/threads").json()["id"]
    error = _error(aoai.get("/threads"), 405)
    assert error["message"] == "The requested method GET is not allowed."
    classic_thread = classic.post("/threads", json={"metadata": {"k": "v"}}).json()["id"]
    listed = classic.get("/threads").json()
    assert [t["id"] for t in listed["data"]] == [classic_thread]
    assert (listed["object"], listed["first_id"], listed["last_id"], listed["has_more"]) == (
        "list",
        classic_thread,
        classic_thread,
        False,
    )
    empty = classic.get("/threads", params={"after": classic_thread}).json()
    assert (empty["data"], empty["last_id"]) == ([], None)  # azure-ai-agents stops paging on a null last_id
    # listing is scoped to the project's classic threads; an id reaches its thread from either surface
    other_project = str(classic.base_url).replace("/projects/demo", "/projects/other")
    with httpx.Client(base_url=other_project, headers={"Authorization": "Bearer t"}) as c:
        assert c.get("/threads", params={"api-version": "v1"}).json()["data"] == []
    assert classic.get(f"/threads/{openai_thread}").json()["id"] == openai_thread
    assert aoai.get(f"/threads/{classic_thread}").json()["metadata"] == {"k": "v"}


def test_a_streaming_client_going_away_does_not_stop_the_run(aoai: httpx.Client, emulator: ServerThread) -> None:
    httpx.post(f"{emulator.url}/_emulator/config", json={"token_delay_ms": 30}).raise_for_status()
    thread_id = aoai.post("/threads", json={"messages": [{"role": "user", "content": "a b c d e f"}]}).json()["id"]
    with aoai.stream("POST", f"/threads/{thread_id}/runs", json={"assistant_id": "asst_demo", "stream": True}) as r:
        first = next(r.iter_lines())
    assert first == "event: thread.run.created"
    run_id = aoai.get(f"/threads/{thread_id}/runs").json()["first_id"]
    run = _wait(aoai, thread_id, run_id, "completed")
    assert run["usage"]["completion_tokens"] == 7
    texts = [m["content"][0]["text"]["value"] for m in aoai.get(f"/threads/{thread_id}/messages").json()["data"]]
    assert texts == ["Echo: a b c d e f", "a b c d e f"]
