"""The turn's fast path to one Redis server: single commands over one multiplexed connection, parsed by hiredis.

Why it exists beside redis-py: a turn sends three commands (find its conversation, open its thread,
close it: `app.state.commands`), and through redis-py they cost about 0.1 ms of CPU each, a third of
the bridge's CPU budget per turn (measured: docs/performance-redis.md). Here they cost a tenth of
that. It carries single commands only, never a batch, so a command that fails has run entirely or
not at all; everything else goes through redis-py.

One connection carries every caller's commands: Redis answers in order, so each command appends its
caller's future to one queue and each reply resolves the oldest. What callers send in one event-loop
step leaves in one write at its end (auto-pipelining, as ioredis does). What it keeps of redis-py's
resilience, each point tested on a server and a cluster (tests/integration/test_turn_channel.py):
- a dropped connection fails the commands written to it (they may have run) and sends the ones
  never written on the next connection;
- a reply slower than the command timeout fails its caller only: the connection is retired (no new
  command goes to it, as redis-py disconnects a connection whose read timed out), the commands
  already on it keep their own deadlines, and it closes once none of them is waited for;
- a connection idle for `health_interval` sends PING, and one that does not answer is retired the
  same way; TCP keepalive is on;
- a reply that is not UTF-8 fails its caller only (hiredis consumes it whole);
- a token rotated while a connection authenticates is sent before the connection carries anything.

Errors are redis-py's exception classes, so the store translates both clients' failures alike.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

import hiredis
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    DataError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

Arg = str | int | float | bytes


class _Reply(Exception):
    """An error reply as hiredis hands it over (an instance, returned in place of the value)."""


class Unreachable(ConnectionError):
    """The connection could not be opened (or authenticated): nothing of the command reached Redis."""


class RedirectError(ResponseError):
    """MOVED, ASK, TRYAGAIN or CLUSTERDOWN: the key's slot is served elsewhere (or not yet); the command did not run."""


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


class Token(Protocol):
    @property
    def user(self) -> str: ...

    @property
    def token(self) -> str: ...


class Credentials(Protocol):
    """What an Entra credential provider offers the channel (`app.state.redis_auth`)."""

    async def get_credentials_async(self) -> tuple[str, str]: ...

    @property
    def current(self) -> Token | None: ...


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
    health_interval: float = 10.0


class _Pending:
    __slots__ = ("future", "payload", "sent")

    def __init__(self, future: asyncio.Future[Any], payload: bytes, sent: float) -> None:
        self.future = future
        self.payload = payload
        self.sent = sent


