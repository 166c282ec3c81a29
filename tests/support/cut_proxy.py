"""A TCP proxy on loopback that a test can cut and mend: a network partition between the bridge and Redis,
at the moment the test chooses (while the Redis server itself keeps running, its data kept)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

from tests.support.servers import free_port


class CutProxy:
    """Relays bytes both ways to `target_port`. `cut()` closes every relayed connection and, until
    `mend()`, closes each new one as soon as it is accepted (a client sees its connection reset, as
    through a partition that a load balancer answers for)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.accepted_while_cut = 0
        self._cut = False
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"cut-proxy-{self.port}")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            await self._drop()
            await server.wait_closed()

    async def _drop(self) -> None:
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self.accepted_while_cut += 1
            client_writer.close()
            with contextlib.suppress(OSError):
                await client_writer.wait_closed()
            return
        me = asyncio.current_task()
        assert me is not None
        self._connections.add(me)
        me.add_done_callback(self._connections.discard)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

            async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                while chunk := await reader.read(65536):
                    writer.write(chunk)
                    await writer.drain()

            tasks = [
                asyncio.create_task(pump(client_reader, upstream_writer)),
                asyncio.create_task(pump(upstream_reader, client_writer)),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        except OSError:
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def cut(self) -> None:
        async def go() -> None:
            self._cut = True
            await self._drop()

        self._call(go())

    def mend(self) -> None:
        async def go() -> None:
            self._cut = False

        self._call(go())

    def start(self) -> CutProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the proxy did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


@contextlib.contextmanager
def cut_proxy(target_port: int) -> Iterator[CutProxy]:
    proxy = CutProxy(target_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
