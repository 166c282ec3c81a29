"""A streaming client that stops reading: the turn's deadline is the stream's write deadline, so its
run ends and its conversation lock is freed at the deadline, whatever the stalled write does."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx

from tests.support.bridge import KEY, Bridge, running_bridge
from tests.support.servers import ServerThread

TIMEOUT_S = 2.0
# Echoed back as 1,500 deltas of 4 KiB: 6 MB of frames, more than every buffer between a client that reads
# nothing and the bridge (a 4 KiB receive window here; there, a send buffer Linux grows to 4 MiB at most).
WORD = "w" * 4095 + " "
QUESTION = WORD * 1500


def _stalled_stream(bridge: Bridge, conversation: str) -> tuple[socket.socket, dict[str, str]]:
    """Send a streamed chat turn over a raw socket with a tiny receive buffer; read its headers, then nothing."""
    body = json.dumps({"model": "demo-assistant", "stream": True, "messages": [{"role": "user", "content": QUESTION}]})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.connect(("127.0.0.1", bridge.server.port))
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
            f"X-Conversation-Id: {conversation}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body.encode())
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(1024)
        lines = received.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        assert lines[0].startswith("HTTP/1.1 200"), lines
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    except BaseException:
        sock.close()  # a failed start leaves no socket for the next test's warnings
        raise
    return sock, headers


def _turn(bridge: Bridge, text: str) -> httpx.Response:
    with httpx.Client(base_url=bridge.url, timeout=30) as http:
        return http.post(
            "/v1/chat/completions",
            headers={"X-Conversation-Id": "stalled-1"},
            json={"model": "demo-assistant", "messages": [{"role": "user", "content": text}]},
        )


def _lock_held(bridge: Bridge, thread_id: str) -> bool:
    store: Any = bridge.state.store
    return bool(bridge.server.call(store.redis.exists(store.keys.lock(thread_id))))


def test_a_client_that_stops_reading_frees_its_conversation_at_the_turns_deadline(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    routes = {"demo-assistant": {"endpoint": emulator.url, "assistant_id": "asst_demo", "auth": KEY, "timeout": "2s"}}
    limits = {"lock_wait": "500ms", "lock_lease": "1s", "max_body_bytes": 16 * 1024 * 1024}
    with running_bridge(emulator.url, redis_url, redis_prefix, routes=routes, limits=limits) as bridge:
        first = _turn(bridge, "hello")
        assert first.status_code == 200, first.text
        sock, headers = _stalled_stream(bridge, "stalled-1")
        try:
            thread_id = headers["x-thread-id"]
            assert thread_id == first.headers["x-thread-id"]
            started = time.monotonic()
            assert _lock_held(bridge, thread_id)  # the turn runs (and renews its lease) while it writes
            # Past the deadline (plus the lease, for a renewal just before it) the lock is gone...
            while _lock_held(bridge, thread_id):
                assert time.monotonic() - started < TIMEOUT_S + 3.0, "the stalled stream still holds the lock"
                time.sleep(0.1)
            # ...and the same conversation takes its next turn, on its thread (not a 409 for a busy one),
            # while the stalled client still holds its connection open without reading.
            answer = _turn(bridge, "still there?")
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"] == "Echo: still there?"
            assert answer.headers["x-thread-id"] == thread_id
        finally:
            sock.close()
