"""Keep-alive comments on quiet streams, chat and responses, on both backends: the raw bytes carry
`: keep-alive`, and the official client reads the same answer as without them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.bridge import Bridge, running_bridge
from tests.support.servers import ServerThread

QUESTION = "one two three"


@pytest.fixture
def slow_bridge(emulator: ServerThread, redis_url: str, redis_prefix: str) -> Iterator[Bridge]:
    """Tokens 150 ms apart upstream; the bridge sends a comment after 30 ms of quiet."""
    with httpx.Client(base_url=emulator.url) as c:
        c.post("/_emulator/config", json={"token_delay_ms": 150}).raise_for_status()
    with running_bridge(emulator.url, redis_url, redis_prefix, sse_keepalive=0.03) as bridge:
        yield bridge


def _raw_lines(bridge: Bridge, path: str, body: dict[str, object]) -> list[str]:
    with bridge.http() as http, http.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(response.iter_lines())


@pytest.mark.parametrize("model", ["demo-assistant", "poll-assistant", "demo-agent"])
def test_a_quiet_chat_stream_carries_comments_and_the_same_answer(slow_bridge: Bridge, model: str) -> None:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    lines = _raw_lines(slow_bridge, "/v1/chat/completions", body)
    assert ": keep-alive" in lines
    assert [line for line in lines if line.startswith("data: ")][-1] == "data: [DONE]"
    stream = slow_bridge.client().chat.completions.create(
        model=model, stream=True, messages=[{"role": "user", "content": QUESTION}]
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == f"Echo: {QUESTION}"


@pytest.mark.parametrize("model", ["demo-assistant", "demo-agent"])
def test_a_quiet_responses_stream_carries_comments_and_the_same_answer(slow_bridge: Bridge, model: str) -> None:
    lines = _raw_lines(slow_bridge, "/v1/responses", {"model": model, "stream": True, "input": QUESTION})
    assert ": keep-alive" in lines
    events = list(slow_bridge.client().responses.create(model=model, stream=True, input=QUESTION))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == f"Echo: {QUESTION}"


def test_keepalive_off_sends_no_comment(emulator: ServerThread, redis_url: str, redis_prefix: str) -> None:
    with httpx.Client(base_url=emulator.url) as c:
        c.post("/_emulator/config", json={"token_delay_ms": 100}).raise_for_status()
    with running_bridge(emulator.url, redis_url, redis_prefix, sse_keepalive=0) as bridge:
        body = {"model": "demo-assistant", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
        lines = _raw_lines(bridge, "/v1/chat/completions", body)
    assert not [line for line in lines if line.startswith(":")]
    assert "data: [DONE]" in lines


def test_a_client_that_hangs_up_on_a_quiet_stream_ends_the_run(slow_bridge: Bridge) -> None:
    body = {"model": "demo-assistant", "stream": True, "messages": [{"role": "user", "content": QUESTION * 20}]}
    with slow_bridge.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        thread_id = response.headers["x-thread-id"]
        for line in response.iter_lines():
            if line == ": keep-alive":
                break
    # The pump is the stream's: the hang-up ends it, and the turn cancels its run as without comments.
    run = _wait_for_run_end(slow_bridge, thread_id)
    assert run["status"] == "cancelled"


def _wait_for_run_end(bridge: Bridge, thread_id: str) -> dict[str, object]:
    import time

    deadline = time.monotonic() + 15
    while True:
        thread = next(t for t in bridge.emulator_threads() if t["id"] == thread_id)
        run: dict[str, object] = thread["runs"][-1]
        if run["status"] not in ("queued", "in_progress", "cancelling") or time.monotonic() > deadline:
            return run
        time.sleep(0.05)
