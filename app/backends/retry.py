"""Retry policy: which failures are retried, how long to wait, bounded by a deadline (pure, no I/O)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def server_hint(headers: dict[str, str] | object) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms` first, then `retry-after` (seconds or a date)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    ms = get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    after = get("retry-after")
    if not after:
        return None
    try:
        return max(0.0, float(after))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(after)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay_s: float = 0.2
    max_delay_s: float = 8.0
    multiplier: float = 2.0
    jitter: float = 0.1
    retry_statuses: frozenset[int] = field(default=frozenset({408, 429, 500, 502, 503, 504}))

    def delay(self, attempt: int, hint: float | None = None) -> float:
        """Wait before attempt `attempt + 1` (attempt counts from 1); the server's hint wins when given."""
        if hint is not None:
            return hint
        base = min(self.max_delay_s, self.base_delay_s * self.multiplier ** (attempt - 1))
        return base * (1 + random.uniform(-self.jitter, self.jitter))

    def retries(self, status: int) -> bool:
        return status in self.retry_statuses

    @classmethod
    def testing(cls) -> RetryPolicy:
        """The same logic with millisecond waits, for tests."""
        return cls(base_delay_s=0.005, max_delay_s=0.05, jitter=0.0)
