"""Long turns behind a gateway that cuts idle connections (a local proxy with a 1 s idle timeout)."""

from __future__ import annotations

import socket

import httpx
import openai
import pytest

from tests.support.bridge import KEY, running_bridge
from tests.support.idle_proxy import idle_timeout_proxy
from tests.support.servers import ServerThread

IDLE_S = 1.0
# The agent works silently for 2.5 idle timeouts before it answers.
SLOW = [{"role": "user", "content": "/sleep 2500"}]


def _stream_text(url: str) -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
    with client:
        stream = client.chat.completions.create(model="demo-assistant", messages=SLOW, stream=True)
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def test_the_proxy_cuts_a_stream_that_stays_silent(emulator: ServerThread, redis_url: str, redis_prefix: str) -> None:
    """The proxy does what a gateway does, so the next test means something."""
    with (
        running_bridge(emulator.url, redis_url, redis_prefix) as bridge,
        idle_timeout_proxy(bridge.server.port, IDLE_S) as proxy,
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            f"{proxy.url}/v1/chat/completions",
            json={"model": "demo-assistant", "stream": True, "messages": [{"role": "user", "content": "/sleep 60000"}]},
        ) as stream,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            for _ in stream.iter_raw():
                pass
        assert proxy.cut == 1


def test_keepalive_comments_carry_a_long_stream_through_the_gateway(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    with (
        running_bridge(emulator.url, redis_url, redis_prefix, sse_keepalive="300ms") as bridge,
        idle_timeout_proxy(bridge.server.port, IDLE_S) as proxy,
    ):
        assert _stream_text(proxy.url) == "Slept 2500 ms."
        assert proxy.cut == 0


def test_a_route_timeout_below_the_gateways_gives_a_non_streamed_client_a_clean_504(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    """The README's advice for non-streamed clients: the bridge answers before the gateway cuts."""
    routes = {
        "demo-assistant": {"endpoint": emulator.url, "assistant_id": "asst_demo", "auth": KEY, "timeout": "500ms"}
    }
    with (
        running_bridge(emulator.url, redis_url, redis_prefix, routes=routes) as bridge,
        idle_timeout_proxy(bridge.server.port, IDLE_S) as proxy,
    ):
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0, timeout=30)
        with client, pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="demo-assistant", messages=SLOW)
        assert info.value.status_code == 504
        assert info.value.body["code"] == "upstream_timeout"  # type: ignore[index]
        assert proxy.cut == 0


def test_a_stopped_proxy_leaves_no_connection_open(emulator: ServerThread) -> None:
    """Stopped mid-relay, the proxy closes both sides on its own loop (a StreamWriter left to the
    collector after that loop closed would warn in whichever later test the collector runs in)."""
    with (
        idle_timeout_proxy(emulator.port, idle_s=30) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port)) as s,
    ):
        s.sendall(b"GET /_emulator/stats HTTP/1.1\r\nHost: emulator\r\n\r\n")  # keep-alive: the relay stays up
        assert s.recv(12) == b"HTTP/1.1 200"
        proxy.stop()
        writers = proxy.writers()
        assert len(writers) == 2 and all(w.transport.is_closing() for w in writers)
