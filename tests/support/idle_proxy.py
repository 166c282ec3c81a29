"""A TCP proxy on loopback that closes a connection idle for `idle_s`, like a gateway's idle timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from tests.support.loopback_proxy import LoopbackProxy
from tests.support.streams import close_writers


class IdleTimeoutProxy(LoopbackProxy):
    """Relays bytes both ways to `target_port`; a connection that carried no byte in either direction
    for `idle_s` is closed on both sides (what an Azure Application Gateway or nginx does).
    `cut` counts the connections it closed that way."""

    kind = "idle-proxy"

    def __init__(self, target_port: int, idle_s: float) -> None:
        super().__init__(target_port)
        self.idle_s = idle_s
        self.cut = 0

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._writers.add(client_writer)
        try:
            upstream = await self._connect()
        except OSError:
            await close_writers([client_writer])
            return
        loop = asyncio.get_running_loop()
        last = loop.time()

        def moved() -> None:
            nonlocal last
            last = loop.time()

        async def watch() -> None:
            while True:
                quiet = loop.time() - last
                if quiet >= self.idle_s:
                    self.cut += 1
                    return
                await asyncio.sleep(min(0.05, self.idle_s - quiet))

        await self._pipe((client_reader, client_writer), upstream, on_chunk=moved, also=watch())


@contextlib.contextmanager
def idle_timeout_proxy(target_port: int, idle_s: float) -> Iterator[IdleTimeoutProxy]:
    proxy = IdleTimeoutProxy(target_port, idle_s).start()
    try:
        yield proxy
    finally:
        proxy.stop()
