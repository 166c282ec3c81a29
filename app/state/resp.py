"""A lean RESP2 channel to one Redis server: one multiplexed connection, replies parsed by hiredis.

Why not redis-py for this: a turn's few commands are most of the bridge's CPU through redis-py
(measured on the bench machine: 130-165 us of CPU per GET through its async client, 72 us even on
one of its connections without the pool, 14 us for the same GET sent through an asyncio protocol and
parsed by hiredis). redis-py stays the client for everything else (the janitor, the admin view,
migrations, scans, cluster topology); this channel carries only the commands a turn makes.

One connection carries every caller's commands: Redis answers in the order it is sent, so each
command appends its caller's future to one queue and each reply resolves the oldest. What callers send
in one event-loop step leaves in one write at its end (auto-pipelining, as ioredis does). A caller that
gives up (cancelled, or its turn's deadline) leaves its future in the queue, so later replies still
line up. The connection is opened on first use and again after it drops; a command that finds it
dropped before its bytes were written goes out on the new one (nothing of it reached Redis), while
one in flight when it dropped fails with `ConnectionError` (it may have run).

A command that waits longer than the command timeout fails the whole connection with
`TimeoutError` (as redis-py disconnects a connection whose read timed out): a hung Redis costs each
caller at most that long. One timer per connection checks the oldest pending command, so a command
costs no timer of its own.

Errors are redis-py's exception classes, so the store translates both clients' failures alike.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import hiredis
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

Command = Sequence[str | int | float | bytes]


class _Reply(Exception):
    """An error reply as hiredis hands it over (an instance, returned in place of the value)."""


class Unreachable(ConnectionError):
    """The connection could not be opened (or authenticated): nothing of the command reached Redis."""


class RedirectError(ResponseError):
    """MOVED, ASK, TRYAGAIN or CLUSTERDOWN: the key's slot is served elsewhere (or not yet)."""


def _error(reply: _Reply) -> RedisError:
    message = str(reply)
    head = message.split(" ", 1)[0]
    if head == "NOSCRIPT":
        return NoScriptError(message)
    if head in {"MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"}:
        return RedirectError(message)
    if head in {"NOAUTH", "WRONGPASS", "NOPERM"}:
        return AuthenticationError(message)
    return ResponseError(message)


class Credentials(Protocol):
    """What an Entra credential provider offers the channel (`app.state.redis_auth`)."""

    async def get_credentials_async(self) -> tuple[str, str]: ...


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: the same settings redis-py's connections get (`app.state.connect`)."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    credentials: Credentials | None = None
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None
    connect_timeout: float = 2.0
    command_timeout: float = 5.0


