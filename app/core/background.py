"""Work that must finish even when the request that started it is gone (cancelling runs, unlocking)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("agent_bridge.background")


class BackgroundTasks:
    """Holds strong references to fire-and-forget tasks and lets shutdown wait for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task[Any]:
        # A fresh task is outside the cancel scope of the request that spawned it, so the cleanup
        # runs to its end even though that request was cancelled by a client disconnect.
        task = asyncio.get_running_loop().create_task(self._guard(coro), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _guard(coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except Exception:
            log.exception("background task failed")

    async def drain(self, within_s: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within_s)

    def __len__(self) -> int:
        return len(self._tasks)
