"""The served bridge keeps an idle client connection for `server.keepalive_timeout`, then closes it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from app.settings import Settings
from tests.support.bridge import routes_for
from tests.support.process import bridge_process, write_config
from tests.support.servers import ServerThread

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n"


def _answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_the_default_outlasts_common_gateways_and_uvicorns_own() -> None:
    # uvicorn's default is 5 s, exactly httpx's pool expiry: the two race on every idle connection.
    assert Settings().server.keepalive_timeout > 60


def test_an_idle_client_connection_lives_for_the_setting_then_closes(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        routes_for(emulator.url),
        redis_prefix=redis_prefix,
        server={"keepalive_timeout": "1500ms"},
    )
    with bridge_process(config, redis_url, tmp_path) as proc:
        port = int(proc.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(HEALTH)
            assert _answer(sock).startswith(b"HTTP/1.1 200")
            time.sleep(0.8)  # idle, but within the setting: the same connection answers again
            sock.sendall(HEALTH)
            assert _answer(sock).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            assert sock.recv(1) == b""  # then the server closes it, having said nothing more
            assert 1.0 < time.monotonic() - started < 4.0  # the setting, not uvicorn's 5 s
