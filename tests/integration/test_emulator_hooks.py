"""The emulator's test hooks under `/_emulator/`: threads, stats, faults, reset, config."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import classic_client
from tests.support.servers import ServerThread


@pytest.fixture
def hooks(emulator: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{emulator.url}/_emulator") as c:
        yield c


@pytest.fixture
def classic(emulator: ServerThread) -> Iterator[httpx.Client]:
    """The classic paths of a project other than the one the other tests use: `proj1`."""
    with classic_client(emulator, "proj1") as c:
        yield c


def _run_to_end(client: httpx.Client, thread_id: str, assistant_id: str = "asst_demo") -> dict[str, Any]:
    run: dict[str, Any] = client.post(f"/threads/{thread_id}/runs", json={"assistant_id": assistant_id}).json()
    deadline = time.monotonic() + 5
    while run["status"] in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
        run = client.get(f"/threads/{thread_id}/runs/{run['id']}").json()
    return run


def test_threads_hook_shows_every_thread_even_deleted(
    hooks: httpx.Client, aoai: httpx.Client, classic: httpx.Client
) -> None:
    assert hooks.get("/threads").json() == {"object": "list", "data": []}
    kept = aoai.post("/threads", json={"metadata": {"who": "kept"}}).json()["id"]
    aoai.post(f"/threads/{kept}/messages", json={"role": "user", "content": "count me"})
    run = _run_to_end(aoai, kept)
    gone = classic.post("/threads", json={"messages": [{"role": "user", "content": "bye"}]}).json()["id"]
    classic.delete(f"/threads/{gone}").raise_for_status()

    view = {t["id"]: t for t in hooks.get("/threads").json()["data"]}
    assert set(view) == {kept, gone}
    first = view[kept]
    assert (first["surface"], first["project"], first["deleted"], first["deleted_at"]) == ("openai", None, False, None)
    assert first["metadata"] == {"who": "kept"}
    assert [(m["role"], m["text"], m["run_id"]) for m in first["messages"]] == [
        ("user", "count me", None),
        ("assistant", "Echo: count me", run["id"]),
    ]
    assert first["runs"] == [{"id": run["id"], "status": "completed", "assistant_id": "asst_demo"}]
    second = view[gone]
    assert (second["surface"], second["project"], second["deleted"]) == ("classic", "proj1", True)
    assert second["deleted_at"] >= second["created_at"]
    assert [m["text"] for m in second["messages"]] == ["bye"]


def test_stats_count_requests_by_operation(hooks: httpx.Client, aoai: httpx.Client, classic: httpx.Client) -> None:
    thread_id = aoai.post("/threads").json()["id"]
    aoai.post(f"/threads/{thread_id}/messages", json={"role": "user", "content": "one"})
    _run_to_end(aoai, thread_id)
    classic_thread = classic.post("/threads").json()["id"]
    classic.post(f"/threads/{classic_thread}/messages", json={"role": "user", "content": "two"})
    classic.post(f"/threads/{classic_thread}/runs", json={"assistant_id": "asst_demo"})
    aoai.get("/threads/thread_nope")

    stats = hooks.get("/stats").json()
    counts = stats["by_operation"]
    assert counts["POST /openai/threads"] == 1
    assert counts["POST /openai/threads/{thread_id}/runs"] == 1
    assert counts["POST /api/projects/{project}/threads/{thread_id}/runs"] == 1
    assert counts["GET /openai/threads/{thread_id}"] == 1
    assert counts["GET /openai/threads/{thread_id}/runs/{run_id}"] >= 1
    assert stats["total"] == sum(counts.values())
    last = stats["requests"][-1]
    assert (last["operation"], last["status"]) == ("GET /openai/threads/{thread_id}", 404)
    assert "api-version=2024-05-01-preview" in last["query"]
    create = next(r for r in stats["requests"] if r["operation"] == "POST /openai/threads/{thread_id}/runs")
    assert create["body"] == {"assistant_id": "asst_demo"}


def test_faults_answer_the_next_requests_then_stop(hooks: httpx.Client, aoai: httpx.Client) -> None:
    hooks.post("/faults", json={"path": "^/openai/threads$", "status": 429, "count": 2, "retry_after": "1"})
    assert hooks.get("/faults").json()["faults"][0]["remaining"] == 2
    assert aoai.get("/assistants").status_code == 200  # another path is not affected
    for _ in range(2):
        throttled = aoai.post("/threads")
        assert throttled.status_code == 429
        assert throttled.headers["retry-after"] == "1"
        assert throttled.json()["error"]["code"] == "429"
    assert aoai.post("/threads").status_code == 200
    hooks.post("/faults", json={"path": "/runs$", "status": 503, "method": "POST", "retry_after_ms": "20"})
    thread_id = aoai.post("/threads").json()["id"]
    assert aoai.get(f"/threads/{thread_id}/runs").status_code == 200  # GET does not match the rule
    failed = aoai.post(f"/threads/{thread_id}/runs", json={"assistant_id": "asst_demo"})
    assert (failed.status_code, failed.headers["retry-after-ms"]) == (503, "20")
    assert failed.json()["error"]["type"] == "server_error"
    assert aoai.get(f"/threads/{thread_id}/runs").json()["data"] == []  # the faulted request did nothing
    hooks.delete("/faults")
    assert hooks.get("/faults").json() == {"faults": []}


def test_reset_forgets_everything_and_brings_the_demo_agents_back(hooks: httpx.Client, aoai: httpx.Client) -> None:
    aoai.delete("/assistants/asst_demo").raise_for_status()
    mine = aoai.post("/assistants", json={"model": "gpt-4o", "name": "mine"}).json()["id"]
    thread_id = aoai.post("/threads", json={"messages": [{"role": "user", "content": "/sleep 5000\nslow"}]}).json()[
        "id"
    ]
    run = aoai.post(f"/threads/{thread_id}/runs", json={"assistant_id": mine}).json()
    assert run["status"] == "queued"

    assert hooks.post("/reset").json() == {"reset": True}
    assert hooks.get("/stats").json()["total"] == 0
    assert aoai.get(f"/assistants/{mine}").status_code == 404
    assert aoai.get(f"/threads/{thread_id}").status_code == 404
    assert hooks.get("/threads").json()["data"] == []
    listed = aoai.get("/assistants", params={"order": "asc"}).json()["data"]
    assert [(a["id"], a["name"]) for a in listed] == [
        ("asst_demo", "demo"),
        ("asst_flights", "flights-demo"),
        ("asst_mcp", "mcp-demo"),
    ]
    flights = listed[1]
    assert flights["model"] == "gpt-4o"
    assert [t["function"]["name"] for t in flights["tools"]] == ["get_flights", "my_cat_born_date"]
    assert listed[0]["instructions"] == "You are a helpful assistant."
    # the emulator still works after a reset with a run in flight
    fresh = aoai.post("/threads", json={"messages": [{"role": "user", "content": "after reset"}]}).json()["id"]
    assert _run_to_end(aoai, fresh)["status"] == "completed"


def test_reset_with_the_empty_option_starts_without_demo_agents(hooks: httpx.Client, aoai: httpx.Client) -> None:
    try:
        hooks.post("/config", json={"empty": True}).raise_for_status()
        hooks.post("/reset").raise_for_status()
        assert aoai.get("/assistants").json()["data"] == []
        assert aoai.get("/assistants/asst_demo").status_code == 404
    finally:
        hooks.post("/config", json={"empty": False}).raise_for_status()
        hooks.post("/reset").raise_for_status()
    assert aoai.get("/assistants/asst_demo").status_code == 200


def test_config_changes_apply_at_runtime(hooks: httpx.Client, aoai: httpx.Client) -> None:
    config = hooks.post("/config", json={"token_delay_ms": 40, "run_expiry_s": 5}).json()
    assert (config["token_delay_ms"], config["run_expiry_s"]) == (40, 5)
    assert hooks.get("/config").json() == config
    thread_id = aoai.post("/threads", json={"messages": [{"role": "user", "content": "one two three four"}]}).json()[
        "id"
    ]
    started = time.monotonic()
    with aoai.stream("POST", f"/threads/{thread_id}/runs", json={"assistant_id": "asst_demo", "stream": True}) as r:
        body = r.read().decode()
    elapsed = time.monotonic() - started
    assert body.count("event: thread.message.delta") == 5
    assert elapsed >= 4 * 0.04  # four gaps between five deltas
    run = aoai.get(f"/threads/{thread_id}/runs").json()["data"][0]
    assert run["expires_at"] - run["created_at"] == 5
    assert hooks.post("/config", json={"no_such_option": 1}).status_code == 400
