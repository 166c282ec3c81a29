"""Shared fixtures: a real Redis (started if none answers), the emulator on a real port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import httpx
import pytest
import redis

from app.emulator import EmulatorOptions, create_emulator_app
from tests.support.servers import ServerThread, free_port

if TYPE_CHECKING:
    from tests.support.bridge import Bridge

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def _answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG") or s.recv(0) == b""
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """`REDIS_URL` (default db 15 on 127.0.0.1:6379); else a `redis-server` started on a free port."""
    url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    if _answers(url):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.exit(
            f"No Redis answers at {url} and no redis-server is installed: "
            "install redis-server (apt-get install redis-server) or set REDIS_URL.",
            returncode=3,
        )
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = f"redis://127.0.0.1:{port}/15"
    deadline = time.monotonic() + 10
    while not _answers(started):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.exit(f"redis-server did not start on port {port}; set REDIS_URL.", returncode=3)
        time.sleep(0.05)
    try:
        yield started
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A 3-master Redis Cluster this session starts on free loopback ports (skipped without redis-server)."""
    from tests.support.redis_cluster import RedisCluster3

    try:
        cluster = RedisCluster3().start()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of its own for each test, so tests never see each other's state; its keys are
    deleted when the test ends. Only this prefix's: other suites may share the database at the same
    time, so nothing here flushes it."""
    prefix = f"abtest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        # `*` on both sides: a key layout may put the prefix inside a hash tag (`{abtest:...:}`).
        doomed = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        for start in range(0, len(doomed), 500):
            client.delete(*doomed[start : start + 500])
    except redis.RedisError:
        pass  # a test that stopped this Redis on purpose leaves nothing it can clean
    finally:
        client.close()


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[ServerThread]:
    server = ServerThread(create_emulator_app(EmulatorOptions())).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def emulator(emulator_server: ServerThread) -> ServerThread:
    """The session's emulator, reset (state, stats, faults, options) before each test."""
    with httpx.Client(base_url=emulator_server.url) as c:
        c.post("/_emulator/reset").raise_for_status()
        c.post(
            "/_emulator/config",
            json={
                "latency_ms": 0,
                "token_delay_ms": 0,
                "run_expiry_s": 600,
                "token_ttl_s": 3600,
                "accept_api_key_on_projects": False,
            },
        ).raise_for_status()
    return emulator_server


@pytest.fixture
def bridge(emulator: ServerThread, redis_url: str, redis_prefix: str) -> Iterator[Bridge]:
    """The bridge with the test routes (see `tests.support.bridge.routes_for`), on its own Redis prefix."""
    from tests.support.bridge import running_bridge

    with running_bridge(emulator.url, redis_url, redis_prefix) as running:
        yield running
