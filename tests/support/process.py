"""The bridge as a real process (`python -m app.cli serve`), for logs, signals and replicas."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.servers import free_port


@dataclass
class BridgeProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """`kill -9`: no clean-up of any kind runs in the bridge."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def write_config(path: Path, routes: dict[str, Any], **settings: Any) -> Path:
    """A config file; without `keys` the bridge it starts runs in open mode, asked for explicitly
    (`open_mode: true`), as a keyless bridge must be."""
    settings.setdefault("open_mode", True)
    path.write_text(yaml.safe_dump({"routes": routes, **settings}))
    return path


def spawn_bridge(
    config: Path,
    redis_url: str | None,
    tmp: Path,
    *,
    python: str = sys.executable,
    extra_env: dict[str, str] | None = None,
) -> BridgeProcess:
    """Start `serve` on a free port; `wait_ready` tells when it answers."""
    port = free_port()
    log_path = tmp / f"bridge-{port}.log"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update({"REDIS_URL": redis_url} if redis_url else {})
    env.update(extra_env or {})
    command = [python, "-m", "app.cli", "serve", "--config", str(config), "--port", str(port)]
    if Path(python).name == "agent-bridge":
        command = [python, "serve", "--config", str(config), "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return BridgeProcess(proc=proc, url=f"http://127.0.0.1:{port}", log_path=log_path)


def wait_ready(running: BridgeProcess, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while True:
        if running.proc.poll() is not None:
            raise RuntimeError(f"the bridge exited with {running.proc.returncode}:\n{running.log_path.read_text()}")
        try:
            if httpx.get(f"{running.url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the bridge did not get ready:\n{running.log_path.read_text()}")
        time.sleep(0.1)


def stop_bridge(running: BridgeProcess) -> None:
    """SIGTERM (the graceful stop), unless it is gone already."""
    proc = running.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def bridge_process(
    config: Path,
    redis_url: str | None,
    tmp: Path,
    *,
    python: str = sys.executable,
    extra_env: dict[str, str] | None = None,
) -> Iterator[BridgeProcess]:
    """`redis_url` None: the embedded in-process Redis (what `make run` uses), whatever REDIS_URL says."""
    running = spawn_bridge(config, redis_url, tmp, python=python, extra_env=extra_env)
    try:
        wait_ready(running)
        yield running
    finally:
        stop_bridge(running)


@contextlib.contextmanager
def bridge_processes(config: Path, redis_url: str | None, tmp: Path, count: int) -> Iterator[list[BridgeProcess]]:
    """`count` bridges on the same config and Redis, started together (a replica set, or the replacements
    an orchestrator starts for a process that dies)."""
    running = [spawn_bridge(config, redis_url, tmp) for _ in range(count)]
    try:
        for one in running:
            wait_ready(one)
        yield running
    finally:
        for one in running:
            if one.proc.poll() is None:
                one.terminate()
        for one in running:
            stop_bridge(one)
