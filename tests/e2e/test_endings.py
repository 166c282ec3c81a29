"""Every way a turn can end, as it happens: after each, no run active upstream, no lock held, no thread unrecorded.

Issue 12's table, one test per row (conversation branching and bad input live with the codecs).
Faults are real: route deadlines, hang-ups, Azure throttling and slow answers (the emulator's fault
hooks), SIGTERM of a bridge process, a Redis server of our own that stops. kill -9 under load is in
`test_kill_load.py`, a store cut mid-create in `test_store_cut.py`.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.support.bridge import Bridge, routes_for, running_bridge
from tests.support.chat import turn
from tests.support.leftovers import active_runs, locks, nothing_left, sse, upstream_threads, wait_for
from tests.support.process import bridge_process, write_config
from tests.support.servers import ServerThread, free_port

ASSISTANT_ROUTES = ["demo-assistant", "classic-assistant", "poll-assistant"]


def _timed(emulator: ServerThread, timeout: str, **extra: Any) -> dict[str, Any]:
    routes = routes_for(emulator.url)
    for name in ASSISTANT_ROUTES:
        routes[name] = {**routes[name], "timeout": timeout, **extra}
    return routes


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
        status, payloads = sse(
            f"{bridge.url}/v1/chat/completions",
            {"model": model, "stream": True, "messages": [{"role": "user", "content": "/sleep 4000"}]},
            headers,
        )
        assert status == 200
        assert payloads[-1] == "[DONE]"
        assert payloads[-2]["error"]["code"] == "upstream_timeout"
        assert time.monotonic() - started < 3.5
        nothing_left(emulator.url, redis_url, redis_prefix)
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
        wait_for(lambda: len(upstream_threads(emulator.url)) == 1, timeout=5)
        # The bridge read the late answer: the thread it never handed out is deleted, its run ended.
        wait_for(lambda: all(t["deleted"] for t in upstream_threads(emulator.url)), timeout=5)
        nothing_left(emulator.url, redis_url, redis_prefix)


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
    wait_for(lambda: all(t["runs"][-1]["status"] == "cancelled" for t in bridge.emulator_threads() if t["runs"]))
    assert threads
    nothing_left(bridge.emulator_url, bridge.settings.redis_url or "", bridge.settings.redis_prefix)
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
    nothing_left(bridge.emulator_url, bridge.settings.redis_url or "", bridge.settings.redis_prefix)


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
            out["stream"] = sse(
                f"{proc.url}/v1/chat/completions",
                {"model": "demo-assistant", "stream": True, "messages": [{"role": "user", "content": "/sleep 8000"}]},
            )

        workers = [threading.Thread(target=plain), threading.Thread(target=streamed)]
        for worker in workers:
            worker.start()
        wait_for(lambda: len(active_runs(emulator.url)) == 2, timeout=10)
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
    nothing_left(emulator.url, redis_url, redis_prefix)


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
    # A short command timeout: each request of the outage waits out its commands' timeouts, not 5 s each.
    limits = {"lock_lease": "60s"}
    with running_bridge(emulator.url, url, redis_prefix, limits=limits, redis={"command_timeout": "1s"}) as bridge:
        headers = {"X-Conversation-Id": "outage"}
        client = bridge.client()
        first = client.chat.completions.with_raw_response.create(
            model="demo-assistant", messages=[{"role": "user", "content": "hi"}], extra_headers=headers
        )
        thread_id = first.headers["x-thread-id"]
        out: dict[str, Any] = {}

        def slow() -> None:
            out["slow"] = sse(
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
        wait_for(lambda: len(active_runs(emulator.url)) == 1)
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
        wait_for(lambda: locks(url, redis_prefix) == {}, timeout=5)
        nothing_left(emulator.url, url, redis_prefix)
        after = turn(
            client,
            stream=False,
            model="demo-assistant",
            messages=[{"role": "user", "content": "back"}],
            extra_headers=headers,
        )
        assert after.text == "Echo: back"
        assert thread_id
