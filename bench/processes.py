"""Starts and stops what the bench measures (emulator, bridge, peer), each a process on loopback."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
AGENT_BRIDGE = [sys.executable, "-m", "app.cli"]
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
KEY = {"type": "api_key", "api_key": "bench"}
TOOLS_AGENT = "bench-tools"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become ready")


@contextlib.contextmanager
def process(
    command: list[str], ready_url: str, log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Iterator[int]:
    """Run `command` in `cwd`, wait until `ready_url` answers, yield its pid; always stop it."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            preexec_fn=raise_file_limit,
        )
    try:
        wait_ready(ready_url, proc)
        yield proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def bridge_config(path: Path, emulator: str) -> Path:
    """The bench's bridge config, written to `path`: its routes to the emulator, a Redis prefix of its own."""
    routes = {
        "demo-assistant": {"endpoint": emulator, "assistant_id": "asst_demo", "auth": KEY},
        "demo-agent": {
            "endpoint": f"{emulator}/api/projects/demo",
            "agent": {"name": "demo-agent", "version": "1"},
            "auth": KEY,
        },
        # A Foundry v2 agent takes its tools from its version: the tool-round count needs one that
        # declares the bench's `lookup` function (made by bench/__main__.py's `_declare_tools_agent`).
        "tools-agent": {
            "endpoint": f"{emulator}/api/projects/demo",
            "agent": {"name": TOOLS_AGENT, "version": "1"},
            "auth": KEY,
        },
    }
    settings = {"routes": routes, "redis_prefix": f"bench:{time.time_ns()}:", "threads": {"janitor": False}}
    path.write_text(yaml.safe_dump(settings))
    return path


def bridge(config: Path, logs: Path, workers: int = 1, tree: Path | None = None) -> tuple[Any, int]:
    """A bridge process (a context manager yielding its pid) and its port.

    `tree`: serve the code checked out there (another commit's) instead of this checkout's: the same
    interpreter and venv, started in `tree` with `PYTHONPATH=tree`, so `app` is imported from it
    (`python -m` puts the working directory first on the path, ahead of the venv's editable install).
    """
    port = free_port()
    command = [*AGENT_BRIDGE, "serve", "--config", str(config), "--port", str(port), "--log-level", "warning"]
    command += ["--workers", str(workers)]
    # The bench's bridges have no keys: open mode, asked for through the environment, which a tree of a
    # commit before the setting ignores (its config would refuse an unknown key).
    env = {"REDIS_URL": REDIS_URL, "AGENT_BRIDGE_OPEN_MODE": "true"}
    if workers > 1:
        metrics_dir = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
        # Bytecode written into the fresh tree is the witness that this process imported from it
        # (an empty value turns PYTHONDONTWRITEBYTECODE off; it only changes start-up, not a turn).
        env["PYTHONDONTWRITEBYTECODE"] = ""
    log = logs / f"bridge-{port}.log"
    return process(command, f"http://127.0.0.1:{port}/readyz", log, env, cwd=tree or ROOT), port


def worker_pids(parent: int) -> list[int]:
    """The processes serving requests: the parent's children when uvicorn runs several workers."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    pids = [int(p) for p in children.read_text().split()] if children.exists() else []
    return pids or [parent]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and of its worker children (uvicorn's --workers)."""
    total = 0.0
    for one in {pid, *worker_pids(pid)}:
        fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total
