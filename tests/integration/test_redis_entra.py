"""Entra ID for Redis, proven against a local stand-in: tokens that live 2-3 s, a Redis ACL user whose
passwords are exactly the unexpired tokens, and Azure's rule that a connection whose token expires
without a new AUTH is closed (`tests.support.token_issuer`).

Through the bridge's own path (`app.state.connect.build` and `RedisStore`), over several token
lifetimes, with a pool of several connections, some busy and some idle: at each new token every
connection is recycled (redis-py's maintenance hooks: a busy one when its command gives it back, an
idle one at once) and reopens with the new token, and the turn's fast path sends AUTH in order with
its commands, so every connection open when a token expires authenticated with its successor, and no
command fails; a token revoked after the connections moved
on costs nothing; a cluster client does the same on every node.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from app.settings import RedisAuthSettings, RedisSettings
from app.state.commands import ClusterCommands
from app.state.connect import Connection, build
from app.state.store import RedisStore, ThreadRecord
from tests.support.identity import point_managed_identity
from tests.support.redis_cluster import RedisCluster3
from tests.support.servers import free_port
from tests.support.token_issuer import TokenIssuer

LIFETIME_S = 2
"""Tokens expire at the next whole second after this (2-3 s): `expires_on` is whole epoch seconds."""
MARGIN_S = 1.0
"""The bridge fetches the next token this long before the current one expires."""
EXPIRIES = 3
"""Token expiries each test lives through (each one judged on every open connection)."""
POOL = 6


def _start_redis(server: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port


@pytest.fixture(scope="module")
def acl_redis() -> Iterator[int]:
    """A redis-server of this module's own: the ACL users it adds never touch the shared one."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is needed")
    proc, port = _start_redis(server)
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def acl_cluster() -> Iterator[RedisCluster3]:
    """A 3-master cluster of this module's own (the session's shared cluster keeps its ACLs)."""
    try:
        cluster = RedisCluster3().start()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """azure-identity's App Service managed identity pointed at a token issuer the test starts."""
    issuers: list[TokenIssuer] = []

    def start(ports: list[int]) -> TokenIssuer:
        issuer = TokenIssuer(ports, lifetime_s=LIFETIME_S, refresh_in_s=1).start()
        issuers.append(issuer)
        point_managed_identity(monkeypatch, issuer.endpoint, "redis-entra-test")
        return issuer

    yield start
    for issuer in issuers:
        issuer.stop()


