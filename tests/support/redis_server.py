"""A `redis-server` of a test's own, on a free loopback port, with the options the test gives (an eviction
policy, no persistence), that the test can restart: the same port, the same options, and, without
persistence, none of the data."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis as redis_sync

from tests.support.servers import free_port


class RedisServer:
    def __init__(self, *options: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.options = options
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", *self.options]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server {' '.join(self.options)} did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def answers(self) -> bool:
        try:
            with redis_sync.Redis(port=self.port, socket_timeout=0.5) as client:
                return bool(client.ping())
        except redis_sync.RedisError:
            return False

    def stop(self) -> None:
        """SIGKILL: what a crash, an OOM kill or a node lost does (nothing is saved on the way out)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def redis_server(*options: str) -> Iterator[RedisServer]:
    server = RedisServer(*options).start()
    try:
        yield server
    finally:
        server.stop()
