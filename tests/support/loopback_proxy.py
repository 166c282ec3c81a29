"""A TCP relay on loopback, on an event loop in a thread of its own: what the tests' proxies share.

A subclass decides what happens to a connection (`_relay`); this class owns the loop, the listening
socket, the writers of every connection and the order of shutting down (`tests.support.streams`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Self

from tests.support.servers import free_port
from tests.support.streams import close_writers, end_other_tasks


class LoopbackProxy:
    kind = "proxy"

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"{self.kind}-{self.port}")

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _stopping(self) -> None:
        """First step of the stop: close every connection, so the pumps read EOF and the relays end."""
        for writer in self._writers:
            writer.close()

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
            # Every socket closes on this loop before the loop stops: stragglers are cancelled.
            await self._stopping()
            await end_other_tasks(grace_s=5)
            await close_writers(self._writers)
            await server.wait_closed()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.add(writer)
        return reader, writer

    @staticmethod
    async def _pipe(
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        *,
        on_chunk: Callable[[], None] = lambda: None,
        also: Coroutine[Any, Any, None] | None = None,
    ) -> None:
        """Relay bytes both ways until either direction ends (or `also` returns); then close both sides."""

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while chunk := await reader.read(65536):
                on_chunk()
                writer.write(chunk)
                await writer.drain()

        tasks = [asyncio.create_task(pump(client[0], upstream[1])), asyncio.create_task(pump(upstream[0], client[1]))]
        if also is not None:
            tasks.append(asyncio.create_task(also))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await close_writers([client[1], upstream[1]])

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def writers(self) -> list[asyncio.StreamWriter]:
        """Every StreamWriter the proxy has made (both sides of each connection)."""
        return list(self._writers)

    def start(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError(f"the {self.kind} did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None and not self._loop.is_closed():  # stopping twice is no error
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
