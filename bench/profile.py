"""`python -m bench.profile` (`make profile`): Python function calls per chat follow-up, by package.

CPU time per turn moves by a third between days on a shared 2-core machine; the number of Python calls
a turn makes does not. The bridge runs under cProfile twice, for a short and a long run of the bench's
chat follow-ups (concurrency 16); the difference between the two, divided by the difference in turns,
is what one more turn costs, with start-up and warm-up cancelled out. Compare two commits with it.
"""

from __future__ import annotations

import collections
import os
import pstats
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.processes import AGENT_BRIDGE, REDIS_URL, bridge_config, free_port, process, wait_ready
from bench.scenarios import load

SHORT, LONG = 400, 1200
CONCURRENCY = 16


def _profiled(config: Path, logs: Path, turns: int) -> dict[Any, Any]:
    out = logs / f"bridge-{turns}.prof"
    port = free_port()
    command = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "app.cli", "serve"]
    command += ["--config", str(config), "--port", str(port), "--log-level", "warning"]
    with (logs / f"bridge-{turns}.log").open("wb") as log:
        bridge = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "REDIS_URL": REDIS_URL, "AGENT_BRIDGE_OPEN_MODE": "true"},
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", bridge)
        spec = {"kind": "bridge_chat", "bridge": f"http://127.0.0.1:{port}", "concurrency": CONCURRENCY}
        load({**spec, "requests": turns, "duration_s": 300})
    finally:
        # SIGINT, not SIGTERM: uvicorn re-raises the signal it caught once it has stopped, and only an
        # interrupt lets cProfile write its file on the way out.
        bridge.send_signal(signal.SIGINT)
        bridge.wait(timeout=60)
    stats: dict[Any, Any] = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    return stats


def _package(file: str) -> str:
    if file == "~":
        return "builtins"
    if found := re.search(r"site-packages/([^/]+)", file):
        return found.group(1)
    if "/app/" in file:
        return "app/" + file.split("/app/", 1)[1].split("/")[0]
    return "stdlib"


def main() -> int:
    logs = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    port = free_port()
    emulator = f"http://127.0.0.1:{port}"
    command = [*AGENT_BRIDGE, "emulator", "--port", str(port), "--log-level", "warning", "--accept-api-key-on-projects"]
    with process(command, f"{emulator}/_emulator/stats", logs / "emulator.log"):
        config = bridge_config(logs / "config.yaml", emulator)
        short = _profiled(config, logs, SHORT)
        long = _profiled(config, logs, LONG)
    turns = LONG - SHORT
    by_package: collections.Counter[str] = collections.Counter()
    for key, (_, calls, *_rest) in long.items():
        extra = calls - (short[key][1] if key in short else 0)
        if extra > 0:
            by_package[_package(key[0])] += extra
    total = sum(by_package.values())
    print(f"Python calls per chat follow-up (concurrency {CONCURRENCY}): {total / turns:.0f}")
    for package, calls in by_package.most_common(15):
        print(f"  {calls / turns:8.1f}  {package}")
    print(f"profiles in {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
