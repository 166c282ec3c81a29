"""The Redis client: a real server from `REDIS_URL`, or an embedded in-process one when unset."""

from __future__ import annotations

from redis.asyncio import Redis


def connect(url: str | None) -> Redis:
    """Short timeouts: a dead Redis must fail a request fast (503), not hang it."""
    if url is None:
        from fakeredis import FakeAsyncRedis

        embedded: Redis = FakeAsyncRedis(decode_responses=True)
        return embedded
    client: Redis = Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=5.0,
        socket_connect_timeout=2.0,
        health_check_interval=30,
        retry_on_timeout=False,
    )
    return client