class _Connection(asyncio.Protocol):
    def __init__(self, on_lost: Callable[[_Connection], None]) -> None:
        self.reader = hiredis.Reader(encoding="utf-8", replyError=_Reply)
        self.pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.generation = 0
        self._on_lost = on_lost
        self._timer: asyncio.TimerHandle | None = None
        self._timeout = 5.0
        self._outgoing: list[bytes] = []
        self.writes = 0

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        self.open = True

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.pending
        while (reply := self.reader.gets()) is not False:
            if not pending:
                self.fail(ConnectionError("Redis sent a reply nobody asked for"))
                return
            future, _sent = pending.popleft()
            if not future.done():
                if isinstance(reply, _Reply):
                    future.set_exception(_error(reply))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"Redis closed the connection{f': {exc}' if exc else ''}"))

    # -- ours ------------------------------------------------------------------------------------

    def send(self, data: bytes, replies: int, timeout: float) -> list[asyncio.Future[Any]]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures = [loop.create_future() for _ in range(replies)]
        self.pending.extend((future, now) for future in futures)
        # Written at the end of this loop step with whatever else callers sent in it: concurrent turns
        # share one write (a loopback write costs tens of microseconds of the sender's CPU).
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(data)
        if self._timer is None:
            self._timeout = timeout
            self._timer = loop.call_at(loop.time() + timeout, self._check)
        return futures

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self.open and self.transport is not None:
            self.transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))
            self.writes += 1

    def _check(self) -> None:
        self._timer = None
        if not self.pending:
            return
        waited = time.monotonic() - self.pending[0][1]
        if waited >= self._timeout:
            self.fail(RedisTimeoutError(f"Redis did not answer within {self._timeout:g} s"))
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + self._timeout - waited, self._check)

    def fail(self, error: Exception) -> None:
        """Close the connection; every command still waiting on it gets `error`."""
        self._outgoing.clear()
        if self.open:
            self.open = False
            self._on_lost(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        while self.pending:
            future, _sent = self.pending.popleft()
            if not future.done():
                future.set_exception(error)
                # Retrieved or not: a caller that gave up must not log "exception never retrieved".
                future.exception()


def _retrieved(task: asyncio.Task[Any]) -> None:
    # Every waiter may have given up: the failure is theirs to report, not the loop's.
    if not task.cancelled():
        task.exception()


def _pack_one(command: Command) -> bytes:
    # hiredis's stub types its argument as a 1-tuple; it takes a tuple of any length.
    packed: bytes = hiredis.pack_command(tuple(command))  # type: ignore[arg-type]
    return packed


def _pack(commands: Sequence[Command]) -> bytes:
    return b"".join(_pack_one(command) for command in commands)


class Channel:
    """Commands to one Redis server over one connection (opened on first use, reopened after a drop)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False
        self.connects = 0

    async def execute(self, *command: str | int | float | bytes) -> Any:
        conn = self._conn if self._conn is not None and self._conn.open else await self._connect()
        (future,) = conn.send(_pack_one(command), 1, self.endpoint.command_timeout)
        return await future

    async def batch(self, commands: Sequence[Command]) -> list[Any]:
        """Several commands in one write (a pipeline without MULTI); the first error reply is raised."""
        conn = self._conn if self._conn is not None and self._conn.open else await self._connect()
        futures = conn.send(_pack(commands), len(commands), self.endpoint.command_timeout)
        results = [await future for future in futures]
        return results

    async def transaction(self, commands: Sequence[Command]) -> list[Any]:
        """MULTI, the commands, EXEC in one write: their replies, or the first error among them raised."""
        replies = await self.batch([("MULTI",), *commands, ("EXEC",)])
        results: list[Any] = replies[-1]
        for reply in results:
            if isinstance(reply, _Reply):
                raise _error(reply)
        return results

    def reauthenticate(self, user: str, token: str) -> Awaitable[Any] | None:
        """Move the open connection to a new token: AUTH goes out in order with every other command."""
        conn = self._conn
        if conn is None or not conn.open:
            return None  # the next connection authenticates with the provider's newest token
        (future,) = conn.send(_pack_one(("AUTH", user, token)), 1, self.endpoint.command_timeout)
        return future

    async def _connect(self) -> _Connection:
        if self._closed:
            raise ConnectionError("the Redis channel is closed")
        task = self._connecting
        if task is None or task.done():
            task = self._connecting = asyncio.get_running_loop().create_task(self._open())
            task.add_done_callback(_retrieved)
        # Shielded: one caller giving up must not abort the connection others wait for.
        return await asyncio.shield(task)

    async def _open(self) -> _Connection:
        e = self.endpoint
        loop = asyncio.get_running_loop()
        conn = _Connection(self._lost)
        try:
            async with asyncio.timeout(e.connect_timeout):
                if e.path is not None:
                    await loop.create_unix_connection(lambda: conn, e.path)
                else:
                    hostname = (e.server_hostname or e.host) if e.tls is not None else None
                    await loop.create_connection(lambda: conn, e.host, e.port, ssl=e.tls, server_hostname=hostname)
        except TimeoutError as exc:
            raise Unreachable(f"could not connect to Redis within {e.connect_timeout:g} s") from exc
        except OSError as exc:
            raise Unreachable(f"could not connect to Redis: {exc}") from exc
        try:
            await self._handshake(conn)
        except AuthenticationError:
            conn.fail(ConnectionError("the Redis handshake failed"))
            raise
        except (ConnectionError, RedisTimeoutError) as exc:
            conn.fail(ConnectionError("the Redis handshake failed"))
            raise Unreachable(f"the Redis handshake failed: {exc}") from exc
        except BaseException:
            conn.fail(ConnectionError("the Redis handshake failed"))
            raise
        self.connects += 1
        self._conn = conn
        return conn

    async def _handshake(self, conn: _Connection) -> None:
        e = self.endpoint
        hello: list[Command] = []
        if e.credentials is not None:
            user, token = await e.credentials.get_credentials_async()
            hello.append(("AUTH", user, token))
        elif e.password is not None:
            hello.append(("AUTH", e.username, e.password) if e.username else ("AUTH", e.password))
        if e.db:
            hello.append(("SELECT", e.db))
        if not hello:
            return
        futures = conn.send(_pack(hello), len(hello), e.command_timeout)
        for future in futures:
            try:
                await future
            except ResponseError as exc:
                if isinstance(exc, AuthenticationError) or "AUTH" in str(exc).upper():
                    raise AuthenticationError(str(exc)) from exc
                raise

    def _lost(self, conn: _Connection) -> None:
        if self._conn is conn:
            self._conn = None

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._conn is not None:
            self._conn.fail(ConnectionError("the Redis channel is closed"))
            self._conn = None
