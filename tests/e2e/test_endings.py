"""Every way a turn can end, as it happens: after each, no run active upstream, no lock held, no thread unrecorded.

Issue 12's table, one test per row (conversation branching and bad input live with the codecs).
Faults are real: route deadlines, hang-ups, Azure throttling and slow answers (the emulator's fault
hooks), SIGTERM and kill -9 of a bridge process, a Redis server of our own that stops.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from app.state.keys import Keys
from tests.support.bridge import Bridge, managed_identity, routes_for, running_bridge
from tests.support.chat import turn
from tests.support.process import bridge_process, write_config
from tests.support.servers import ServerThread, free_port

ASSISTANT_ROUTES = ["demo-assistant", "classic-assistant", "poll-assistant"]


@pytest.fixture
def process_identity(emulator: ServerThread) -> Iterator[None]:
    """Bridge processes (and the CLI) inherit the environment: their Entra credential on project
    routes comes from the emulator's managed identity, as in-process bridges' does."""
    with managed_identity(emulator.url):
        yield


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _threads(emulator_url: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=emulator_url, timeout=10) as c:
        data: list[dict[str, Any]] = c.get("/_emulator/threads").json()["data"]
        return data


def _active_runs(emulator_url: str) -> list[str]:
    active = ("queued", "in_progress", "requires_action", "cancelling")
    return [r["id"] for t in _threads(emulator_url) for r in t["runs"] if r["status"] in active]


def _locks(redis_url: str, prefix: str) -> list[bytes]:
    r = redis.Redis.from_url(redis_url)
    try:
        return list(r.scan_iter(match=f"{prefix}lock:*"))
    finally:
        r.close()


def _unrecorded(emulator_url: str, redis_url: str, prefix: str) -> list[str]:
    """Threads alive upstream that the registry does not know: orphans."""
    r = redis.Redis.from_url(redis_url)
    try:
        alive = [t["id"] for t in _threads(emulator_url) if not t["deleted"]]
        keys = Keys(prefix)
        return [t for t in alive if not r.exists(keys.thread(t))]
    finally:
        r.close()


def _nothing_left(emulator_url: str, redis_url: str, prefix: str, timeout: float = 5.0) -> None:
    """The invariant after every ending."""
    _wait_for(lambda: _active_runs(emulator_url) == [], timeout)
    _wait_for(lambda: _locks(redis_url, prefix) == [], timeout)
    assert _unrecorded(emulator_url, redis_url, prefix) == []


def _timed(emulator: ServerThread, timeout: str, **extra: Any) -> dict[str, Any]:
    routes = routes_for(emulator.url)
    for name in ASSISTANT_ROUTES:
        routes[name] = {**routes[name], "timeout": timeout, **extra}
    return routes


def _sse(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, list[Any]]:
    payloads: list[Any] = []
    with httpx.Client(timeout=30) as c, c.stream("POST", url, json=body, headers=headers or {}) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, [response.json()]
        for line in response.iter_lines():
            if line.startswith("data: "):
                raw = line[len("data: ") :]
                payloads.append(raw if raw == "[DONE]" else json.loads(raw))
    return 200, payloads


# -- the route's deadline --------------------------------------------------------------------------


@pytest.mark.parametrize("model", ASSISTANT_ROUTES)
def test_a_streamed_turn_past_the_route_timeout_ends_with_an_error_event_and_done(
    emulator: ServerThread, redis_url: str, redis_prefix: str, model: str
) -> None:
    with running_bridge(emulator.url, redis_url, redis_prefix, routes=_timed(emulator, "1s")) as bridge:
        headers = {"X-Conversation-Id": "late"}
        client = bridge.client()
        turn(client, stream=False, model=model, messages=[{"role": "user", "content": "hi"}], extra_headers=headers)
        started = time.monotonic()
        status, payloads = _sse(
            f"{bridge.url}/v1/chat/completions",
            {"model": model, "stream": True, "messages": [{"role": "user", "content": "/sleep 4000"}]},
            headers,
        )
        assert status == 200
        assert payloads[-1] == "[DONE]"
        assert payloads[-2]["error"]["code"] == "upstream_timeout"
        assert time.monotonic() - started < 3.5
        _nothing_left(emulator.url, redis_url, redis_prefix)
        # The conversation is free again at once (no 409 for the lock's lifetime).
        after = turn(
            client, stream=True, model=model, messages=[{"role": "user", "content": "again"}], extra_headers=headers
        )
        assert after.text == "Echo: again"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_thread_create_answered_after_the_deadline_is_not_orphaned(
    emulator: ServerThread, redis_url: str, redis_prefix: str, stream: bool
) -> None:
    with running_bridge(emulator.url, redis_url, redis_prefix, routes=_timed(emulator, "500ms")) as bridge:
        # Azure takes 1.5 s to answer the create (and then creates the thread and starts its run).
        bridge.fault(path=r"/threads/runs$", method="POST", latency_ms=1500, count=1)
        with bridge.http() as c:
            response = c.post(
                "/v1/chat/completions",
                json={"model": "demo-assistant", "stream": stream, "messages": [{"role": "user", "content": "hi"}]},
            )
        assert response.status_code == 504
        error = response.json()["error"]
        assert error["code"] == "upstream_timeout"
        assert "did not start" in error["message"] and "was cancelled" not in error["message"]
        _wait_for(lambda: len(_threads(emulator.url)) == 1, timeout=5)
        # The bridge read the late answer: the thread it never handed out is deleted, its run ended.
        _wait_for(lambda: all(t["deleted"] for t in _threads(emulator.url)), timeout=5)
        _nothing_left(emulator.url, redis_url, redis_prefix)


# -- hang-ups --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ASSISTANT_ROUTES)
def test_a_non_streamed_client_that_hangs_up_gets_its_run_cancelled(bridge: Bridge, model: str) -> None:
    headers = {"X-Conversation-Id": "gone"}
    client = bridge.client()
    turn(client, stream=False, model=model, messages=[{"role": "user", "content": "hi"}], extra_headers=headers)
    with httpx.Client(timeout=0.5) as c, pytest.raises(httpx.ReadTimeout):
        c.post(
            f"{bridge.url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "/sleep 5000"}]},
            headers=headers,
        )
    threads = [t for t in bridge.emulator_threads() if t["runs"]]
    _wait_for(lambda: all(t["runs"][-1]["status"] == "cancelled" for t in bridge.emulator_threads() if t["runs"]))
    assert threads
    _nothing_left(bridge.emulator_url, bridge.settings.redis_url or "", bridge.settings.redis_prefix)
    after = turn(
        client, stream=False, model=model, messages=[{"role": "user", "content": "back"}], extra_headers=headers
    )
    assert after.text == "Echo: back"


# -- Azure throttles the start of a streamed follow-up ---------------------------------------------


def test_a_throttled_streamed_follow_up_is_a_real_429_with_retry_after(bridge: Bridge) -> None:
    headers = {"X-Conversation-Id": "throttled"}
    client = bridge.client()
    first = client.chat.completions.with_raw_response.create(
        model="demo-assistant", messages=[{"role": "user", "content": "hi"}], extra_headers=headers
    )
    thread_id = first.headers["x-thread-id"]
    bridge.fault(path=rf"/threads/{thread_id}/runs$", method="POST", status=429, count=50, retry_after="7")
    with pytest.raises(openai.RateLimitError) as info:
        turn(
            client,
            stream=True,
            model="demo-assistant",
            messages=[{"role": "user", "content": "more"}],
            extra_headers=headers,
        )
    assert info.value.response.status_code == 429
    assert info.value.response.headers["retry-after"] == "7"
    _nothing_left(bridge.emulator_url, bridge.settings.redis_url or "", bridge.settings.redis_prefix)


# -- SIGTERM past the shutdown grace ---------------------------------------------------------------


@pytest.mark.usefixtures("process_identity")
def test_sigterm_past_the_grace_ends_every_turn_in_openai_format(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "config.yaml", routes_for(emulator.url), redis_prefix=redis_prefix, shutdown_grace="1s"
    )
    out: dict[str, Any] = {}
    with bridge_process(config, redis_url, tmp_path) as proc:

        def plain() -> None:
            with httpx.Client(timeout=20) as c:
                out["plain"] = c.post(
                    f"{proc.url}/v1/chat/completions",
                    json={"model": "classic-assistant", "messages": [{"role": "user", "content": "/sleep 8000"}]},
                )

        def streamed() -> None:
            out["stream"] = _sse(
                f"{proc.url}/v1/chat/completions",
                {"model": "demo-assistant", "stream": True, "messages": [{"role": "user", "content": "/sleep 8000"}]},
            )

        workers = [threading.Thread(target=plain), threading.Thread(target=streamed)]
        for worker in workers:
            worker.start()
        _wait_for(lambda: len(_active_runs(emulator.url)) == 2, timeout=10)
        proc.terminate()
        for worker in workers:
            worker.join(15)
        proc.proc.wait(15)
        log = "\n".join(proc.log_lines())
    plain_answer: httpx.Response = out["plain"]
    assert plain_answer.status_code == 503, plain_answer.text
    assert plain_answer.headers["retry-after"] == "1"
    assert plain_answer.json()["error"]["code"] == "shutting_down"
    status, payloads = out["stream"]
    assert status == 200
    assert payloads[-1] == "[DONE]" and payloads[-2]["error"]["code"] == "shutting_down"
    assert "Internal Server Error" not in log and "Traceback" not in log
    _nothing_left(emulator.url, redis_url, redis_prefix)


# -- kill -9 under load ----------------------------------------------------------------------------


@pytest.mark.usefixtures("process_identity")
def test_kill_9_under_load_frees_locks_within_the_lease_and_reconcile_leaves_no_orphan_on_projects(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    routes = routes_for(emulator.url)
    config = write_config(tmp_path / "config.yaml", routes, redis_prefix=redis_prefix, limits={"lock_lease": "1s"})
    models = ["demo-assistant", "classic-assistant"]
    for kill in range(4):
        with bridge_process(config, redis_url, tmp_path) as proc:
            stop = threading.Event()

            def load(n: int, url: str = proc.url, stop: threading.Event = stop, kill: int = kill) -> None:
                with httpx.Client(timeout=5) as c:
                    i = 0
                    while not stop.is_set():
                        i += 1
                        body = {
                            "model": models[n % 2],
                            "stream": n % 3 == 0,
                            "messages": [{"role": "user", "content": f"/sleep 300\nload {kill}-{n}-{i}"}],
                        }
                        try:
                            c.post(f"{url}/v1/chat/completions", json=body, headers={"X-Conversation-Id": f"c{n}"})
                        except httpx.HTTPError:
                            return

            workers = [threading.Thread(target=load, args=(n,)) for n in range(6)]
            for worker in workers:
                worker.start()
            time.sleep(1.0)
            proc.proc.send_signal(signal.SIGKILL)
            proc.proc.wait(5)
            stop.set()
            for worker in workers:
                worker.join(10)
            # The dead holder's locks are leases: free within a second or two, not timeout + 30 s.
            _wait_for(lambda: _locks(redis_url, redis_prefix) == [], timeout=3)
    orphans_before = _unrecorded(emulator.url, redis_url, redis_prefix)
    env = {**os.environ, "REDIS_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "threads", "--config", str(config), "reconcile"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    orphans = _unrecorded(emulator.url, redis_url, redis_prefix)
    project = [t["id"] for t in _threads(emulator.url) if t["id"] in orphans and t["project"]]
    print(
        f"\nkill -9 x4: {len(orphans_before)} unrecorded before reconcile, {len(orphans)} after ({len(project)} on projects)"
    )
    assert project == []
    _wait_for(lambda: _active_runs(emulator.url) == [], timeout=10)


# -- the store goes away ---------------------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own on a free port (the shared one is never stopped)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    client.close()
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            proc.wait(10)


def test_a_store_outage_creates_nothing_upstream_and_failed_releases_are_retried(
    emulator: ServerThread, own_redis: tuple[str, subprocess.Popen[bytes]], redis_prefix: str
) -> None:
    url, server = own_redis
    # A long lease: the lock can only go away because its release was retried, not because it expired.
    with running_bridge(emulator.url, url, redis_prefix, limits={"lock_lease": "60s"}) as bridge:
        headers = {"X-Conversation-Id": "outage"}
        client = bridge.client()
        first = client.chat.completions.with_raw_response.create(
            model="demo-assistant", messages=[{"role": "user", "content": "hi"}], extra_headers=headers
        )
        thread_id = first.headers["x-thread-id"]
        out: dict[str, Any] = {}

        def slow() -> None:
            out["slow"] = _sse(
                f"{bridge.url}/v1/chat/completions",
                {
                    "model": "demo-assistant",
                    "stream": True,
                    "messages": [{"role": "user", "content": "/sleep 1500\nx"}],
                },
                headers,
            )

        worker = threading.Thread(target=slow)
        worker.start()
        _wait_for(lambda: len(_active_runs(emulator.url)) == 1)
        bridge.reset_stats()
        server.send_signal(signal.SIGSTOP)  # the store stops answering (its data kept)
        try:
            codes = []
            for n in range(5):
                with bridge.http() as c:
                    codes.append(
                        c.post(
                            "/v1/chat/completions",
                            json={"model": "demo-assistant", "messages": [{"role": "user", "content": f"new {n}"}]},
                        ).status_code
                    )
            assert codes == [503] * 5
            worker.join(10)  # the slow turn ends during the outage: its release fails
        finally:
            server.send_signal(signal.SIGCONT)
        creates = {k: v for k, v in bridge.emulator_stats().items() if k.startswith("POST /openai/threads")}
        assert creates.get("POST /openai/threads/runs", 0) == 0  # nothing created, so nothing to delete
        assert "DELETE /openai/threads/{thread_id}" not in bridge.emulator_stats()
        # Back, the store gets the release that failed: the conversation is free long before the lease ends.
        _wait_for(lambda: _locks(url, redis_prefix) == [], timeout=5)
        _nothing_left(emulator.url, url, redis_prefix)
        after = turn(
            client,
            stream=False,
            model="demo-assistant",
            messages=[{"role": "user", "content": "back"}],
            extra_headers=headers,
        )
        assert after.text == "Echo: back"
        assert thread_id