@dataclass
class Load:
    """Store operations from a few tasks: two busy ones (a turn's commands, back to back) and bursts
    that use every pooled connection, so most connections sit idle between bursts."""

    store: RedisStore
    errors: list[BaseException] = field(default_factory=list)
    ops: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def op(self, n: int) -> None:
        thread_id = f"thread_entra_{n % 50}"
        try:
            await self.store.record_thread(ThreadRecord(thread_id, "demo", "assistants", "alice", 1.0, time.time()))
            # A turn's own commands (the fast path), then redis-py's lock and read.
            record, token = await self.store.open_thread(thread_id, "alice", ttl_ms=5000)
            assert record is not None
            if token is None:
                token = await self.store.acquire_lock(thread_id, ttl_ms=5000, wait_s=2.0)
            assert await self.store.get_thread(thread_id) is not None
            if token is not None:
                await self.store.close_turn(thread_id, token, now=time.time())
            self.ops += 1
        except BaseException as exc:
            self.errors.append(exc)

    async def burst(self, width: int) -> None:
        await asyncio.gather(*(self.op(i) for i in range(width)))

    async def _busy(self, worker: int) -> None:
        n = worker * 1000
        while not self._stop.is_set():
            await self.op(n)
            n += 1

    async def _bursts(self) -> None:
        while not self._stop.is_set():
            await self.burst(POOL)
            try:
                await asyncio.wait_for(self._stop.wait(), 0.3)
            except TimeoutError:
                pass

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._busy(0)),
            loop.create_task(self._busy(1)),
            loop.create_task(self._bursts()),
        ]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def _until(condition: Any, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _settings(**auth: Any) -> RedisSettings:
    return RedisSettings(
        auth=RedisAuthSettings(type="entra", refresh_margin=MARGIN_S, **auth), max_connections=POOL + 4
    )


def _all_moved_to(issuer: TokenIssuer, index: int) -> bool:
    """Every open connection of the identity sent credentials since token `index` was issued."""
    since = issuer.issued[index].issued_at
    issuer.ever_authenticated()  # MONITOR caught up
    return all(
        any(stamp >= since for stamp in issuer.monitors[node].auths.get(addr, []))
        for node, addr in issuer.connections()
    )


def _judged(issuer: TokenIssuer) -> set[int]:
    return {check.token_index for check in issuer.checks}


async def _live_through_expiries(connection: Connection, issuer: TokenIssuer, *, revoke: bool) -> Load:
    store = RedisStore(connection.client, prefix="entra-test:", commands=connection.commands)
    load = Load(store)
    await load.burst(POOL)  # opens the pool's connections, all with the first token
    assert not load.errors, load.errors
    opened = len(issuer.connections())
    assert opened >= POOL
    load.start()
    try:
        if revoke:
            # The first rotation: revoke the token every open connection authenticated with, at once,
            # long before it expires; then widen the load so the pool opens new connections too.
            await _until(lambda: len(issuer.issued) >= 2, 10, "the second token")
            await _until(lambda: _all_moved_to(issuer, 1), 5, "every connection on the second token")
            seen = issuer.ever_authenticated()
            issuer.revoke(issuer.issued[0].token)
            await load.burst(POOL + 4)
            # The pool had room to grow: connections opened after the revocation, with the new token.
            assert issuer.ever_authenticated() - seen, "no connection opened after the revocation"
        await _until(lambda: len(_judged(issuer)) >= EXPIRIES, 4 * EXPIRIES * LIFETIME_S, f"{EXPIRIES} expiries")
    finally:
        await load.stop()
    assert not load.errors, load.errors[:3]
    assert load.ops > 100
    return load


def _debug(issuer: TokenIssuer) -> str:
    lines = [f"issued {[(round(i.issued_at % 100, 3), i.expires_on % 100) for i in issuer.issued]}"]
    for check in issuer.lapsed:
        stamps = issuer.monitors[check.node].auths.get(check.addr, [])
        lines.append(f"lapsed {check}: auths {[round(s % 100, 3) for s in stamps]}")
    return "\n".join(lines)


def _assert_moved_on(issuer: TokenIssuer, connection: Connection) -> None:
    assert connection.reauth is not None
    # Every connection open at an expiry (the busy ones at least) was judged, and every one had
    # authenticated with the next token in time: none was closed by the issuer.
    assert issuer.lapsed == [], _debug(issuer)
    judged = [{(c.node, c.addr) for c in issuer.checks if c.token_index == i} for i in sorted(_judged(issuer))]
    assert len(judged) >= EXPIRIES and all(judged), judged
    # redis-py's connections are recycled, not re-authenticated in place: of the connections open at
    # the first expiry, several tokens later only the fast path's (one per node, moved by AUTH in
    # order with its commands) are still open.
    fast_path = connection.commands.channels if isinstance(connection.commands, ClusterCommands) else [None]
    assert len(judged[0] & set(issuer.connections())) <= len(fast_path), judged[0]
    assert issuer.auth_failures() == []
    assert connection.reauth.rotations >= EXPIRIES


async def test_pooled_connections_re_authenticate_before_each_token_expires_and_a_revoked_token_costs_nothing(
    acl_redis: int, identity: Any
) -> None:
    issuer: TokenIssuer = identity([acl_redis])
    connection = build(f"redis://127.0.0.1:{acl_redis}/0", _settings())  # DefaultAzureCredential
    try:
        await _live_through_expiries(connection, issuer, revoke=True)
        _assert_moved_on(issuer, connection)
        assert issuer.issued[0].revoked
    finally:
        await connection.aclose()


async def test_cluster_connections_re_authenticate_on_every_node(acl_cluster: RedisCluster3, identity: Any) -> None:
    issuer: TokenIssuer = identity(acl_cluster.ports)
    connection = build(acl_cluster.url, _settings(client_id="redis-mi"))  # a user-assigned identity
    try:
        await _live_through_expiries(connection, issuer, revoke=False)
        _assert_moved_on(issuer, connection)
        assert {node for node, _ in issuer.connections()} == {0, 1, 2}
    finally:
        await connection.aclose()
