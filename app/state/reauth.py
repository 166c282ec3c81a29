"""Re-authentication of a Redis client's open connections with each new Entra token, without racing commands.

Why not redis-py's own (8.1; a `StreamingCredentialProvider` switches it on, through
`RegisterReAuthForPooledConnections` and `RegisterReAuthForAsyncClusterNodes` in redis/event.py):
- `ConnectionPool.re_auth_callback` sends AUTH to the idle connections one by one, holding the
  pool's lock, while each stays in the free list. `BlockingConnectionPool.get_connection` takes only
  its condition, not that lock, so a command can be handed a connection whose AUTH reply is still
  unread (it reads the reply as its own, or the pool finds data waiting and replaces the
  connection); any release meanwhile waits for the lock while holding the condition, which stalls
  every other command of the worker for the whole walk.
- A connection busy when the token arrives sends its AUTH from `release`, after it is back in the
  free list; a failure there is raised from the command that released it.
- On a cluster, `ClusterNode.re_auth_callback` re-authenticates the free connections of the
  discovered nodes only: one busy when the token arrives, and the startup node's connection kept
  from discovery, hold the old token until it lapses (Azure then closes them).

Here a connection is re-authenticated only by whoever holds it, so no command can interleave:
- its own next command sends AUTH first (`ReauthConnection`, the class of the pool's connections,
  standalone or on every cluster node, see `app.state.connect`): a connection that is always busy
  moves on at once;
- an idle one is taken out of the free list synchronously (nothing else runs between the check and
  the take), sent AUTH, and given back. Passes repeat, quickly at first, until every open connection
  holds the new token, so one busy during a pass is caught as soon as it is free again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any, Protocol

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import AuthenticationError, RedisError

from app.state.redis_auth import Credential, EntraCredentialProvider

log = logging.getLogger("agent_bridge.store")

FIRST_RETRY_S = 0.005
"""The wait before the second pass; it doubles up to `MAX_RETRY_S`. A command holds a connection
for a fraction of a millisecond, so a connection busy in the first pass is free by the second."""
MAX_RETRY_S = 0.25


class _Pool(Protocol):
    def free(self) -> list[Any]: ...
    def all(self) -> list[Any]: ...
    def take(self, conn: Any) -> bool: ...
    async def give_back(self, conn: Any) -> None: ...


class _StandalonePool:
    """A redis-py `ConnectionPool` (or `BlockingConnectionPool`); the lists are the ones its own
    `re_auth_callback` walks."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def free(self) -> list[Any]:
        return list(self.pool._available_connections)

    def all(self) -> list[Any]:
        return [*self.pool._available_connections, *self.pool._in_use_connections]

    def take(self, conn: Any) -> bool:
        try:
            self.pool._available_connections.remove(conn)
        except ValueError:
            return False  # a command took it since the snapshot
        self.pool._in_use_connections.add(conn)  # counted as in use: the pool stays within its bound
        return True

    async def give_back(self, conn: Any) -> None:
        await self.pool.release(conn)  # also wakes a command waiting for a free connection


