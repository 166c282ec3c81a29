"""How an agent's failed run (or Response) becomes the error a client sees: one status per failure kind.

| failure (Azure's `last_error.code` / `error.code`)     | client sees                         | SDK retries? |
|--------------------------------------------------------|-------------------------------------|--------------|
| `rate_limit_exceeded`                                  | 429 `rate_limit_error`, Retry-After | yes, after   |
| `server_error`, `internal_error`, `timeout`, ...       | 502 `upstream_error`                | yes          |
| anything else (`invalid_prompt`, tool failures, ...)   | 422 `agent_error`, the run's code   | no           |
| `content_filter` (a filtered answer)                   | not an error: finish `content_filter` | -          |

A retry of the first two is worth it; the rest fail the same way again, so they get a status the
OpenAI SDKs do not retry (they retry 408, 409, 429 and 5xx). Retry-After comes from Azure's
message ("Rate limit is exceeded. Try again in 20 seconds.").
"""

from __future__ import annotations

import re
from typing import Any

from app.errors import AgentFailedError, BridgeError, RateLimitError, RunFailedError

CONTENT_FILTER = "content_filter"
RATE_LIMITED = "rate_limit_exceeded"
DEFAULT_RETRY_AFTER_S = 10.0
"""When Azure's message names no wait: long enough that an SDK's retry does not hit the same limit."""

# Failures of Azure itself, not of this request: a retry may well succeed.
TRANSIENT = frozenset({"server_error", "internal_error", "internal_server_error", "timeout", "service_unavailable"})

_RETRY_IN = re.compile(
    r"(?:try again|retry)\s+(?:in|after)\s+(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?)\b",
    re.IGNORECASE,
)


def retry_after_of(message: str | None) -> float | None:
    """The wait Azure's message asks for, in seconds ("Try again in 20 seconds." -> 20.0)."""
    if not message:
        return None
    match = _RETRY_IN.search(message)
    if match is None:
        return None
    unit = match.group(2).lower()
    factor = 0.001 if unit.startswith("ms") or unit.startswith("milli") else 60.0 if unit.startswith("m") else 1.0
    return float(match.group(1)) * factor


def run_failure(
    code: str | None, message: str | None, *, what: str = "run", innererror: dict[str, Any] | None = None
) -> BridgeError:
    """The error for a run that ended `failed` (`what` names it: "run" or "response"); Azure's
    `innererror` rides along as it came."""
    code = code or "run_failed"
    text = f"The agent's {what} failed: {message or code}"
    if code == RATE_LIMITED:
        return RateLimitError(
            text, retry_after=retry_after_of(message) or DEFAULT_RETRY_AFTER_S, code=code, innererror=innererror
        )
    if code in TRANSIENT:
        return RunFailedError(text, code=code, innererror=innererror)
    return AgentFailedError(text, code=code, innererror=innererror)


def stream_error(code: str | None, message: str | None) -> BridgeError:
    """An `error` event inside an upstream stream: the same table, with Azure's words kept."""
    return run_failure(code or "server_error", message or "no message", what="response")
