"""A TCP proxy on loopback that a test can cut and mend: a network partition between the bridge and Redis,
at the moment the test chooses (while the Redis server itself keeps running, its data kept)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from tests.support.loopback_proxy import LoopbackProxy
from tests.support.streams import close_writers


class CutProxy(LoopbackProxy):
    """Relays bytes both ways to `target_port`. `cut()` closes every relayed connection and, until
    `mend()`, closes each new one as soon as it is accepted (a client sees its connection reset, as
    through a partition that a load balancer answers for)."""

    kind = "cut-proxy"

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.accepted_while_cut = 0
        self._cut = False
        self._connections: set[asyncio.Task[None]] = set()

    async def _stopping(self) -> None:
        await self._drop()

    async def _drop(self) -> None:
        """Cut every relayed connection: its sockets closed first, so a cancelled relay leaves none open."""
        for writer in self._writers:
            writer.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await close_writers(self._writers)
        self._writers.clear()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self.accepted_while_cut += 1
            await close_writers([client_writer])
            return
        self._writers.add(client_writer)
        me = asyncio.current_task()
        assert me is not None
        self._connections.add(me)
        me.add_done_callback(self._connections.discard)
        try:
            upstream = await self._connect()
        except OSError:
            await close_writers([client_writer])
            return
        await self._pipe((client_reader, client_writer), upstream)

    def cut(self) -> None:
        async def go() -> None:
            self._cut = True
            await self._drop()

        self._call(go())

    def mend(self) -> None:
        async def go() -> None:
            self._cut = False

        self._call(go())


@contextlib.contextmanager
def cut_proxy(target_port: int) -> Iterator[CutProxy]:
    proxy = CutProxy(target_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
