"""The Redis client: a real server from `REDIS_URL`, or an embedded in-process one when unset."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

CONNECT_TIMEOUT_S = 2.0
"""A Redis that does not accept the connection (host down, packets dropped) fails within this."""
COMMAND_TIMEOUT_S = 5.0
"""A Redis that accepted but does not answer (hung, overloaded) fails within this."""
HEALTH_CHECK_INTERVAL_S = 10
"""A pooled connection idle for longer is PINGed before use, so a dead one is replaced, not used."""
MAX_CONNECTIONS = 128
"""Connections per worker. A command takes a fraction of a millisecond, so this serves thousands of
concurrent turns; past it, commands queue for a free connection instead of failing."""
POOL_TIMEOUT_S = COMMAND_TIMEOUT_S
"""The longest a command waits for a free connection before the request gets 503."""


def connect(url: str | None) -> Redis:
    """Short timeouts: a dead Redis must fail a request fast (503), not hang it.

    One immediate retry on a dropped connection (a Redis restart leaves every pooled connection
    dead: the retry reconnects instead of failing one request per connection). Timeouts are not
    retried, so a hung Redis costs a request at most `COMMAND_TIMEOUT_S`; a refused connection
    fails in milliseconds.
    """
    if url is None:
        from fakeredis import FakeAsyncRedis

        embedded: Redis = FakeAsyncRedis(decode_responses=True)
        return embedded
    # A blocking pool: redis-py's default pool raises MaxConnectionsError at once when a burst of
    # turns wants more than 100 connections (seen as 503s with 1,000 streams opened together).
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_TIMEOUT_S,
        decode_responses=True,
        socket_timeout=COMMAND_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    client: Redis = Redis.from_pool(pool)
    return client
