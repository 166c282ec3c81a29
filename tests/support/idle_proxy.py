"""A TCP proxy on loopback that closes a connection idle for `idle_s`, like a gateway's idle timeout."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from tests.support.servers import free_port
from tests.support.streams import close_writers, end_other_tasks


class IdleTimeoutProxy:
    """Relays bytes both ways to `target_port`; a connection that carried no byte in either direction
    for `idle_s` is closed on both sides (what an Azure Application Gateway or nginx does).
    `cut` counts the connections it closed that way."""

    def __init__(self, target_port: int, idle_s: float) -> None:
        self.target_port = target_port
        self.idle_s = idle_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cut = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"idle-proxy-{self.port}")

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
            # Every socket closes on this loop before the loop stops (`tests.support.streams`): the
            # pumps read EOF and each relay ends on its own, stragglers are cancelled.
            for writer in self._writers:
                writer.close()
            await end_other_tasks(grace_s=5)
            await close_writers(self._writers)
            await server.wait_closed()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._writers.add(client_writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            await close_writers([client_writer])
            return
        self._writers.add(upstream_writer)
        last = asyncio.get_running_loop().time()

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal last
            while chunk := await reader.read(65536):
                last = asyncio.get_running_loop().time()
                writer.write(chunk)
                await writer.drain()

        async def watch() -> None:
            while True:
                quiet = asyncio.get_running_loop().time() - last
                if quiet >= self.idle_s:
                    self.cut += 1
                    return
                await asyncio.sleep(min(0.05, self.idle_s - quiet))

        tasks = [
            asyncio.create_task(pump(client_reader, upstream_writer)),
            asyncio.create_task(pump(upstream_reader, client_writer)),
            asyncio.create_task(watch()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await close_writers([client_writer, upstream_writer])

    def start(self) -> IdleTimeoutProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the idle-timeout proxy did not start")
        return self

    def writers(self) -> list[asyncio.StreamWriter]:
        """Every StreamWriter the proxy has made (both sides of each connection)."""
        return list(self._writers)

    def stop(self) -> None:
        if self._stop is not None and not self._loop.is_closed():  # stopping twice is no error
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


@contextlib.contextmanager
def idle_timeout_proxy(target_port: int, idle_s: float) -> Iterator[IdleTimeoutProxy]:
    proxy = IdleTimeoutProxy(target_port, idle_s).start()
    try:
        yield proxy
    finally:
        proxy.stop()