def _ignore(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # nobody waits for an internal PING's answer


class _Connection(asyncio.Protocol):
    def __init__(self, channel: Channel, timeout: float, health_interval: float) -> None:
        self.reader = hiredis.Reader(encoding="utf-8", replyError=_Reply)
        self.pending: collections.deque[_Pending] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.retired = False
        self.carrying = False  # past the handshake: commands never written to it may go to the next one
        self._channel = channel
        self._timeout = timeout
        self._health_interval = health_interval
        self._timer: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._unwritten = 0  # the newest entries of `pending`, not yet handed to the transport
        self._active = time.monotonic()
        self.writes = 0

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        self.open = True
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        self._active = time.monotonic()
        pending = self.pending
        while True:
            try:
                reply = self.reader.gets()
            except UnicodeDecodeError as exc:
                # hiredis consumed the reply whole: the next one still lines up with the next caller.
                reply = DataError(f"Redis sent a reply that is not UTF-8: {exc.reason}")
            if reply is False:
                break
            if not pending:
                self.fail(ConnectionError("Redis sent a reply nobody asked for"))
                return
            future = pending.popleft().future
            if not future.done():
                if isinstance(reply, _Reply):
                    future.set_exception(_error(reply))
                elif isinstance(reply, DataError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        if self.retired and self._abandoned():
            self.fail(ConnectionError("the retired connection closed"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"Redis closed the connection{f': {exc}' if exc else ''}"))

    # -- ours ------------------------------------------------------------------------------------

    def send(self, payload: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.enqueue([_Pending(future, payload, time.monotonic())])
        return future

    def enqueue(self, entries: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        # Written at the end of this loop step with whatever else callers sent in it: concurrent turns
        # share one write (a loopback write costs tens of microseconds of the sender's CPU).
        if self._unwritten == 0:
            loop.call_soon(self._flush)
        self.pending.extend(entries)
        self._unwritten += len(entries)
        if self._timer is None:
            self._timer = loop.call_at(loop.time() + self._timeout, self._check)

    def _flush(self) -> None:
        count, self._unwritten = self._unwritten, 0
        if count == 0 or not self.open or self.transport is None or self.transport.is_closing():
            self._unwritten = count  # still unwritten: `fail` sends them on the next connection
            return
        entries = list(self.pending)[-count:]
        self.transport.write(b"".join(entry.payload for entry in entries))
        self._active = time.monotonic()
        self.writes += 1

    def _abandoned(self) -> bool:
        return all(entry.future.done() for entry in self.pending)

    def _check(self) -> None:
        """Each waiting command gets at most the command timeout; the first one late retires the connection."""
        self._timer = None
        if not self.open:
            return
        now = time.monotonic()
        next_due: float | None = None
        for entry in self.pending:
            if entry.future.done():
                continue  # its caller gave up or timed out; its reply will still come and be dropped
            waited = now - entry.sent
            if waited < self._timeout:
                next_due = self._timeout - waited
                break
            entry.future.set_exception(RedisTimeoutError(f"Redis did not answer within {self._timeout:g} s"))
            entry.future.exception()  # retrieved: a caller that gave up logs nothing
            self.retire()
        if self.retired and self._abandoned():
            self.fail(ConnectionError("the retired connection closed"))
            return
        if next_due is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + next_due, self._check)

    def retire(self) -> None:
        """No new command comes here; what is on it keeps its own deadline."""
        if not self.retired:
            self.retired = True
            self._channel._lost(self, [])

    def _arm_idle(self) -> None:
        if self._health_interval > 0:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_at(loop.time() + self._health_interval, self._health)

    def _health(self) -> None:
        self._idle = None
        if not self.open or self.retired:
            return
        if time.monotonic() - self._active >= self._health_interval and not self.pending:
            # A connection the network dropped silently answers nothing: its PING times out (`_check`).
            self.send(b"*1\r\n$4\r\nPING\r\n").add_done_callback(_ignore)
        self._arm_idle()

    def fail(self, error: Exception) -> None:
        """Close the connection: commands written to it get `error`; those never written go to the next one."""
        unwritten: list[_Pending] = []
        if self._unwritten and self.carrying:
            for _ in range(self._unwritten):
                unwritten.append(self.pending.pop())
            unwritten.reverse()
            self._unwritten = 0
        if self.open:
            self.open = False
            self._channel._lost(self, unwritten)
        else:
            self._channel._resend(unwritten)
        for handle in (self._timer, self._idle):
            if handle is not None:
                handle.cancel()
        self._timer = self._idle = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        while self.pending:
            future = self.pending.popleft().future
            if not future.done():
                future.set_exception(error)
                # Retrieved or not: a caller that gave up must not log "exception never retrieved".
                future.exception()


def _retrieved(task: asyncio.Task[Any]) -> None:
    # Every waiter may have given up: the failure is theirs to report, not the loop's.
    if not task.cancelled():
        task.exception()


def pack(*command: Arg) -> bytes:
    # hiredis's stub types its argument as a 1-tuple; it takes a tuple of any length.
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed


class Channel:
    """Commands to one Redis server over one connection (opened on first use, replaced after a drop)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False
        self._resends: set[asyncio.Task[None]] = set()
        self.connects = 0

    def _ready(self) -> _Connection | None:
        conn = self._conn
        return conn if conn is not None and conn.open and not conn.retired else None

    async def execute(self, *command: Arg) -> Any:
        conn = self._ready() or await self._connect()
        return await conn.send(pack(*command))

    def reauthenticate(self, user: str, token: str) -> Awaitable[Any] | None:
        """Move the open connection to a new token: AUTH goes out in order with every other command."""
        conn = self._ready()
        if conn is None:
            return None  # the next connection authenticates with the provider's newest token
        return conn.send(pack("AUTH", user, token))

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
        conn = _Connection(self, e.command_timeout, e.health_interval)
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
        conn.carrying = True
        self._conn = conn
        return conn

    async def _handshake(self, conn: _Connection) -> None:
        e = self.endpoint
        hello: list[tuple[Arg, ...]] = []
        token = None
        if e.credentials is not None:
            user, token = await e.credentials.get_credentials_async()
            hello.append(("AUTH", user, token))
        elif e.password is not None:
            hello.append(("AUTH", e.username, e.password) if e.username else ("AUTH", e.password))
        if e.db:
            hello.append(("SELECT", e.db))
        for command in hello:
            await self._answer(conn, command)
        while e.credentials is not None and (newest := e.credentials.current) is not None and newest.token != token:
            # The token rotated while this connection authenticated: the rotation's AUTH went to the
            # connections open then, not to this one, which takes it before it carries anything.
            token = newest.token
            await self._answer(conn, ("AUTH", newest.user, newest.token))

    @staticmethod
    async def _answer(conn: _Connection, command: tuple[Arg, ...]) -> Any:
        try:
            return await conn.send(pack(*command))
        except ResponseError as exc:
            if isinstance(exc, AuthenticationError) or "AUTH" in str(exc).upper():
                raise AuthenticationError(str(exc)) from exc
            raise

    def _lost(self, conn: _Connection, unwritten: list[_Pending]) -> None:
        if self._conn is conn:
            self._conn = None
        self._resend(unwritten)

    def _resend(self, entries: list[_Pending]) -> None:
        """Commands that never left a dropped connection go out on the next one."""
        entries = [entry for entry in entries if not entry.future.done()]
        if not entries:
            return

        async def again() -> None:
            try:
                conn = self._ready() or await self._connect()
            except (RedisError, OSError) as exc:
                for entry in entries:
                    if not entry.future.done():
                        entry.future.set_exception(exc if isinstance(exc, Unreachable) else Unreachable(str(exc)))
                        entry.future.exception()
                return
            now = time.monotonic()
            for entry in entries:
                entry.sent = now
            conn.enqueue(entries)

        task = asyncio.get_running_loop().create_task(again())
        self._resends.add(task)
        task.add_done_callback(self._resends.discard)

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._conn is not None:
            self._conn.fail(ConnectionError("the Redis channel is closed"))
            self._conn = None
