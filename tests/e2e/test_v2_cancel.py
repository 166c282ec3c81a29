"""Foundry v2 endings stop the work upstream: a hang-up (streamed or not), the route's deadline and SIGTERM
past the shutdown grace cancel the response (background mode, the route default), on chat and on the
`/v1/responses` pass-through.

What Azure does is what the emulator reports: the response's own `status` (`cancelled`), read back
from the project the way a client of Azure would (`GET /responses/{id}`, `GET /responses`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.bridge import Bridge, routes_for, running_bridge
from tests.support.leftovers import sse, wait_for
from tests.support.process import bridge_process, write_config
from tests.support.servers import ServerThread

PROJECT = "/api/projects/demo/openai/v1"
CANCEL = "POST /api/projects/{project}/openai/v1/responses/{response_id}/cancel"
CREATE = "POST /api/projects/{project}/openai/v1/responses"
SLOW = "/sleep 5000\nslow"


def _project(bridge: Bridge) -> httpx.Client:
    """The project as a client of Azure calls it (project endpoints take Entra tokens)."""
    return httpx.Client(base_url=bridge.emulator_url + PROJECT, headers={"Authorization": "Bearer t"}, timeout=30)


def _upstream(bridge: Bridge, response_id: str) -> dict[str, Any]:
    with _project(bridge) as c:
        answer = c.get(f"/responses/{response_id}")
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data


def _status(bridge: Bridge, response_id: str) -> str:
    return str(_upstream(bridge, response_id)["status"])


def _latest(bridge: Bridge, agent: str = "demo-agent") -> dict[str, Any]:
    """The newest response of `agent` the project stored (for a client that never saw its id)."""
    with _project(bridge) as c:
        answer = c.get("/responses", params={"agent_name": agent, "order": "desc", "limit": 1})
        answer.raise_for_status()
        [latest] = answer.json()["data"]
        return dict(latest)


def _cancelled(bridge: Bridge, response_id: str) -> None:
    wait_for(lambda: _status(bridge, response_id) == "cancelled", timeout=10)
    assert _upstream(bridge, response_id)["background"] is True
    assert bridge.emulator_stats().get(CANCEL) == 1


def _ended(bridge: Bridge) -> bool:
    """No turn in flight and no clean-up still running in the bridge."""
    return len(bridge.state.components.inflight) == 0 and len(bridge.state.tasks) == 0


@pytest.fixture
def fresh(bridge: Bridge) -> Bridge:
    bridge.reset_stats()
    return bridge


def _stream_and_hang_up(bridge: Bridge, path: str, body: dict[str, Any]) -> tuple[dict[str, str], list[Any]]:
    """Open a streamed turn, read its first event, and go away (the connection closes)."""
    with httpx.Client(base_url=bridge.url, timeout=30) as c, c.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                return dict(response.headers), [json.loads(line[len("data: ") :])]
    raise AssertionError("the stream ended before its first event")


# -- chat ------------------------------------------------------------------------------------------


def test_a_streamed_chat_client_that_hangs_up_gets_its_v2_response_cancelled(fresh: Bridge) -> None:
    headers, _ = _stream_and_hang_up(
        fresh,
        "/v1/chat/completions",
        {"model": "demo-agent", "stream": True, "messages": [{"role": "user", "content": SLOW}]},
    )
    response_id = headers["x-response-id"]
    [create] = [r["body"] for r in fresh.emulator_requests() if r["operation"] == CREATE]
    assert create["background"] is True and create["stream"] is True and create["store"] is True
    _cancelled(fresh, response_id)


def test_a_plain_chat_client_that_hangs_up_gets_its_v2_response_cancelled(fresh: Bridge) -> None:
    with httpx.Client(timeout=1.0) as c, pytest.raises(httpx.ReadTimeout):
        c.post(
            f"{fresh.url}/v1/chat/completions",
            json={"model": "demo-agent", "messages": [{"role": "user", "content": SLOW}]},
        )
    wait_for(lambda: fresh.emulator_stats().get(CREATE) == 1, timeout=10)
    _cancelled(fresh, str(_latest(fresh)["id"]))


def test_a_v2_chat_turn_past_the_route_timeout_is_cancelled_upstream(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    routes = routes_for(emulator.url)
    routes["demo-agent"] = {**routes["demo-agent"], "timeout": "1s"}
    with running_bridge(emulator.url, redis_url, redis_prefix, routes=routes) as bridge:
        bridge.reset_stats()
        with bridge.http() as c:
            answer = c.post(
                "/v1/chat/completions", json={"model": "demo-agent", "messages": [{"role": "user", "content": SLOW}]}
            )
        assert answer.status_code == 504
        assert answer.json()["error"]["code"] == "upstream_timeout"
        _cancelled(bridge, str(_latest(bridge)["id"]))


def test_a_foreground_route_leaves_the_response_running_as_the_readme_says(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    routes = routes_for(emulator.url)
    routes["demo-agent"] = {**routes["demo-agent"], "background": False}
    with running_bridge(emulator.url, redis_url, redis_prefix, routes=routes) as bridge:
        bridge.reset_stats()
        headers, _ = _stream_and_hang_up(
            bridge,
            "/v1/chat/completions",
            {"model": "demo-agent", "stream": True, "messages": [{"role": "user", "content": "/sleep 1000\nslow"}]},
        )
        response_id = headers["x-response-id"]
        # Azure refuses to cancel a foreground response: the bridge does not ask, and it runs to its end.
        wait_for(lambda: _status(bridge, response_id) == "completed", timeout=10)
        assert _upstream(bridge, response_id)["background"] is False
        assert CANCEL not in bridge.emulator_stats()


# -- the /v1/responses pass-through ----------------------------------------------------------------


def test_a_streamed_responses_client_that_hangs_up_gets_its_v2_response_cancelled(fresh: Bridge) -> None:
    _, [created] = _stream_and_hang_up(fresh, "/v1/responses", {"model": "demo-agent", "stream": True, "input": SLOW})
    assert created["type"] == "response.created"
    _cancelled(fresh, str(created["response"]["id"]))


def test_a_plain_responses_client_that_hangs_up_gets_its_v2_response_cancelled(fresh: Bridge) -> None:
    with httpx.Client(timeout=1.0) as c, pytest.raises(httpx.ReadTimeout):
        c.post(f"{fresh.url}/v1/responses", json={"model": "demo-agent", "input": SLOW})
    wait_for(lambda: fresh.emulator_stats().get(CREATE) == 1, timeout=10)
    _cancelled(fresh, str(_latest(fresh)["id"]))


def test_a_responses_turn_past_the_route_timeout_is_cancelled_upstream(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    routes = routes_for(emulator.url)
    routes["demo-agent"] = {**routes["demo-agent"], "timeout": "1s"}
    with running_bridge(emulator.url, redis_url, redis_prefix, routes=routes) as bridge:
        bridge.reset_stats()
        with bridge.http() as c:
            answer = c.post("/v1/responses", json={"model": "demo-agent", "input": SLOW})
        assert answer.status_code == 504
        assert answer.json()["error"]["code"] == "upstream_timeout"
        _cancelled(bridge, str(_latest(bridge)["id"]))


def test_an_unstored_response_is_foreground_and_runs_on_after_a_hang_up(fresh: Bridge) -> None:
    """Azure refuses `background: true` with `store: false`: the client's choice wins, as documented."""
    _, [created] = _stream_and_hang_up(
        fresh,
        "/v1/responses",
        {"model": "demo-agent", "stream": True, "store": False, "input": "/sleep 500\nunstored"},
    )
    assert created["response"]["background"] is False
    [create] = [r["body"] for r in fresh.emulator_requests() if r["operation"] == CREATE]
    assert create["store"] is False and "background" not in create
    wait_for(lambda: _ended(fresh), timeout=10)
    assert CANCEL not in fresh.emulator_stats()


