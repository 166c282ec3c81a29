"""The Redis client from `REDIS_URL` and `redis:` settings: standalone, cluster, TLS, Entra; or embedded when unset.

- `redis://` / `rediss://` (TLS): one server (or a cluster's proxy endpoint, as Azure Managed
  Redis's Enterprise policy offers).
- `redis+cluster://` / `rediss+cluster://`: a Redis Cluster (Azure Managed Redis's OSS cluster
  policy, Azure Cache for Redis clustered); any node's address, the client finds the rest.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from app.errors import ConfigError
from app.settings import RedisSettings
from app.state.commands import ChannelCommands, ClientCommands, ClusterCommands, Commands
from app.state.reauth import Recycler
from app.state.redis_auth import Credential, EntraCredentialProvider, entra_provider
from app.state.resp import Endpoint

log = logging.getLogger("agent_bridge.store")

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

_SCHEMES = {"redis", "rediss", "redis+cluster", "rediss+cluster", "unix"}


@dataclass
class Connection:
    """A client, the fast path a turn's commands take (`commands`), and what both own besides their
    connections (an Entra credential with its refresh task, and the recycler that moves redis-py's
    connections to each new token)."""

    client: Any
    commands: Commands
    providers: list[EntraCredentialProvider] = field(default_factory=list)
    reauth: Recycler | None = None

    async def aclose(self) -> None:
        await self.commands.aclose()
        await self.client.aclose()
        for provider in self.providers:
            await provider.aclose()


def _connection(client: Any, commands: Commands, provider: EntraCredentialProvider | None) -> Connection:
    if provider is None:
        return Connection(client, commands)
    reauth = Recycler(client)
    provider.subscribe(reauth)

    async def moved(credential: Credential, _deadline: float) -> None:
        # The fast path's connections take the new token in order with their other commands.
        try:
            await commands.reauthenticate(credential.user, credential.token)
        except (RedisError, OSError, TimeoutError) as exc:
            # The channel's next connection opens with the new token; this one is closed by Redis.
            log.warning("redis: the fast path did not take the new Entra token: %s", type(exc).__name__)

    provider.subscribe(moved)
    return Connection(client, commands, [provider], reauth)


def is_cluster_url(url: str) -> bool:
    return urlparse(url).scheme.endswith("+cluster")


def _options(url: str, settings: RedisSettings) -> tuple[dict[str, Any], EntraCredentialProvider | None]:
    scheme = urlparse(url).scheme
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"REDIS_URL: unknown scheme {scheme!r}: use redis://, rediss:// (TLS), "
            "redis+cluster:// or rediss+cluster:// (a Redis Cluster)"
        )
    tls = settings.tls
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": settings.command_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "socket_keepalive": True,
    }
    if scheme.startswith("rediss"):
        options |= {
            "ssl_cert_reqs": "required" if tls.verify else "none",
            "ssl_check_hostname": tls.verify and tls.check_hostname,
        }
        if tls.ca_file:
            options["ssl_ca_certs"] = tls.ca_file
        if tls.cert_file:
            options |= {"ssl_certfile": tls.cert_file, "ssl_keyfile": tls.key_file}
    elif tls.ca_file or tls.cert_file or not tls.verify or not tls.check_hostname:
        raise ConfigError("redis.tls: TLS options need a rediss:// (or rediss+cluster://) REDIS_URL")
    auth = settings.auth
    provider: EntraCredentialProvider | None = None
    if auth.type == "entra":
        provider = entra_provider(auth.client_id, auth.scope, auth.username, auth.refresh_margin)
        options["credential_provider"] = provider
    elif auth.access_key:
        options["password"] = auth.access_key
        if auth.username:
            options["username"] = auth.username
    return options, provider


def _tls(options: dict[str, Any]) -> ssl.SSLContext:
    """The TLS context redis-py builds from the same options (`ssl_*`), for the fast path."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    context.check_hostname = bool(options.get("ssl_check_hostname"))
    context.verify_mode = ssl.CERT_REQUIRED if options.get("ssl_cert_reqs") == "required" else ssl.CERT_NONE
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    return context


def _endpoint(url: str, options: dict[str, Any], provider: EntraCredentialProvider | None) -> Endpoint:
    parsed = parse_url(url.replace("+cluster", "", 1))
    return Endpoint(
        host=parsed.get("host") or "127.0.0.1",
        port=int(parsed.get("port") or 6379),
        path=parsed.get("path"),
        db=int(parsed.get("db") or 0),
        username=options.get("username", parsed.get("username")),
        password=options.get("password", parsed.get("password")),
        credentials=provider,
        tls=_tls(options) if urlparse(url).scheme.startswith("rediss") else None,
        connect_timeout=options["socket_connect_timeout"],
        command_timeout=options["socket_timeout"],
        health_interval=options["health_check_interval"],
    )


def connect(url: str | None, settings: RedisSettings | None = None) -> Any:
    """The client (`Redis` or `RedisCluster`); `build()` also returns what must be closed with it."""
    return build(url, settings).client


def build(url: str | None, settings: RedisSettings | None = None) -> Connection:
    """Short timeouts: a dead Redis must fail a request fast (503), not hang it.

    One immediate retry on a dropped connection (a Redis restart leaves every pooled connection
    dead: the retry reconnects instead of failing one request per connection). Timeouts are not
    retried, so a hung Redis costs a request at most the command timeout; a refused connection
    fails in milliseconds.
    """
    if url is None:
        from fakeredis import FakeAsyncRedis

        embedded = FakeAsyncRedis(decode_responses=True)
        return Connection(embedded, ClientCommands(embedded))
    settings = settings or RedisSettings()
    options, provider = _options(url, settings)
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    if is_cluster_url(url):
        cluster = RedisCluster.from_url(
            url.replace("+cluster", "", 1), max_connections=settings.max_connections, retry=retry, **options
        )
        return _connection(cluster, ClusterCommands(cluster, _endpoint(url, options, provider)), provider)
    # A blocking pool: redis-py's default pool raises MaxConnectionsError at once when a burst of
    # turns wants more than 100 connections (seen as 503s with 1,000 streams opened together).
    pool = BlockingConnectionPool.from_url(
        url, max_connections=settings.max_connections, timeout=settings.command_timeout, retry=retry, **options
    )
    client = Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return _connection(client, ChannelCommands(_endpoint(url, options, provider)), provider)


async def check_mode(client: Any, url: str | None) -> None:
    """Stop start-up when a standalone client points at a cluster node (every multi-key command
    would fail with MOVED or CROSSSLOT); a Redis that does not answer yet is left to /readyz."""
    if url is None or isinstance(client, RedisCluster):
        return
    try:
        info = await client.info("cluster")
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("redis: could not check the server's mode at start-up: %s", type(exc).__name__)
        return
    if int(info.get("cluster_enabled", 0)) == 1:
        parsed = urlparse(url)
        scheme = "rediss+cluster" if parsed.scheme == "rediss" else "redis+cluster"
        raise ConfigError(
            f"REDIS_URL points at a Redis Cluster node, but {parsed.scheme}:// builds a client for one server: "
            f"write {scheme}://{parsed.hostname}:{parsed.port or 6379} instead"
        )
