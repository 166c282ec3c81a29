"""bench/cpu.py's pure parts: round order, medians and ratios, and the lines the bench prints.

No timing here: the figures are made up, only the arithmetic and the wording are checked.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from bench import cpu, report


def _round(n: int, side: str, bridge_ms: float, emulator_ms: float = 3.0, errors: int = 0) -> dict[str, Any]:
    return {
        "round": n,
        "side": side,
        "bridge_ms": bridge_ms,
        "emulator_ms": emulator_ms,
        "load_ms": 0.5,
        "turns_per_s": 300.0,
        "errors": errors,
    }


ROUNDS = [
    _round(1, "head", 3.0),
    _round(1, "reference", 4.0),
    _round(2, "reference", 4.4, emulator_ms=3.3),
    _round(2, "head", 3.3, emulator_ms=3.3),
    _round(3, "head", 2.9),
    _round(3, "reference", 4.1),
]


def _result(rounds: list[dict[str, Any]], status: str = "measured") -> dict[str, Any]:
    reference: dict[str, Any] = {"asked": "2a03fea", "status": status}
    if status == "measured":
        reference |= {
            "commit": "2a03fea" + "0" * 33,
            "short": "2a03fea",
            "subject": "the reference",
            "tree": "/tmp/ref/tree",
            "evidence": {
                "imports_app_from": "/tmp/ref/tree/app/__init__.py",
                "pyc_in_tree": 90,
                "version": {"head": "200 {}", "reference": "404"},
            },
        }
    return {
        "head": "the working tree at abc1234",
        "reference": reference,
        "settings": {"rounds": 3, "seconds": 8.0, "warmup_s": 2.0, "concurrency": 64},
        "emulator": "http://127.0.0.1:1",
        "redis": "redis://127.0.0.1:6379/14",
        "rounds": rounds,
        "summary": cpu.summarize(rounds),
    }


def test_the_pair_swaps_order_every_round() -> None:
    assert cpu.order(3, ["head", "reference"]) == [
        (1, "head"),
        (1, "reference"),
        (2, "reference"),
        (2, "head"),
        (3, "head"),
        (3, "reference"),
    ]
    assert cpu.order(2, ["head"]) == [(1, "head"), (2, "head")]


def test_the_target_is_the_issue_budget_as_a_ratio() -> None:
    ratio = cpu.TARGET_RATIO
    assert ratio == pytest.approx(1.0 / 1.28)
    assert f"{ratio:.2f}" == "0.78"


def test_summary_takes_medians_by_side_and_their_ratio() -> None:
    s = cpu.summarize(ROUNDS)
    assert s["median"]["head"]["bridge_ms"] == 3.0
    assert s["median"]["reference"]["bridge_ms"] == 4.1
    assert s["ratio"] == pytest.approx(3.0 / 4.1)
    assert s["round_ratios"] == pytest.approx([3.0 / 4.0, 3.3 / 4.4, 2.9 / 4.1])
    assert s["emulator_ratio"] == pytest.approx(1.0)
    assert s["target_ms"] == pytest.approx(4.1 / 1.28)
    assert s["held"] is True  # 0.73 <= 0.78
    assert s["errors"] == 0


def test_a_ratio_above_the_target_is_missed() -> None:
    s = cpu.summarize([_round(1, "head", 3.3), _round(1, "reference", 4.0)])
    assert s["ratio"] == pytest.approx(0.825)
    assert s["held"] is False


def test_head_alone_has_medians_and_no_ratio() -> None:
    s = cpu.summarize([_round(1, "head", 3.0), _round(2, "head", 5.0), _round(3, "head", 4.0, errors=2)])
    assert s["median"] == {"head": {"bridge_ms": 4.0, "emulator_ms": 3.0, "load_ms": 0.5, "turns_per_s": 300.0}}
    assert "ratio" not in s
    assert s["errors"] == 2


def test_text_states_rounds_medians_ratio_and_the_scaled_target() -> None:
    out = cpu.text(_result(ROUNDS))
    assert "| 2 | reference | 4.400 | 3.300 | 0.500 | 300.0 | 0 |" in out
    assert "head 3.000 ms, reference 4.100 ms: head/reference = 0.732" in out
    assert "round by round: 0.750, 0.750, 0.707" in out
    assert "is a ratio of 0.78: held (0.732)" in out
    assert "0.78 x reference = 0.78 x 4.100 = 3.203 ms (head: 3.000 ms)" in out
    assert "GET /version: head 200 {}; reference 404" in out


def test_text_without_the_reference_says_why_and_reports_head_only() -> None:
    rounds = [_round(1, "head", 3.0), _round(2, "head", 3.2, errors=1)]
    out = cpu.text(_result(rounds, status="unavailable: commit 2a03fea is not in this clone (a shallow clone)"))
    assert "Reference 2a03fea: unavailable: commit 2a03fea is not in this clone (a shallow clone). Head only." in out
    assert "Median bridge CPU per follow-up: head 3.100 ms" in out
    assert "Failed requests: 1; the figures above are suspect." in out
    assert "head/reference" not in out


def test_target_line_shows_the_absolute_figure_and_the_same_run_ratio() -> None:
    line = cpu.target_line(3.7, _result(ROUNDS))
    assert line.startswith("- bridge CPU per chat follow-up <= 1.0 ms: missed (3.700 ms on this machine today)")
    assert "against 2a03fea (1.28 ms when the target was set): head/reference 0.732 <= 0.78 held" in line
    assert "head 3.000 ms, reference 4.100 ms; the target scaled to this machine: 3.203 ms" in line


def test_target_line_without_a_reference_keeps_the_absolute_figure() -> None:
    assert cpu.target_line(0.9, None) == (
        "- bridge CPU per chat follow-up <= 1.0 ms: held (0.900 ms on this machine today); "
        "against the reference: not measured"
    )
    failed = {"reference": {"asked": "2a03fea", "status": "failed: RuntimeError: no"}}
    assert cpu.target_line(1.2, failed).endswith(
        "missed (1.200 ms on this machine today); against 2a03fea: failed: RuntimeError: no"
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_commit_not_in_the_clone_is_unavailable() -> None:
    try:
        cpu.resolve("HEAD")
    except cpu.Unavailable:
        pytest.skip("not a git checkout")
    with pytest.raises(cpu.Unavailable, match="is not in this clone"):
        cpu.resolve("0123456789abcdef0123456789abcdef01234567")


def _bench_results(cpu_reference: dict[str, Any] | None) -> dict[str, Any]:
    """The smallest `python -m bench` results that bench/report.py renders (made-up figures)."""
    summary = {"p50": 1.0, "p90": 2.0, "p99": 3.0, "n": 10}
    turn = {
        "bridge_ms": summary,
        "direct_ms": summary,
        "added_ms": {"p50": 0.5, "p90": 0.6, "p99": 0.7},
        "ratio_p50": 1.5,
        "overhead_header_ms": summary,
    }
    cpu_ms = {"emulator": 3.0, "bridge": 3.7, "load generator": 0.5}
    target = {"turns_per_s": 200.0, "p50_ms": 30.0, "errors": 0, "cpu_ms_per_turn": cpu_ms}
    results: dict[str, Any] = {
        "started": "2026-12-02-000000",
        "machine": {"cpus": 2},
        "peer": {"name": "litellm 1.109.1", "status": "unavailable: offline"},
        "overhead": {"chat_followup@16": turn, "responses@16": turn},
        "streaming": {
            "ttft_ms": {"bridge": summary, "direct": summary},
            "last_byte_ms": {"bridge": summary, "direct": summary},
            "ttft_added_p50_ms": 1.0,
            "last_byte_ratio_p50": 1.01,
        },
        "completion_lag": {
            "lag_ms": {"bridge": summary},
            "tail_ms": {"bridge": summary, "direct": summary},
            "tail_lag_p50_ms": 1.0,
        },
        "upstream_requests": {"demo-assistant": {"new_conversation": 1, "follow_up": 1, "tool_round": 1}},
        "throughput": {"direct": target, "bridge, 1 worker": target, "bridge, 2 workers": target},
        "memory": {"completed": 1000, "errors": 0, "peak_rss_mb": 140.0, "rss_before_mb": 80.0},
        "duration_s": 200.0,
    }
    if cpu_reference is not None:
        results["cpu_reference"] = cpu_reference
    return results


def test_the_bench_report_prints_the_absolute_figure_and_the_ratio() -> None:
    out = report.markdown(_bench_results(_result(ROUNDS)))
    assert cpu.target_line(3.7, _result(ROUNDS)) in out.splitlines()
    assert "## Bridge CPU per chat follow-up against 2a03fea, alternating rounds" in out
    assert "| 3 | reference | 4.100 | 3.000 | 0.500 | 300.0 | 0 |" in out


def test_the_bench_report_without_the_reference_says_so() -> None:
    failed = {"reference": {"asked": "2a03fea", "status": "unavailable: git is not installed"}, "rounds": []}
    out = report.markdown(_bench_results(failed))
    assert (
        "- bridge CPU per chat follow-up <= 1.0 ms: missed (3.700 ms on this machine today); "
        "against 2a03fea: unavailable: git is not installed"
    ) in out.splitlines()
    assert "alternating rounds" not in out
    assert "against the reference: not measured" in report.markdown(_bench_results(None))
