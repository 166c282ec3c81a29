"""Per-request accounting of time spent waiting on Azure, so the bridge can report its own overhead."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class RequestTiming:
    started: float = field(default_factory=time.perf_counter)
    upstream_s: float = 0.0
    """Seconds spent waiting on Azure (from sending a request to the end of its body or stream)."""
    upstream_requests: int = 0
    request_id: str = ""
    """The request's id (X-Request-Id), so what goes to the log only can be found from a client's report."""

    def overhead_ms(self, now: float | None = None) -> float:
        total = (now if now is not None else time.perf_counter()) - self.started
        return max(0.0, (total - self.upstream_s) * 1000.0)


# A ContextVar rather than a parameter: upstream clients add to the timing of whichever request
# they serve without every layer in between passing it along.
_current: ContextVar[RequestTiming | None] = ContextVar("request_timing", default=None)


def begin(request_id: str = "") -> RequestTiming:
    timing = RequestTiming(request_id=request_id)
    _current.set(timing)
    return timing


def current() -> RequestTiming | None:
    return _current.get()


def request_id() -> str:
    """The id of the request being served ("" outside one)."""
    timing = _current.get()
    return timing.request_id if timing is not None else ""


@contextmanager
def upstream_wait() -> Iterator[None]:
    """Count the enclosed block as time spent waiting on Azure."""
    timing = _current.get()
    start = time.perf_counter()
    try:
        yield
    finally:
        if timing is not None:
            timing.upstream_s += time.perf_counter() - start
