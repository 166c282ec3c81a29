"""What an ending may leave behind, counted where it lives: threads and runs upstream (the emulator's
`/_emulator/threads` view), records and locks in Redis. Plus the bounded wait the fault tests share."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import redis

from app.state.keys import Keys

ACTIVE_RUN = ("queued", "in_progress", "requires_action", "cancelling")


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout:g} s"
        time.sleep(0.05)


def upstream_threads(emulator_url: str) -> list[dict[str, Any]]:
    """Every thread the emulator ever created, deleted or not, with its runs."""
    with httpx.Client(base_url=emulator_url, timeout=10) as c:
        data: list[dict[str, Any]] = c.get("/_emulator/threads").json()["data"]
        return data


def active_runs(emulator_url: str) -> list[str]:
    return [r["id"] for t in upstream_threads(emulator_url) for r in t["runs"] if r["status"] in ACTIVE_RUN]


def locks(redis_url: str, prefix: str) -> dict[bytes, bytes]:
    """Every turn lock under `prefix`, with its holder's token."""
    r = redis.Redis.from_url(redis_url)
    try:
        keys = list(r.scan_iter(match=f"{prefix}lock:*"))
        values = r.mget(keys) if keys else []
        return {k: v for k, v in zip(keys, values, strict=True) if v is not None}
    finally:
        r.close()


def unrecorded(emulator_url: str, redis_url: str, prefix: str) -> list[dict[str, Any]]:
    """Threads alive upstream that the registry does not know: orphans (with what the emulator says of them)."""
    alive = [t for t in upstream_threads(emulator_url) if not t["deleted"]]
    if not alive:
        return []
    keys = Keys(prefix)
    r = redis.Redis.from_url(redis_url)
    try:
        with r.pipeline(transaction=False) as pipe:
            for thread in alive:
                pipe.exists(keys.thread(thread["id"]))
            known = pipe.execute()
    finally:
        r.close()
    return [t for t, exists in zip(alive, known, strict=True) if not exists]


def nothing_left(emulator_url: str, redis_url: str, prefix: str, timeout: float = 5.0) -> None:
    """The invariant after every ending: no run active upstream, no lock held, no thread unrecorded."""
    wait_for(lambda: active_runs(emulator_url) == [], timeout, "no active run upstream")
    wait_for(lambda: locks(redis_url, prefix) == {}, timeout, "no lock in Redis")
    assert [t["id"] for t in unrecorded(emulator_url, redis_url, prefix)] == []


def sse(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, list[Any]]:
    """POST a streamed request; (status, every `data:` payload) or (status, [the error body])."""
    payloads: list[Any] = []
    with httpx.Client(timeout=30) as c, c.stream("POST", url, json=body, headers=headers or {}) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, [response.json()]
        for line in response.iter_lines():
            if line.startswith("data: "):
                raw = line[len("data: ") :]
                payloads.append(raw if raw == "[DONE]" else json.loads(raw))
    return 200, payloads
