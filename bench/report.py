"""The bench's outputs: a Markdown summary with every figure beside its baseline, and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.cpu import table as reference_table
from bench.cpu import target_line as cpu_target_line

TARGETS = "Targets: overhead p50 <= 2 ms and p99 <= 10 ms at concurrency 16; completion lag p50 <= 5 ms;"


def _f(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def _held(ok: bool) -> str:
    return "held" if ok else "missed"


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Agent Bridge bench, {r['started']}",
        "",
        f"Machine: {r['machine']['cpus']} CPUs. Peer: {r['peer']['name']} ({r['peer']['status']}).",
        "",
    ]
    lines += [
        "## Overhead (bridge vs the same upstream calls made directly)",
        "",
        "| turn @ concurrency | direct p50 / p99 ms | bridge p50 / p99 ms | added p50 / p99 ms | bridge/direct p50 | x-agent-bridge-overhead-ms p50 / p99 |",
        "|---|---|---|---|---|---|",
    ]
    for name, o in r["overhead"].items():
        lines.append(
            f"| {name} | {_f(o['direct_ms']['p50'])} / {_f(o['direct_ms']['p99'])} | {_f(o['bridge_ms']['p50'])} / "
            f"{_f(o['bridge_ms']['p99'])} | {_f(o['added_ms']['p50'])} / {_f(o['added_ms']['p99'])} | "
            f"{_f(o['ratio_p50'])}x | {_f(o['overhead_header_ms']['p50'])} / {_f(o['overhead_header_ms']['p99'])} |"
        )
    if "peer_latency" in r:
        lines += [
            "",
            "LiteLLM's agent route (a new thread per request, polled every second) against the direct thread+run:",
            "",
            "| @ concurrency | direct p50 ms | LiteLLM p50 ms | added p50 ms | LiteLLM/direct |",
            "|---|---|---|---|---|",
        ]
        for name, o in r["peer_latency"].items():
            lines.append(
                f"| {name} | {_f(o['direct_ms']['p50'])} | {_f(o['litellm_ms']['p50'])} | {_f(o['added_ms']['p50'])} | {_f(o['ratio_p50'])}x |"
            )
    s = r["streaming"]
    lines += [
        "",
        "## Streaming (20 deltas, 20 ms apart)",
        "",
        "| | direct p50 ms | bridge p50 ms | bridge - direct |",
        "|---|---|---|---|",
        f"| time to first token | {_f(s['ttft_ms']['direct']['p50'])} | {_f(s['ttft_ms']['bridge']['p50'])} | {_f(s['ttft_added_p50_ms'])} ms |",
        f"| time to last byte | {_f(s['last_byte_ms']['direct']['p50'])} | {_f(s['last_byte_ms']['bridge']['p50'])} | {_f(s['last_byte_ratio_p50'], 3)}x |",
    ]
    lag = r["completion_lag"]
    lines += [
        "",
        "## Completion lag (run finished -> client holds the answer; runs take ~300 ms)",
        "",
        "| how the run is followed | lag p50 ms | lag p90 ms | n |",
        "|---|---|---|---|",
    ]
    for name, v in lag["lag_ms"].items():
        lines.append(f"| {name} | {_f(v['p50'])} | {_f(v['p90'])} | {v['n']} |")
    lines += [
        "",
        f"Tail (first token to last byte) of a short streamed answer: bridge {_f(lag['tail_ms']['bridge']['p50'])} ms, "
        f"direct {_f(lag['tail_ms']['direct']['p50'])} ms: the bridge adds {_f(lag['tail_lag_p50_ms'])} ms after the run "
        "finished (the lag above also holds the bridge's start-of-request work).",
    ]
    lines += [
        "",
        "## Upstream requests per turn (from the emulator's counters)",
        "",
        "| route | new conversation | follow-up | tool round |",
        "|---|---|---|---|",
    ]
    for model, v in r["upstream_requests"].items():
        lines.append(f"| {model} | {v['new_conversation']} | {v['follow_up']} | {v['tool_round']} |")
    t = r["throughput"]
    lines += [
        "",
        "## Throughput (chat turns per second at concurrency 64, 8 s each)",
        "",
        "| target | turns/s | p50 ms | errors | vs direct | CPU ms per turn | 2 cores / CPU per turn |",
        "|---|---|---|---|---|---|---|",
    ]
    direct = t["direct"]["turns_per_s"]
    for name, v in t.items():
        cpu = v.get("cpu_ms_per_turn", {})
        spent = ", ".join(f"{part} {_f(value)}" for part, value in cpu.items())
        ceiling = 2000 / sum(cpu.values()) if cpu and sum(cpu.values()) > 0 else float("nan")
        lines.append(
            f"| {name} | {_f(v['turns_per_s'], 1)} | {_f(v['p50_ms'], 1)} | {v['errors']} | "
            f"{_f(v['turns_per_s'] / direct)}x | {spent} | {_f(ceiling, 0)} |"
        )
    lines += [
        "",
        "The last column is the most any setup could reach on this machine's two cores with that CPU per turn "
        "(emulator and load generator included): a second worker adds capacity only where cores are free.",
    ]
    against = r.get("cpu_reference", {})
    if against.get("rounds"):
        ref = against["reference"]
        lines += [
            "",
            f"## Bridge CPU per chat follow-up against {ref.get('short', ref['asked'])}, alternating rounds",
            "",
            f"Head: the bridge above (1 worker), {against['head']}. Reference: {ref.get('commit', ref['asked'])} "
            f"({ref['status']}), served from a worktree of its commit by the same interpreter (it imports `app` from "
            f"{ref.get('evidence', {}).get('imports_app_from', 'n/a')}), on the same emulator, Redis and config. "
            f"Rounds of {_f(against['settings']['seconds'], 0)} s at concurrency {against['settings']['concurrency']}, "
            "the pair's order swapped every round; the verdict is in the targets below.",
            "",
            *reference_table(against),
        ]
    m = r["memory"]
    lines += [
        "",
        "## Memory",
        "",
        f"One worker holding 1,000 concurrent streams: {m['completed']} completed, {m['errors']} errors; "
        f"peak RSS {_f(m['peak_rss_mb'], 1)} MB (idle: {_f(m['rss_before_mb'], 1)} MB).",
        "",
    ]
    lines += ["## Targets", "", TARGETS, ""]
    # Percentile differences of two noisy distributions can go negative; the bridge's own account of
    # its time (x-agent-bridge-overhead-ms) is the sturdier witness, so both are shown and the worse decides.
    for turn in ("chat_followup@16", "responses@16"):
        o = r["overhead"][turn]
        p50 = max(o["added_ms"]["p50"], o["overhead_header_ms"]["p50"])
        p99 = max(o["added_ms"]["p99"], o["overhead_header_ms"]["p99"])
        lines.append(
            f"- {turn}: overhead p50 <= 2 ms {_held(p50 <= 2)} ({_f(p50)} ms), p99 <= 10 ms {_held(p99 <= 10)} "
            f"({_f(p99)} ms)"
        )
    bridge_lag = lag["lag_ms"]["bridge"]["p50"]
    tail = lag["tail_lag_p50_ms"]
    lines.append(
        f"- completion lag p50 <= 5 ms: {_held(tail <= 5)} ({_f(tail)} ms after the run finished; "
        f"{_f(bridge_lag)} ms counting the request's start)"
    )
    counts = r["upstream_requests"].values()
    ok = all(v["follow_up"] == 1 and v["tool_round"] == 1 and v["new_conversation"] <= 2 for v in counts)
    lines.append(f"- upstream requests 1 per follow-up and tool round, <= 2 per new conversation: {_held(ok)}")
    if "litellm" in t:
        ratio = t["bridge, 1 worker"]["turns_per_s"] / t["litellm"]["turns_per_s"]
        lines.append(f"- throughput >= 3x LiteLLM: {_held(ratio >= 3)} ({_f(ratio, 1)}x)")
    else:
        lines.append("- throughput >= 3x LiteLLM: not measured (peer unavailable)")
    # Issue 12's budget: the bridge's own CPU per chat follow-up (one worker, concurrency 64; the load
    # process's 64 first turns are inside the figure, as they were when 1.28 ms was measured).
    # The absolute figure depends on the day's machine; the ratio to the commit the budget was set on does not.
    cpu_ms = t["bridge, 1 worker"]["cpu_ms_per_turn"]["bridge"]
    lines.append(cpu_target_line(cpu_ms, r.get("cpu_reference")))
    two = t["bridge, 2 workers"]["turns_per_s"] / t["bridge, 1 worker"]["turns_per_s"]
    lines.append(f"- two workers >= 1.7x one: {_held(two >= 1.7)} ({_f(two)}x)")
    lines.append(
        f"- peak RSS <= 150 MB with 1,000 streams: {_held(m['peak_rss_mb'] <= 150 and m['errors'] == 0)} ({_f(m['peak_rss_mb'], 1)} MB)"
    )
    lines += ["", f"Bench duration: {_f(r['duration_s'], 0)} s."]
    carry = r.get("carry")
    if carry:
        lines += ["", "## Carrying conversations to Foundry v2 (`python -m bench.carry`)", ""]
        if "carried_per_s" in carry:
            lines.append(
                f"{carry['carried_per_s']} conversations/s carried from one process (target >= 50): "
                f"{carry['carried']} of {carry['conversations']} threads of {carry['messages_each']} messages, "
                f"{carry['latency_ms_per_request']:g} ms per Azure request, concurrency {carry['concurrency']}, "
                f"{carry['upstream_requests']} upstream requests; a second run carried {carry['second_run_carried']}."
            )
        else:
            lines.append(str(carry.get("status")))
    return "\n".join(lines)


def plots(r: dict[str, Any], prefix: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, c in zip(axes, (1, 16, 64), strict=True):
        o = r["overhead"][f"chat_followup@{c}"]
        ax.hist([o["direct_samples"], o["bridge_samples"]], bins=40, label=["direct", "bridge"], histtype="step")
        ax.set_title(f"follow-up chat turn latency, concurrency {c}")
        ax.set_xlabel("ms")
        ax.legend()
    fig.tight_layout()
    fig.savefig(f"{prefix}-latency.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(r["throughput"])
    ax.bar(names, [r["throughput"][n]["turns_per_s"] for n in names])
    ax.set_ylabel("turns per second at concurrency 64")
    ax.set_title("throughput")
    fig.tight_layout()
    fig.savefig(f"{prefix}-throughput.png", dpi=100)
    plt.close(fig)
