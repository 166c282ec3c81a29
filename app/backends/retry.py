"""Retry policy: which failures are retried, how long to wait, bounded by a deadline."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime

Hint = float | Mapping[str, str] | None
"""A server's wait request: seconds already parsed, or the answer's headers to read it from."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)  # httpx's headers are case-insensitive; a plain dict may not be lower-case
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None


def server_hint(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms` first, then `retry-after` (seconds or an HTTP date).

    `now` is the current Unix time (default: the clock), used only for a date. None when no usable hint.
    """
    if not headers:
        return None
    ms = _header(headers, "retry-after-ms")
    if ms is not None and (value := _number(ms)) is not None:
        return value / 1000.0
    after = _header(headers, "retry-after")
    if after is None:
        return None
    if (value := _number(after)) is not None:
        return value
    try:
        when = parsedate_to_datetime(after)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # `-0000`: an HTTP date is GMT by definition
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; the server's `retry-after(-ms)` wins when it is not too long.

    Attempts count from 1: `delay(1)` is the wait after the first attempt failed.
    """

    max_attempts: int = 4
    base_delay_s: float = 0.2
    max_delay_s: float = 8.0
    multiplier: float = 2.0
    jitter: float = 0.1
    """Each computed wait is scaled by a random factor in [1 - jitter, 1 + jitter]."""
    retry_statuses: frozenset[int] = field(default=frozenset({408, 429, 500, 502, 503, 504}))

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def retries(self, status: int) -> bool:
        """Whether an answer with this status is worth another attempt."""
        return status in self.retry_statuses

    def backoff(self, attempt: int) -> float:
        """The wait after attempt `attempt` failed without a server hint: exponential, capped, jittered."""
        base = min(self.max_delay_s, self.base_delay_s * self.multiplier ** max(0, attempt - 1))
        if self.jitter:
            base *= 1.0 + random.uniform(-self.jitter, self.jitter)
        return min(self.max_delay_s, base)

    def next_delay(self, attempt: int, hint: Hint = None, *, remaining_s: float | None = None) -> float | None:
        """The wait before attempt `attempt + 1`, or None when there should be none.

        None when the attempts are used up, when the server asks for longer than `max_delay_s`
        (that wait is the client's to decide: it gets the 429 with Retry-After), or when the wait
        would end at or past the deadline (`remaining_s` seconds away).
        """
        if attempt >= self.max_attempts:
            return None
        seconds = server_hint(hint) if isinstance(hint, Mapping) else hint
        if seconds is not None and seconds > self.max_delay_s:
            return None
        wait = self.backoff(attempt) if seconds is None else seconds
        if remaining_s is not None and wait >= remaining_s:
            return None
        return wait

    @classmethod
    def testing(cls) -> RetryPolicy:
        """The same logic with millisecond waits and no jitter, for tests."""
        return cls(base_delay_s=0.005, max_delay_s=0.05, jitter=0.0)