# -- SIGTERM past the shutdown grace ---------------------------------------------------------------


def _responses_of(emulator_url: str, agent: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=emulator_url + PROJECT, headers={"Authorization": "Bearer t"}, timeout=30) as c:
        answer = c.get("/responses", params={"agent_name": agent, "order": "desc", "limit": 20})
        answer.raise_for_status()
        return list(answer.json()["data"])


@pytest.mark.usefixtures("process_identity")
def test_sigterm_past_the_grace_ends_v2_turns_in_openai_format_and_cancels_their_responses(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "config.yaml", routes_for(emulator.url), redis_prefix=redis_prefix, shutdown_grace="1s"
    )
    out: dict[str, Any] = {}
    with bridge_process(config, redis_url, tmp_path) as proc:

        def plain(path: str, body: dict[str, Any]) -> None:
            with httpx.Client(timeout=20) as c:
                out[path, False] = c.post(f"{proc.url}{path}", json=body)

        def streamed(path: str, body: dict[str, Any]) -> None:
            out[path, True] = sse(f"{proc.url}{path}", {**body, "stream": True})

        chat = {"model": "demo-agent", "messages": [{"role": "user", "content": "/sleep 8000\nlong"}]}
        responses = {"model": "demo-agent", "input": "/sleep 8000\nlong"}
        workers = [
            threading.Thread(target=plain, args=("/v1/chat/completions", chat)),
            threading.Thread(target=streamed, args=("/v1/chat/completions", chat)),
            threading.Thread(target=plain, args=("/v1/responses", responses)),
            threading.Thread(target=streamed, args=("/v1/responses", responses)),
        ]
        for worker in workers:
            worker.start()
        in_progress = lambda: [r for r in _responses_of(emulator.url, "demo-agent") if r["status"] == "in_progress"]  # noqa: E731
        wait_for(lambda: len(in_progress()) == 4, 10, "four v2 responses in progress upstream")
        proc.terminate()
        for worker in workers:
            worker.join(15)
        proc.proc.wait(15)
        log = "\n".join(proc.log_lines())
    for path in ("/v1/chat/completions", "/v1/responses"):
        answer: httpx.Response = out[path, False]
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "1"
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == "shutting_down" and error["type"] == "service_unavailable"
    status, payloads = out["/v1/chat/completions", True]
    assert status == 200
    assert payloads[-1] == "[DONE]" and payloads[-2]["error"]["code"] == "shutting_down"
    status, events = out["/v1/responses", True]
    assert status == 200
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "error" and events[-1]["code"] == "shutting_down"
    assert "Internal Server Error" not in log and "Traceback" not in log
    # Each was a background response (the route's default), so each could be and was cancelled upstream.
    upstream = _responses_of(emulator.url, "demo-agent")
    assert len(upstream) == 4
    assert all(r["background"] is True for r in upstream)
    wait_for(lambda: in_progress() == [], 5, "no v2 response left in progress upstream")
    assert {r["status"] for r in _responses_of(emulator.url, "demo-agent")} == {"cancelled"}
