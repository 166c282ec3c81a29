"""The measured scenarios. Every figure sits beside its baseline from the same run."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
from typing import Any

import httpx

from bench.processes import ROOT, cpu_seconds


def load(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load generator as a separate process and return its JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", json.dumps(spec)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": pct(values, 50), "p90": pct(values, 90), "p99": pct(values, 99), "n": len(values)}


def ms(result: dict[str, Any], key: str = "ms") -> list[float]:
    return [s[key] for s in result["samples"] if key in s and s[key] == s[key]]


def emulator_config(emulator: str, **values: float) -> None:
    httpx.post(f"{emulator}/_emulator/config", json=values).raise_for_status()


def emulator_stats(emulator: str, reset: bool = False) -> dict[str, int]:
    if reset:
        httpx.post(f"{emulator}/_emulator/stats/reset").raise_for_status()
        return {}
    stats: dict[str, int] = httpx.get(f"{emulator}/_emulator/stats").json()["by_operation"]
    return stats


def overhead(bridge: str, emulator: str, concurrencies: tuple[int, ...], per_worker: int) -> dict[str, Any]:
    """Added latency of a follow-up chat turn and a Responses turn: bridge minus direct, same upstream calls."""
    out: dict[str, Any] = {}
    for label, via_bridge, direct in (
        ("chat_followup", "bridge_chat", "direct_chat"),
        ("responses", "bridge_responses", "direct_responses"),
    ):
        for c in concurrencies:
            n = per_worker * c
            base = {"concurrency": c, "requests": n, "duration_s": 25, "bridge": bridge, "emulator": emulator}
            b = load({**base, "kind": via_bridge})
            d = load({**base, "kind": direct})
            bs, ds = summary(ms(b)), summary(ms(d))
            out[f"{label}@{c}"] = {
                "bridge_ms": bs,
                "direct_ms": ds,
                "added_ms": {k: bs[k] - ds[k] for k in ("p50", "p90", "p99")},
                "ratio_p50": bs["p50"] / ds["p50"] if ds["p50"] else float("nan"),
                "overhead_header_ms": summary(ms(b, "overhead_ms")),
                "errors": b["error_count"] + d["error_count"],
                "bridge_samples": ms(b),
                "direct_samples": ms(d),
            }
    return out


def streaming(bridge: str, emulator: str, runs: int) -> dict[str, Any]:
    text = " ".join(f"word{i}" for i in range(20))
    emulator_config(emulator, token_delay_ms=20)
    try:
        spec = {"concurrency": 1, "requests": runs, "text": text, "bridge": bridge, "emulator": emulator}
        b, d = load({**spec, "kind": "bridge_stream"}), load({**spec, "kind": "direct_stream"})
    finally:
        emulator_config(emulator, token_delay_ms=0)
    out = {
        "ttft_ms": {"bridge": summary(ms(b, "ttft_ms")), "direct": summary(ms(d, "ttft_ms"))},
        "last_byte_ms": {"bridge": summary(ms(b)), "direct": summary(ms(d))},
    }
    out["ttft_added_p50_ms"] = out["ttft_ms"]["bridge"]["p50"] - out["ttft_ms"]["direct"]["p50"]
    out["last_byte_ratio_p50"] = out["last_byte_ms"]["bridge"]["p50"] / out["last_byte_ms"]["direct"]["p50"]
    return out


def completion_lag(bridge: str, emulator: str, litellm: dict[str, str] | None) -> dict[str, Any]:
    """Dead time between the run finishing and the client holding the answer, for each way of following a run.

    The baseline is a direct streamed client: it sees `thread.run.completed` the moment it happens.
    A run here takes ~300 ms (`/sleep 300`), so pollers wait for their next poll.
    """
    text = "/sleep 300\nready"
    base = {"concurrency": 1, "text": text, "bridge": bridge, "emulator": emulator}
    direct = load({**base, "kind": "direct_stream", "requests": 8})
    finished = statistics.median(ms(direct, "run_completed_ms"))
    held = statistics.median(ms(direct))
    methods: dict[str, list[float]] = {
        "direct stream (baseline)": [v - finished for v in ms(direct)],
        "bridge": [v - finished for v in ms(load({**base, "kind": "bridge_stream", "requests": 8}))],
        "poll every 1 s (LiteLLM's loop)": [
            v - finished for v in ms(load({**base, "kind": "poller", "interval_s": 1.0, "requests": 4}))
        ],
        "poll every 5 s (the seed notebook)": [
            v - finished for v in ms(load({**base, "kind": "poller", "interval_s": 5.0, "requests": 2}))
        ],
    }
    if litellm is not None:
        peer = load({**base, **litellm, "kind": "litellm_chat", "requests": 4})
        methods["LiteLLM proxy"] = [v - finished for v in ms(peer)]
    # The dead time after the run finished, without the bridge's start-of-request work: the stream's
    # tail (first token to last byte) through the bridge against the same tail straight from Azure.
    text_stream = {"concurrency": 1, "bridge": bridge, "emulator": emulator, "text": "the answer", "requests": 40}
    bridge_tail = [s["ms"] - s["ttft_ms"] for s in load({**text_stream, "kind": "bridge_stream"})["samples"]]
    direct_tail = [s["ms"] - s["ttft_ms"] for s in load({**text_stream, "kind": "direct_stream"})["samples"]]
    return {
        "run_finished_ms": finished,
        "direct_holds_answer_ms": held,
        "lag_ms": {name: summary(values) for name, values in methods.items()},
        "tail_ms": {"bridge": summary(bridge_tail), "direct": summary(direct_tail)},
        "tail_lag_p50_ms": pct(bridge_tail, 50) - pct(direct_tail, 50),
    }


LOOKUP: dict[str, Any] = {"name": "lookup", "parameters": {"type": "object"}}
"""The function the tool-round count calls (declared by the v2 agent the bench creates for it)."""


def upstream_requests(bridge: str, emulator: str) -> dict[str, Any]:
    """Requests Azure receives per kind of turn, read from the emulator's counters."""
    out: dict[str, Any] = {}
    tools = [{"type": "function", "function": LOOKUP}]
    with httpx.Client(base_url=bridge, timeout=60) as c:
        for model in ("demo-assistant", "tools-agent"):
            c.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "warm"}], "tools": tools},
            )
            history: list[dict[str, Any]] = [{"role": "user", "content": "new conversation"}]
            emulator_stats(emulator, reset=True)
            reply = c.post("/v1/chat/completions", json={"model": model, "messages": history, "tools": tools}).json()
            new = sum(emulator_stats(emulator).values())
            history += [reply["choices"][0]["message"], {"role": "user", "content": "/tool lookup {}"}]
            emulator_stats(emulator, reset=True)
            called = c.post("/v1/chat/completions", json={"model": model, "messages": history, "tools": tools}).json()
            follow = sum(emulator_stats(emulator).values())
            message = called["choices"][0]["message"]
            history += [message] + [
                {"role": "tool", "tool_call_id": call["id"], "content": "42"} for call in message["tool_calls"]
            ]
            emulator_stats(emulator, reset=True)
            c.post(
                "/v1/chat/completions", json={"model": model, "messages": history, "tools": tools}
            ).raise_for_status()
            tool_round = sum(emulator_stats(emulator).values())
            out[model] = {"new_conversation": new, "follow_up": follow, "tool_round": tool_round}
    return out