class _ClusterNodePool:
    """A redis-py `ClusterNode`: `_free` is its free list (its own `re_auth_callback` pops from it)."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def free(self) -> list[Any]:
        return list(self.node._free)

    def all(self) -> list[Any]:
        return list(self.node._connections)

    def take(self, conn: Any) -> bool:
        try:
            self.node._free.remove(conn)
        except ValueError:
            return False
        return True

    async def give_back(self, conn: Any) -> None:
        self.node.release(conn)


class Reauthenticator:
    """Subscribed to an `EntraCredentialProvider`: moves every open connection of `client` to each new token."""

    def __init__(self, client: Any, provider: EntraCredentialProvider) -> None:
        self.client = client
        self.provider = provider
        self._deadline = 0.0
        self._task: asyncio.Task[None] | None = None
        self.auths = 0
        self.refused = 0

    def _pools(self) -> Iterator[_Pool]:
        if isinstance(self.client, RedisCluster):
            # The startup nodes too: redis-py keeps their objects (and their connections, open since
            # discovery) apart from the discovered nodes, and uses them again to rediscover.
            manager = self.client.nodes_manager
            nodes = {id(node): node for node in [*manager.startup_nodes.values(), *self.client.get_nodes()]}
            for node in nodes.values():
                yield _ClusterNodePool(node)
        else:
            yield _StandalonePool(self.client.connection_pool)

    def _behind(self, conn: Any, generation: int) -> bool:
        # A connection never seen here may have opened with the previous token: it is re-sent AUTH
        # (one spare AUTH for one that opened with this token already).
        return bool(conn.is_connected) and self.provider.held(conn) < generation

    def behind(self, generation: int) -> int:
        """How many open connections do not hold the `generation` token yet."""
        return sum(self._behind(conn, generation) for pool in self._pools() for conn in pool.all())

    async def __call__(self, credential: Credential, deadline: float) -> None:
        self._deadline = deadline
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._catch_up(), name="redis-reauth")

    async def _catch_up(self) -> None:
        delay = FIRST_RETRY_S
        while (credential := self.provider.current) is not None:
            await self._pass(credential)
            left = self.behind(credential.generation)
            if left == 0:
                return
            if time.time() >= self._deadline:
                log.warning("redis: %d connections did not re-authenticate before the old token expired", left)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)

    async def _pass(self, credential: Credential) -> None:
        jobs = []
        for pool in self._pools():
            for conn in pool.free():
                if not self._behind(conn, credential.generation) or not pool.take(conn):
                    continue
                if conn.should_reconnect():
                    # redis-py marked it to be recycled (a cluster does so to every connection of a
                    # node at a topology refresh); giving it back closes it, as its next use would.
                    await pool.give_back(conn)
                    continue
                jobs.append(self._reauth(pool, conn, credential))
        if jobs:
            await asyncio.gather(*jobs)

    async def _reauth(self, pool: _Pool, conn: Any, credential: Credential) -> None:
        try:
            await _authenticate(conn, credential)
        except AuthenticationError as exc:
            # The connection keeps the session of its earlier AUTH (redis-py would have dropped it).
            self.refused += 1
            self.provider.mark(conn, credential.generation)  # not again before the next token
            log.warning("redis: the new Entra token was refused on re-authentication: %s", type(exc).__name__)
        except (RedisError, OSError, TimeoutError) as exc:
            log.info("redis: a connection failed while re-authenticating (%s); it reconnects", type(exc).__name__)
        else:
            self.auths += 1
            self.provider.mark(conn, credential.generation)
        finally:
            await pool.give_back(conn)

    async def aclose(self) -> None:
        """Before the client closes: a pass cut short gives its connections back (or drops them) first."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class _ReauthOnUse:
    """A connection that moves itself to the provider's newest token before its next command.

    The AUTH goes out ahead of the command on the same connection, by the task that holds it, so
    nothing can read the AUTH's reply in its place. A connection opening records the generation
    current before its handshake (it authenticated with that token or a newer one)."""

    credential_provider: Any
    is_connected: bool
    _entra_busy = False

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        provider = self.credential_provider
        before = provider.current if isinstance(provider, EntraCredentialProvider) else None
        self._entra_busy = True  # the handshake sends its own AUTH
        try:
            await super().on_connect_check_health(check_health=check_health)  # type: ignore[misc]
        finally:
            self._entra_busy = False
        if before is not None:
            provider.mark(self, before.generation)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        provider = self.credential_provider
        if not self._entra_busy and self.is_connected and isinstance(provider, EntraCredentialProvider):
            credential = provider.current
            if credential is not None and provider.held(self) < credential.generation:
                try:
                    await _authenticate(self, credential)
                except AuthenticationError as exc:
                    # The connection keeps the session of its earlier AUTH; the command goes ahead.
                    log.warning("redis: the new Entra token was refused on re-authentication: %s", type(exc).__name__)
                provider.mark(self, credential.generation)  # refused or not: not again before the next token
        await super().send_packed_command(command, check_health)  # type: ignore[misc]


async def _authenticate(conn: Any, credential: Credential) -> None:
    """AUTH on a connection the caller holds; a refusal raises AuthenticationError and keeps the
    connection (and the session of its earlier AUTH)."""
    busy = isinstance(conn, _ReauthOnUse)
    if busy:
        conn._entra_busy = True  # the AUTH must not trigger another one ahead of itself
    try:
        await conn.send_command("AUTH", credential.user, credential.token, check_health=False)
        await conn.read_response(disconnect_on_error=False)
    except AuthenticationError:
        raise
    except BaseException:
        # A broken socket, a timeout or a cancellation with the reply unread: not reusable. It
        # opens again, with the newest token, when a command next needs it.
        await conn.disconnect()
        raise
    finally:
        if busy:
            conn._entra_busy = False


class ReauthConnection(_ReauthOnUse, Connection):
    pass


class ReauthSSLConnection(_ReauthOnUse, SSLConnection):
    pass


def reauth_connection_class(base: type[Any]) -> type[Any]:
    """The re-authenticating class for a pool whose connections are `base` (TCP or TLS)."""
    if issubclass(base, SSLConnection):
        return ReauthSSLConnection
    if issubclass(base, Connection):
        return ReauthConnection
    return base  # a Unix socket: no Entra there
