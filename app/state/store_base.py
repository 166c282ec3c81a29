"""What every store method shares: the client (standalone or cluster), its gate, and error translation.

Every Redis failure (connection, timeout, a cluster's MOVED storm or CROSSSLOT, an exhausted
cluster node pool) leaves the store as `StoreUnavailableError` (503) with a generic message; what
Redis said (host, port, TLS text) goes to the log only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from app.errors import StoreUnavailableError
from app.state.commands import ClientCommands, Commands
from app.state.keys import Keys

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("agent_bridge.store")

UNAVAILABLE = "The state store is unavailable; try again shortly."

CLUSTER_GATE = 128
"""In-flight store calls per worker on a cluster client. redis-py's cluster node pools raise at
their bound instead of waiting for a free connection, so the store queues calls here instead."""
GATE_WAIT_S = 5.0


def translated(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        owner: Any = args[0]
        store = owner if isinstance(owner, StoreBase) else owner.store  # a store, or a helper holding one
        assert isinstance(store, StoreBase)
        gate = store.gate
        try:
            if gate is None:
                return await method(*args, **kwargs)
            async with asyncio.timeout(GATE_WAIT_S):
                await gate.acquire()
            try:
                return await method(*args, **kwargs)
            finally:
                gate.release()
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            if store.on_error is not None:
                store.on_error()
            log.warning("store: %s failed: %s: %s", method.__name__, type(exc).__name__, exc)
            raise StoreUnavailableError(UNAVAILABLE) from exc

    return wrapper


class StoreBase:
    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        prefix: str,
        on_error: Callable[[], None] | None,
        commands: Commands | None = None,
    ) -> None:
        self.on_error = on_error
        # With decode_responses=True every reply is a str, which redis-py's stubs cannot express.
        self.redis: Any = redis
        # A turn's three commands (`app.state.commands`): the fast path where `connect` built one.
        self.commands: Commands = commands or ClientCommands(redis)
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.cluster = isinstance(redis, RedisCluster)
        self.gate: asyncio.Semaphore | None = asyncio.Semaphore(CLUSTER_GATE) if self.cluster else None

    def key(self, *parts: str) -> str:
        return self.keys.raw(*parts)

    async def _pipelined(self, commands: Sequence[Sequence[Any]], *, transaction: bool) -> list[Any]:
        """Several commands of one slot in one round trip, through redis-py (the fast path carries single
        commands only, so that a redirect or a drop never leaves part of a batch run)."""
        async with self.redis.pipeline(transaction=transaction) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            results: list[Any] = await pipe.execute()
        return results

    async def _mget(self, keys: list[str]) -> list[str | None]:
        """One MGET on a standalone Redis; split per slot (in parallel per node) on a cluster."""
        if not keys:
            return []
        if self.cluster:
            values: list[str | None] = await self.redis.mget_nonatomic(keys)
        else:
            values = await self.redis.mget(keys)
        return values
