"""RetryPolicy: exponential backoff with jitter, the server's hint first, attempts and deadline bounded."""

from __future__ import annotations

import dataclasses
from email.utils import formatdate

import httpx
import pytest

from app.backends.retry import RetryPolicy, server_hint

NOW = 1_700_000_000.0
EXACT = RetryPolicy(jitter=0.0)


def test_backoff_doubles_from_the_base_and_is_capped() -> None:
    assert [EXACT.backoff(n) for n in (1, 2, 3, 4)] == pytest.approx([0.2, 0.4, 0.8, 1.6])
    assert EXACT.backoff(20) == pytest.approx(8.0)
    assert EXACT.backoff(200) == pytest.approx(8.0)  # no overflow for absurd attempt numbers


def test_jitter_stays_within_its_band_and_varies() -> None:
    policy = RetryPolicy(jitter=0.1)
    samples = [policy.backoff(2) for _ in range(200)]
    assert all(0.36 - 1e-9 <= s <= 0.44 + 1e-9 for s in samples)
    assert len(set(samples)) > 1
    assert all(policy.backoff(50) <= policy.max_delay_s for _ in range(50))


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert server_hint({"retry-after-ms": "250", "retry-after": "7"}) == pytest.approx(0.25)
    assert server_hint({"retry-after": "7"}) == 7.0
    assert server_hint(httpx.Headers({"Retry-After-Ms": "40"})) == pytest.approx(0.04)  # httpx's headers
    assert server_hint({"Retry-After": "3"}) == 3.0  # a plain dict with other casing


def test_retry_after_as_an_http_date() -> None:
    assert server_hint({"retry-after": formatdate(NOW + 12, usegmt=True)}, now=NOW) == pytest.approx(12.0)
    assert server_hint({"retry-after": formatdate(NOW - 30, usegmt=True)}, now=NOW) == 0.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        (None, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after-ms": "nan", "retry-after": "2"}, 2.0),  # an unusable ms hint falls through
        ({"retry-after-ms": "inf"}, None),
        ({"x-ratelimit-remaining-requests": "0"}, None),
    ],
)
def test_unusable_hints(headers: dict[str, str] | None, expected: float | None) -> None:
    assert server_hint(headers) == expected


def test_next_delay_takes_the_hint_as_seconds_or_headers() -> None:
    assert EXACT.next_delay(1, 3.5) == 3.5
    assert EXACT.next_delay(3, httpx.Headers({"Retry-After-Ms": "20"})) == pytest.approx(0.02)
    assert EXACT.next_delay(3, {"unrelated": "1"}) == pytest.approx(0.8)  # no hint in them: backoff


def test_next_delay_is_none_when_attempts_are_used_up() -> None:
    assert EXACT.next_delay(3) == pytest.approx(0.8)
    assert EXACT.next_delay(4) is None
    assert RetryPolicy(max_attempts=1).next_delay(1) is None


def test_next_delay_leaves_long_server_waits_to_the_client() -> None:
    assert EXACT.next_delay(1, {"retry-after": "7"}) == 7.0
    assert EXACT.next_delay(1, {"retry-after": "9"}) is None  # longer than max_delay_s


def test_next_delay_never_sleeps_past_the_deadline() -> None:
    assert EXACT.next_delay(1, remaining_s=1.0) == pytest.approx(0.2)
    assert EXACT.next_delay(1, remaining_s=0.2) is None
    assert EXACT.next_delay(1, 0.5, remaining_s=0.4) is None
    assert EXACT.next_delay(1, remaining_s=-1.0) is None


def test_retryable_statuses() -> None:
    assert all(EXACT.retries(s) for s in (408, 429, 500, 502, 503, 504))
    assert not any(EXACT.retries(s) for s in (200, 400, 401, 403, 404, 409, 422, 501))


def test_testing_policy_has_the_same_logic_with_tiny_waits() -> None:
    fast = RetryPolicy.testing()
    assert fast.max_attempts == RetryPolicy().max_attempts
    assert fast.retry_statuses == RetryPolicy().retry_statuses
    assert fast.backoff(1) == pytest.approx(0.005)
    assert fast.backoff(2) == pytest.approx(0.01)
    assert fast.backoff(20) <= 0.05
    assert fast.next_delay(1, {"retry-after-ms": "20"}) == pytest.approx(0.02)
    assert fast.next_delay(1, {"retry-after": "7"}) is None


def test_policy_is_frozen_and_validated() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        EXACT.max_attempts = 9  # type: ignore[misc]
    for bad in ({"max_attempts": 0}, {"jitter": 1.5}, {"base_delay_s": -1.0}, {"multiplier": 0.5}):
        with pytest.raises(ValueError, match="must"):
            RetryPolicy(**bad)  # type: ignore[arg-type]
