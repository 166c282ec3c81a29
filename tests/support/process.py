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


def write_config(path: Path, routes: dict[str, Any], **settings: Any) -> Path:
    path.write_text(yaml.safe_dump({"routes": routes, **settings}))
    return path


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
    running = BridgeProcess(proc=proc, url=f"http://127.0.0.1:{port}", log_path=log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the bridge exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{running.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bridge did not get ready:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
