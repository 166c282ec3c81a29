"""The store goes away after Azure created a thread: the thread is deleted upstream, not orphaned.

The store is pinged before a thread is created, so the window is the create itself. Here it is made
to happen every time: the emulator holds the create (its latency fault), and while it does, the test
cuts a TCP proxy between the bridge and Redis. Azure then creates the thread and answers; the bridge
cannot record it, so it cancels the run, deletes the thread and answers 503. A turn that ends during
the cut cannot release its lock; once the proxy is mended, the release is retried and goes through.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.support.bridge import running_bridge
from tests.support.chat import turn
from tests.support.cut_proxy import cut_proxy
from tests.support.leftovers import active_runs, locks, nothing_left, sse, upstream_threads, wait_for
from tests.support.servers import ServerThread

CREATE = "POST /openai/threads/runs"


def _through(redis_url: str, port: int) -> str:
    """The same Redis URL (db, credentials) through the proxy's port."""
    parsed = urlparse(redis_url)
    credentials, _, _ = parsed.netloc.rpartition("@")
    return parsed._replace(netloc=f"{credentials}@" * bool(credentials) + f"{parsed.hostname}:{port}").geturl()


def _create_held(requests: list[dict[str, Any]]) -> bool:
    """The emulator has the create (logged on arrival, answered after its latency) and has not answered."""
    return any(r["operation"] == CREATE and r["status"] == 0 for r in requests)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_store_cut_during_a_thread_create_deletes_the_thread_and_answers_503(
    emulator: ServerThread, redis_url: str, redis_prefix: str, stream: bool
) -> None:
    # A long lease: the held lock can only go away because its failed release was retried.
    with (
        cut_proxy(urlparse(redis_url).port or 6379) as proxy,
        running_bridge(
            emulator.url, _through(redis_url, proxy.port), redis_prefix, limits={"lock_lease": "60s"}
        ) as bridge,
    ):
        client = bridge.client()
        headers = {"X-Conversation-Id": "held"}
        turn(
            client,
            stream=False,
            model="demo-assistant",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers=headers,
        )
        out: dict[str, Any] = {}

        def slow() -> None:
            # Holds its conversation's lock across the cut, and ends during it.
            out["slow"] = sse(
                f"{bridge.url}/v1/chat/completions",
                {
                    "model": "demo-assistant",
                    "stream": True,
                    "messages": [{"role": "user", "content": "/sleep 2500\nx"}],
                },
                headers,
            )

        def new() -> None:
            with bridge.http() as c:
                out["new"] = c.post(
                    "/v1/chat/completions",
                    json={
                        "model": "demo-assistant",
                        "stream": stream,
                        "messages": [{"role": "user", "content": "new"}],
                    },
                )

        slow_worker = threading.Thread(target=slow)
        slow_worker.start()
        wait_for(lambda: len(active_runs(emulator.url)) == 1, what="the slow turn's run")
        assert len(locks(redis_url, redis_prefix)) == 1
        bridge.reset_stats()
        bridge.fault(path=r"^/openai/threads/runs$", method="POST", latency_ms=1000, count=1)
        new_worker = threading.Thread(target=new)
        new_worker.start()
        wait_for(lambda: _create_held(bridge.emulator_requests()), what="the create held by Azure")
        assert len(active_runs(emulator.url)) == 1  # the slow turn still runs, so it ends during the cut
        proxy.cut()
        try:
            new_worker.join(15)
            slow_worker.join(15)
            # The bridge went to the store during the cut (its retry reconnects after the dropped
            # connection), and the partition refused it.
            assert proxy.accepted_while_cut > 0
            # The slow turn ended while the store was cut: its release failed, its lock is still there.
            assert len(locks(redis_url, redis_prefix)) == 1
        finally:
            proxy.mend()

        answer = out["new"]
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "service_unavailable" and error["code"] == "state_store_unavailable"
        # Azure did create the thread (after the ping passed); the bridge deleted it.
        [created] = [t for t in upstream_threads(emulator.url) if t["messages"] and t["messages"][0]["text"] == "new"]
        assert created["deleted"], created
        assert bridge.emulator_stats().get("DELETE /openai/threads/{thread_id}") == 1
        status, payloads = out["slow"]
        assert status == 200 and payloads[-1] == "[DONE]"
        assert not [p for p in payloads if isinstance(p, dict) and "error" in p]  # it completed
        # Back, the store gets the release that failed: the conversation is free long before the lease ends.
        wait_for(lambda: locks(redis_url, redis_prefix) == {}, 5, "the failed release retried")
        nothing_left(emulator.url, redis_url, redis_prefix)
        after = turn(
            client,
            stream=stream,
            model="demo-assistant",
            messages=[{"role": "user", "content": "back"}],
            extra_headers=headers,
        )
        assert after.text == "Echo: back"
