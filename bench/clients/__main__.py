"""`python -m bench.clients` (`make clients`): eight real clients, every scenario, every backend.

Installs the Python clients into bench/.clients-venv (LlamaIndex into bench/.clients-venv-llamaindex:
it pins an older openai) and the Node ones into bench/clients/node
(npm), starts the emulator and the bridge (the shipped config.yaml, embedded Redis) on free ports,
runs bench/clients/py_clients.py and node/clients.mjs against it, prints the matrix and writes
bench/results/clients-<time>.json. Exit status 1 if any scenario failed. `python -m bench.clients
curl langchain` runs only those clients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.processes import AGENT_BRIDGE, free_port, process

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV = ROOT / "bench" / ".clients-venv"
# LlamaIndex pins an older openai than the other clients: a venv of its own.
LLAMA_VENV = ROOT / "bench" / ".clients-venv-llamaindex"
NODE = HERE / "node"
NODE_CLIENTS = {"openai-node", "vercel-ai"}
BACKENDS = ("assistants", "foundry", "endpoint")
"""The matrix's columns: an Assistants route, a Foundry v2 route, an agent-endpoint route (config.yaml)."""
LLAMA_CLIENTS = {"llamaindex"}


def _python_clients(venv: Path, requirements: Path) -> Path:
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.exists() or stamp.stat().st_mtime < requirements.stat().st_mtime:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)
        stamp.touch()
    return python


def _node_clients() -> None:
    if not (NODE / "node_modules" / ".package-lock.json").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=NODE, check=True)


def _run(command: list[str], bridge: str, cwd: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=cwd, env={**os.environ, "BRIDGE_URL": bridge}, timeout=900
    )
    rows = []
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            rows.append(json.loads(line))
    if done.returncode != 0 and not rows:
        raise RuntimeError(f"{command[0]} failed:\n{done.stdout}\n{done.stderr}")
    return rows


def main(argv: list[str]) -> int:
    wanted = set(argv)
    py_wanted = sorted(wanted - NODE_CLIENTS - LLAMA_CLIENTS)
    run_py = not wanted or bool(py_wanted)
    run_llama = not wanted or bool(wanted & LLAMA_CLIENTS)
    python = _python_clients(VENV, HERE / "requirements.txt") if run_py else None
    llama = _python_clients(LLAMA_VENV, HERE / "requirements-llamaindex.txt") if run_llama else None
    node_wanted = not wanted or bool(wanted & NODE_CLIENTS)
    if node_wanted:
        _node_clients()
    emulator_port, bridge_port = free_port(), free_port()
    emulator, bridge = f"http://127.0.0.1:{emulator_port}", f"http://127.0.0.1:{bridge_port}"
    # Project endpoints take Entra tokens only: the bridge's managed identity is the emulator's, as `dev` does.
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {
        "AZURE_EMULATOR_URL": emulator,
        "IDENTITY_ENDPOINT": f"{emulator}/msi/token",
        "IDENTITY_HEADER": "agent-bridge-clients",
        "AGENT_BRIDGE_OPEN_MODE": "true",  # the shipped config has no keys: a local trial, as `make run`
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ab-clients-") as tmp:
        logs = Path(tmp)
        emulator_cmd = [*AGENT_BRIDGE, "emulator", "--port", str(emulator_port)]
        bridge_cmd = [*AGENT_BRIDGE, "serve", "--config", str(ROOT / "config.yaml"), "--port", str(bridge_port)]
        with (
            process(emulator_cmd, f"{emulator}/_emulator/stats", logs / "emulator.log", env),
            process(bridge_cmd, f"{bridge}/healthz", logs / "bridge.log", env),
        ):
            others = py_wanted or ["openai-python", "curl", "langchain", "pydantic-ai", "agents-sdk"]
            if python is not None:
                rows += _run([str(python), str(HERE / "py_clients.py"), *others], bridge, ROOT)
            if llama is not None:
                rows += _run([str(llama), str(HERE / "py_clients.py"), "llamaindex"], bridge, ROOT)
            if node_wanted:
                rows += _run(["node", "clients.mjs", *(wanted & NODE_CLIENTS)], bridge, NODE)
    _print(rows)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    out = results / f"clients-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0 if rows and all(r["ok"] for r in rows) else 1


def _print(rows: list[dict[str, Any]]) -> None:
    clients = sorted({r["client"] for r in rows})
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    cell = {(r["client"], r["scenario"], r["backend"]): r["ok"] for r in rows}
    width = max(len(s) for s in scenarios) if scenarios else 10
    print(" " * width + "  " + "  ".join(f"{c:>13}" for c in clients))
    for scenario in scenarios:
        marks = []
        for client in clients:
            states = [cell.get((client, scenario, b)) for b in BACKENDS]
            marks.append(" ".join("--" if s is None else ("ok" if s else "XX") for s in states))
        print(f"{scenario:<{width}}  " + "  ".join(f"{m:>13}" for m in marks))
    passed = sum(r["ok"] for r in rows)
    print(f"\n{passed} of {len(rows)} scenarios pass (each cell: {', '.join(BACKENDS)})")
    for r in rows:
        if not r["ok"]:
            print(f"FAIL {r['client']} {r['scenario']} {r['backend']}: {r['detail'][:600]}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
