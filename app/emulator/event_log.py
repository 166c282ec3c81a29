"""An append-only log of events that readers follow as it grows, until it closes."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

E = TypeVar("E")


class Log(Generic[E]):
    """Events kept in order; a reader awaits `changed()` for the next one (or the close)."""

    def __init__(self) -> None:
        self.events: list[E] = []
        self.closed = False
        self._changed = asyncio.Event()

    def add(self, event: E) -> None:
        self.events.append(event)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        # A fresh Event per change: every waiter wakes once, and a later wait blocks until the next one.
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()
