"""`python -m bench` (`make bench`): the bridge against the direct path and against LiteLLM, one run.

Starts the emulator, the bridge (one and two workers) and the LiteLLM proxy as processes on loopback,
drives them from a separate load process, and writes bench/results/<time>.json, .md and .png files.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import carry, cpu, peer, report, scenarios
from bench.processes import (
    AGENT_BRIDGE,
    KEY,
    REDIS_URL,
    TOOLS_AGENT,
    bridge_config,
    free_port,
    peak_rss_mb,
    process,
    worker_pids,
)
from bench.processes import bridge as bridge_process

LITELLM_KEY = "sk-bench-master"


def _declare_tools_agent(emulator: str) -> None:
    definition = {
        "kind": "prompt",
        "model": "gpt-4o",
        "instructions": "You call lookup when asked.",
        "tools": [{"type": "function", **scenarios.LOOKUP}],
    }
    httpx.post(
        f"{emulator}/api/projects/demo/agents/{TOOLS_AGENT}/versions",
        params={"api-version": "v1"},
        headers={"api-key": KEY["api_key"]},
        json={"definition": definition},
        timeout=30,
    ).raise_for_status()


def _litellm(emulator: str, logs: Path) -> tuple[Any, int]:
    port = free_port()
    config = logs / "litellm.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": "peer-agent",
                        "litellm_params": {
                            "model": "azure_ai/agents/asst_demo",
                            "api_base": f"{emulator}/api/projects/demo",
                            "api_key": "bench",
                        },
                    }
                ],
                "general_settings": {"master_key": LITELLM_KEY},
            }
        )
    )
    command = [str(peer.VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--num_workers", "1"]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    return process(command, f"http://127.0.0.1:{port}/health/liveliness", logs / "litellm.log", env), port


def main() -> int:
    started = time.time()
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    results: dict[str, Any] = {"started": stamp, "machine": {"cpus": os.cpu_count()}, "redis": REDIS_URL}
    try:
        peer.install(logs / "litellm-install.log")
        peer_status = "installed"
    except Exception as exc:
        peer_status = f"unavailable: {type(exc).__name__}: {exc}"[:300]
    results["peer"] = {"name": f"litellm {peer.VERSION}", "status": peer_status}

    emulator_port = free_port()
    emulator = f"http://127.0.0.1:{emulator_port}"
    # The LiteLLM peer and the bench's routes use keys on project endpoints: a key-taking gateway stands in.
    emulator_cmd = [*AGENT_BRIDGE, "emulator", "--port", str(emulator_port), "--log-level", "warning"]
    emulator_cmd.append("--accept-api-key-on-projects")
    with process(emulator_cmd, f"{emulator}/_emulator/stats", logs / "emulator.log") as emulator_pid:
        _declare_tools_agent(emulator)
        config = bridge_config(logs / "config.yaml", emulator)
        manager, port = bridge_process(config, logs)
        with manager as bridge_pid:
            bridge = f"http://127.0.0.1:{port}"
            print("upstream requests per turn ...", flush=True)
            results["upstream_requests"] = scenarios.upstream_requests(bridge, emulator)
            print("overhead ...", flush=True)
            results["overhead"] = scenarios.overhead(bridge, emulator, (1, 16, 64), per_worker=40)
            print("streaming ...", flush=True)
            results["streaming"] = scenarios.streaming(bridge, emulator, runs=15)
            litellm_spec = None
            peer_manager = None
            peer_pid = 0
            if peer_status == "installed":
                try:
                    peer_manager, peer_port = _litellm(emulator, logs)
                    peer_pid = peer_manager.__enter__()
                    litellm_spec = {"litellm": f"http://127.0.0.1:{peer_port}", "litellm_key": LITELLM_KEY}
                except Exception as exc:
                    results["peer"]["status"] = f"unavailable: could not start: {exc}"[:300]
                    peer_manager = None
            try:
                print("completion lag ...", flush=True)
                results["completion_lag"] = scenarios.completion_lag(bridge, emulator, litellm_spec)
                if litellm_spec is not None:
                    print("peer latency ...", flush=True)
                    results["peer_latency"] = scenarios.peer_latency(emulator, litellm_spec)
                print("throughput ...", flush=True)
                targets: dict[str, dict[str, Any]] = {
                    "direct": {"kind": "direct_chat", "emulator": emulator, "cpu": {"emulator": emulator_pid}},
                    "bridge, 1 worker": {
                        "kind": "bridge_chat",
                        "bridge": bridge,
                        "cpu": {"emulator": emulator_pid, "bridge": bridge_pid},
                    },
                }
                two_manager, two_port = bridge_process(config, logs, workers=2)
                with two_manager as two_pid:
                    targets["bridge, 2 workers"] = {
                        "kind": "bridge_chat",
                        "bridge": f"http://127.0.0.1:{two_port}",
                        "cpu": {"emulator": emulator_pid, "bridge": two_pid},
                    }
                    if litellm_spec is not None:
                        targets["litellm"] = {
                            "kind": "litellm_chat",
                            **litellm_spec,
                            "cpu": {"emulator": emulator_pid, "litellm": peer_pid},
                        }
                    results["throughput"] = scenarios.throughput(targets, seconds=8, concurrency=64)
            finally:
                if peer_manager is not None:
                    peer_manager.__exit__(None, None, None)
            # Issue 12's CPU budget was an absolute figure from another day: the same-run ratio against
            # the commit it was measured on is what carries over (bench/cpu.py; the peer is stopped first).
            print("bridge CPU against the reference commit ...", flush=True)
            try:
                results["cpu_reference"] = cpu.against_reference(
                    bridge, bridge_pid, emulator, emulator_pid, logs, rounds=3, seconds=6, alone=False
                )
            except Exception as exc:
                status = f"failed: {type(exc).__name__}: {exc}"[:300]
                results["cpu_reference"] = {"reference": {"asked": cpu.DEFAULT_REFERENCE, "status": status}}
        print("memory with 1,000 open streams ...", flush=True)
        fresh, fresh_port = bridge_process(config, logs)
        with fresh as pid:
            baseline = peak_rss_mb(worker_pids(pid)[0])
            streams = scenarios.open_streams(f"http://127.0.0.1:{fresh_port}", emulator, count=1000, delay_ms=200)
            results["memory"] = {**streams, "rss_before_mb": baseline, "peak_rss_mb": peak_rss_mb(worker_pids(pid)[0])}
    print("carrying conversations from Assistants to Foundry v2 ...", flush=True)
    try:
        results["carry"] = carry.run()
    except Exception as exc:
        results["carry"] = {"status": f"failed: {type(exc).__name__}: {exc}"[:300]}
    results["duration_s"] = time.time() - started
    json_path = out_dir / f"{stamp}.json"
    json_path.write_text(json.dumps(results, indent=2, default=str))
    markdown = report.markdown(results)
    (out_dir / f"{stamp}.md").write_text(markdown)
    report.plots(results, out_dir / stamp)
    print(markdown)
    print(f"\nwritten: {json_path} (+ .md, .png); logs in {logs}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
