"""Shutting down the loopback TCP proxies of the tests (`idle_proxy`, `cut_proxy`) without leaks.

A StreamWriter whose transport is still open when it is collected warns from `__del__`; collected
after its loop closed, it does so in whichever later test the collector happens to run, so each
proxy closes every writer, and awaits the closing, on its own loop before that loop stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def close_writers(writers: Iterable[asyncio.StreamWriter | None]) -> None:
    """Close every writer first, then await each one's closing: a cancel during the wait (the proxy
    stopping) leaves none of them open."""
    live = [w for w in writers if w is not None]
    for writer in live:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for w in live), return_exceptions=True)


async def end_other_tasks(grace_s: float) -> None:
    """Let the loop's other tasks end within `grace_s`, then cancel the rest and wait for them. All of
    them, not a set the connections fill themselves: one accepted just now may not have started yet."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if not others:
        return
    _, late = await asyncio.wait(others, timeout=grace_s)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