def throughput(targets: dict[str, dict[str, Any]], seconds: float, concurrency: int) -> dict[str, Any]:
    """Turns per second at a fixed concurrency, each target for the same time.

    A target's `cpu` maps a part (emulator, bridge, ...) to its pid: the CPU each spent per turn is
    reported beside the load generator's, so the report shows where the two cores went.
    """
    out: dict[str, Any] = {}
    for name, target in targets.items():
        spec = {k: v for k, v in target.items() if k != "cpu"}
        parts: dict[str, int] = target.get("cpu", {})
        before = {part: cpu_seconds(pid) for part, pid in parts.items()}
        load_before = _children_cpu()
        result = load({**spec, "concurrency": concurrency, "requests": 1_000_000, "duration_s": seconds})
        turns = max(1, len(result["samples"]))
        cpu_ms = {part: 1000 * (cpu_seconds(pid) - before[part]) / turns for part, pid in parts.items()}
        cpu_ms["load generator"] = 1000 * (_children_cpu() - load_before) / turns
        out[name] = {
            "turns_per_s": len(result["samples"]) / result["elapsed_s"],
            "p50_ms": pct(ms(result), 50),
            "errors": result["error_count"],
            "cpu_ms_per_turn": cpu_ms,
        }
    return out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def open_streams(bridge: str, emulator: str, count: int, delay_ms: float) -> dict[str, Any]:
    """Hold `count` streams open at once through the bridge (the emulator spaces deltas)."""
    emulator_config(emulator, token_delay_ms=delay_ms)
    try:
        text = " ".join(f"w{i}" for i in range(12))
        result = load(
            {
                "kind": "bridge_stream",
                "concurrency": count,
                "requests": count,
                "duration_s": 120,
                "text": text,
                "bridge": bridge,
                "emulator": emulator,
            }
        )
    finally:
        emulator_config(emulator, token_delay_ms=0)
    return {"completed": len(result["samples"]), "errors": result["error_count"], "last_byte_ms": summary(ms(result))}


def peer_latency(emulator: str, litellm: dict[str, str]) -> dict[str, Any]:
    """A chat turn through LiteLLM's agent route against the direct thread+run it stands for."""
    out: dict[str, Any] = {}
    for c, n in ((1, 5), (16, 32)):
        base = {"concurrency": c, "requests": n, "duration_s": 30, "emulator": emulator}
        p = load({**base, **litellm, "kind": "litellm_chat"})
        d = load({**base, "kind": "direct_stream"})
        ps, ds = summary(ms(p)), summary(ms(d))
        out[f"chat@{c}"] = {
            "litellm_ms": ps,
            "direct_ms": ds,
            "added_ms": {k: ps[k] - ds[k] for k in ("p50", "p90", "p99")},
            "ratio_p50": ps["p50"] / ds["p50"],
            "errors": p["error_count"],
        }
    return out
