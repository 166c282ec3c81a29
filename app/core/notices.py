"""Per-request warnings about what the bridge ignored: the `x-agent-bridge-warning` header and the access log.

Anything serving a request (a codec, a backend) calls `warn()` with one human sentence; the request
middleware sends them as one `x-agent-bridge-warning` header, the sentences joined by "; ", when the
response starts, and lists them in the access line. A warning never fails the request. Warnings
added after the response started (mid-stream) reach the access log only.
"""

from __future__ import annotations

from contextvars import ContextVar

HEADER = "x-agent-bridge-warning"
_SEPARATOR = "; "
_MAX_HEADER_CHARS = 2000

# A ContextVar (like timing's), so that whatever serves the request adds to it without every layer
# passing it along; the list is shared with the tasks the request's handlers start.
_current: ContextVar[list[str] | None] = ContextVar("request_warnings", default=None)


def begin() -> list[str]:
    warnings: list[str] = []
    _current.set(warnings)
    return warnings


def warn(sentence: str) -> None:
    """Record one warning for the current request (ignored outside a request; repeats kept once)."""
    warnings = _current.get()
    if warnings is not None and sentence not in warnings:
        warnings.append(sentence)


def header_value(warnings: list[str]) -> str | None:
    """The header's value: ASCII sentences joined by "; " (None when there is nothing to say)."""
    if not warnings:
        return None
    text = _SEPARATOR.join(w.replace(";", ",") for w in warnings)
    text = text.encode("ascii", "replace").decode("ascii").replace("\r", " ").replace("\n", " ")
    return text[:_MAX_HEADER_CHARS]
