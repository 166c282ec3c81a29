"""Limits and usage, the pure parts: quotas from settings, OpenAI's rate-limit headers and reset format,
the 429, the usage table, the day range, and when the OTEL_* environment switches traces on."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import yaml

from app.api.usage import days_between, grouping
from app.core.metering import Counts, Quota, duration, quotas, rate_headers, refusal
from app.errors import InvalidRequestError
from app.settings import load_settings
from app.telemetry import configured
from app.usage_cli import usage_table

KEY = "0123456789abcdef0123"


def test_resets_are_written_as_openai_writes_them() -> None:
    assert [duration(s) for s in (0.02, 1, 59.2, 360, 3723)] == ["20ms", "1s", "1m0s", "6m0s", "1h2m3s"]


def test_a_keys_limits_override_the_default_field_by_field() -> None:
    settings = load_settings(
        None,
        env={},
        limits={"per_key": {"requests_per_minute": 60, "tokens_per_day": 1000}},
        keys=[
            {"name": "a", "key": KEY + "a"},
            {"name": "b", "key": KEY + "b", "limits": {"requests_per_minute": 5, "turns_in_flight": 2}},
            {"name": "c", "key": KEY + "c", "limits": {"requests_per_minute": None, "tokens_per_day": None}},
        ],
    )
    assert quotas(settings) == {
        "a": Quota(requests_per_minute=60, tokens_per_day=1000),
        "b": Quota(requests_per_minute=5, tokens_per_day=1000, turns_in_flight=2),
    }
    assert quotas(load_settings(None, env={})) == {}  # nothing configured: no limit, no Redis work


def test_headers_report_requests_per_minute_and_tokens_per_minute_else_per_day() -> None:
    now = 1_700_000_010.5  # 29.5 s before the minute ends
    counts = Counts(denied=0, requests=2, minute_tokens=40, day_tokens=900, in_flight=0)
    both = rate_headers(Quota(requests_per_minute=10, tokens_per_minute=100, tokens_per_day=1000), counts, now)
    assert both == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "8",
        "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": "60",
        "x-ratelimit-reset-tokens": "30s",
    }
    daily = rate_headers(Quota(tokens_per_day=1000), counts, now)
    assert daily["x-ratelimit-remaining-tokens"] == "100" and "x-ratelimit-limit-requests" not in daily


def test_a_refusal_is_a_429_in_openais_words() -> None:
    counts = Counts(denied=2, requests=1, minute_tokens=120, day_tokens=120, in_flight=0)
    error = refusal("team-a", Quota(tokens_per_minute=100), counts, 1_700_000_000.0)
    assert error.status == 429 and error.code == "rate_limit_exceeded" and error.type == "tokens"
    assert "Limit 100, Used 120" in error.message
    assert error.headers["Retry-After"] == "40"
    assert error.headers["x-ratelimit-remaining-tokens"] == "0"


def test_the_usage_table_totals_its_rows() -> None:
    row = {
        "owner": "a",
        "route": "r",
        "turns": 2,
        "input_tokens": 3,
        "output_tokens": 4,
        "total_tokens": 7,
        "errors": 1,
    }
    text = usage_table({"since": "2026-12-01", "until": "2026-12-07", "data": [row, {**row, "owner": "b"}]})
    lines = text.splitlines()
    assert lines[0] == "usage 2026-12-01 .. 2026-12-07 (UTC days)"
    assert lines[-1].split() == ["total", "4", "6", "8", "14", "2"]


def test_the_usage_range_and_grouping_are_checked() -> None:
    today = dt.date(2026, 12, 7)
    assert days_between(None, None, today=today)[0] == "2026-11-08"
    assert days_between("2026-12-06", "2026-12-07") == ["2026-12-06", "2026-12-07"]
    with pytest.raises(InvalidRequestError, match="since is after until"):
        days_between("2026-12-08", "2026-12-07")
    with pytest.raises(InvalidRequestError) as bad:
        days_between("yesterday", None)
    assert bad.value.param == "since"
    assert grouping("owner") == ("owner",)
    with pytest.raises(InvalidRequestError):
        grouping("owner,team")


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_traces_are_on_only_when_the_otel_environment_says_so(environ: dict[str, str], on: bool) -> None:
    assert configured(environ) is on


def test_the_config_in_the_docs_page_is_valid_and_means_what_it_says() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "usage-and-limits.md").read_text()
    block = re.search(r"^```yaml\n(.*?)^```", page, re.M | re.S)
    assert block is not None
    settings = load_settings(None, env={}, **yaml.safe_load(block.group(1)))
    assert quotas(settings) == {
        "ops": Quota(requests_per_minute=600),
        "team-a": Quota(requests_per_minute=3, tokens_per_day=200000),
        "team-b": Quota(requests_per_minute=600),
    }
