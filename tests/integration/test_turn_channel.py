"""The turn's fast path (`app.state.resp`) keeps redis-py's resilience: each point on a real server and a real cluster.

- a command never written when its connection drops goes out on the next one (exactly once); one
  written fails (it may have run);
- a redirect (MOVED, ASK) of a turn's command runs it once, through redis-py (cluster only: a single
  server never redirects);
- a reply slower than the command timeout fails its caller only; the commands behind it keep their
  own deadlines, and new ones go to a new connection;
- an idle connection PINGs, one that stops answering is replaced before a command needs it, and TCP
  keepalive is on;
- a reply that is not UTF-8 fails its caller only, on the same connection;
- a token rotated while a connection authenticates is the one the connection ends up with.

Standalone runs on a redis-server of this module's own (slow scripts and CLIENT PAUSE must not stall
the shared one); the cluster is the session's 3-master cluster, each test on the node serving its key.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster as SyncCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.state.commands import ClusterCommands
from app.state.connect import build
from app.state.resp import Channel, Endpoint
from app.state.store import RedisStore, ThreadRecord
from tests.support.servers import free_port

# Busy for ARGV[1] ms: a slow command (Redis runs one script at a time, so the server is busy too).
BUSY = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
while true do
  t = redis.call('TIME')
  if t[1] * 1000000 + t[2] - start > tonumber(ARGV[1]) * 1000 then return 1 end
end
"""


@pytest.fixture(scope="module")
def own_server() -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is needed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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


@dataclass
class Target:
    """Where a test's key lives: a node's port, a plain client to it, and channels to it."""

    cluster_url: str | None
    port_of_standalone: int | None
    prefix: str = field(default_factory=lambda: f"abtest:{uuid.uuid4().hex[:12]}:")
    channels: list[Channel] = field(default_factory=list)
    admins: list[redis.Redis] = field(default_factory=list)

    def key(self, name: str) -> str:
        return f"{self.prefix}{{t}}:{name}"  # one hash tag: every key of a test on one node

    def port(self) -> int:
        if self.port_of_standalone is not None:
            return self.port_of_standalone
        assert self.cluster_url is not None
        with SyncCluster.from_url(self.cluster_url.replace("+cluster", "")) as cluster:
            node = cluster.get_node_from_key(self.key("x"))
            return int(node.port)

    def admin(self) -> redis.Redis:
        client = redis.Redis(port=self.port())
        self.admins.append(client)
        return client

    def channel(self, **endpoint: Any) -> Channel:
        channel = Channel(Endpoint(port=self.port(), **endpoint))
        self.channels.append(channel)
        return channel


@pytest.fixture(params=["standalone", "cluster"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    if request.param == "standalone":
        found = Target(None, request.getfixturevalue("own_server"))
    else:
        found = Target(request.getfixturevalue("redis_cluster_url"), None)
    try:
        yield found
    finally:
        for channel in found.channels:
            await channel.aclose()
        admin = redis.Redis(port=found.port())
        for key in admin.scan_iter(match=f"{found.prefix}*"):
            admin.delete(key)
        admin.close()
        for client in found.admins:
            client.close()


def _conn(channel: Channel) -> Any:
    conn = channel._conn
    assert conn is not None
    return conn


async def test_a_command_never_written_goes_out_once_on_the_next_connection(target: Target) -> None:
    channel = target.channel()
    key = target.key("counter")
    assert await channel.execute("SET", key, "0") == "OK"
    first = _conn(channel)
    incr = asyncio.ensure_future(channel.execute("INCR", key))
    await asyncio.sleep(0)  # INCR is queued; its write is due at the end of this loop step
    first.transport.abort()  # the connection drops before that write
    assert await asyncio.wait_for(incr, 5) == 1
    assert channel.connects == 2
    assert target.admin().get(key) == b"1"  # ran once
    # A command already written when its connection drops fails: it may have run, so it is not sent again.
    blocked = asyncio.ensure_future(channel.execute("BLPOP", target.key("empty"), 5))
    await asyncio.sleep(0.2)
    _conn(channel).transport.abort()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(blocked, 5)
    assert await channel.execute("GET", key) == "1"


async def test_a_slow_reply_fails_its_caller_only(target: Target) -> None:
    channel = target.channel(command_timeout=1.5)
    key = target.key("value")
    await channel.execute("SET", key, "v")
    slow = asyncio.ensure_future(channel.execute("EVAL", BUSY, 0, 2000))
    await asyncio.sleep(1.0)
    behind = asyncio.ensure_future(channel.execute("GET", key))  # on the same connection, behind it
    with pytest.raises(RedisTimeoutError):
        await asyncio.wait_for(slow, 5)
    assert await asyncio.wait_for(behind, 5) == "v"  # its own deadline had not passed
    assert await channel.execute("GET", key) == "v"  # on a new connection: the slow one was retired
    assert channel.connects == 2


async def test_an_idle_connection_pings_and_one_that_stops_answering_is_replaced(target: Target) -> None:
    channel = target.channel(command_timeout=0.5, health_interval=0.2)
    admin = target.admin()
    assert await channel.execute("PING") == "PONG"
    conn = _conn(channel)
    sock = conn.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    host, port = sock.getsockname()[:2]
    local = f"{host}:{port}"
    await asyncio.sleep(0.6)  # idle: the channel's own PINGs keep it checked
    [mine] = [c for c in admin.client_list() if c["addr"] == local]
    assert mine["cmd"] == "ping"
    # The server stops answering (as a connection the network dropped silently): the PING times out
    # and the connection is closed while no command waits on it.
    admin.client_pause(2000, all=True)
    await asyncio.sleep(1.4)
    assert not conn.open
    await asyncio.sleep(0.8)  # the pause is over
    assert await asyncio.wait_for(channel.execute("PING"), 5) == "PONG"
    assert channel.connects == 2


async def test_a_reply_that_is_not_utf8_fails_its_caller_only(target: Target) -> None:
    channel = target.channel()
    admin = target.admin()
    good, bad = target.key("good"), target.key("bad")
    admin.set(good, "fine")
    admin.set(bad, b"\xff\xfe")
    # Both in one write on one connection, the bad reply first.
    results = await asyncio.gather(channel.execute("GET", bad), channel.execute("GET", good), return_exceptions=True)
    assert isinstance(results[0], DataError)
    assert results[1] == "fine"
    assert await channel.execute("GET", good) == "fine"
    assert channel.connects == 1


@dataclass
class _Token:
    user: str
    token: str


class _RotatingMidHandshake:
    """A credential provider whose token rotates while the connection that fetched it authenticates."""

    def __init__(self, first: _Token, second: _Token) -> None:
        self.current: _Token | None = first
        self._next = second

    async def get_credentials_async(self) -> tuple[str, str]:
        given = self.current
        assert given is not None
        self.current = self._next
        return given.user, given.token


async def test_a_token_rotated_during_connect_is_sent_before_any_command(target: Target) -> None:
    admin = target.admin()
    first = _Token(f"u1-{uuid.uuid4().hex[:6]}", "p1")
    second = _Token(f"u2-{uuid.uuid4().hex[:6]}", "p2")
    for token in (first, second):
        admin.execute_command("ACL", "SETUSER", token.user, "on", f">{token.token}", "~*", "+@all")
    try:
        channel = target.channel(credentials=_RotatingMidHandshake(first, second))
        assert await channel.execute("ACL", "WHOAMI") == second.user
    finally:
        for token in (first, second):
            admin.execute_command("ACL", "DELUSER", token.user)


# -- redirects: a cluster only -------------------------------------------------------------------


def _node_ids(url: str) -> dict[int, str]:
    with SyncCluster.from_url(url.replace("+cluster", "")) as cluster:
        return {int(node.port): cluster.cluster_myid(node) for node in cluster.get_primaries()}


def _migrate(slot: int, source: int, target: int, ids: dict[int, str]) -> None:
    """Start moving a slot as redis-cli --cluster reshard does: IMPORTING, MIGRATING, then MIGRATE its keys."""
    src, dst = redis.Redis(port=source), redis.Redis(port=target)
    try:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
    finally:
        src.close()
        dst.close()


def _own_slot(slot: int, owner: int, ids: dict[int, str]) -> None:
    """Finish the move: every node records the slot's new owner."""
    for port in ids:
        client = redis.Redis(port=port)
        try:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[owner])
        finally:
            client.close()


async def test_a_redirected_turn_command_runs_once_through_redis_py(redis_cluster_url: str) -> None:
    prefix = f"abtest:{uuid.uuid4().hex[:12]}:"
    connection = build(redis_cluster_url)
    commands = connection.commands
    assert isinstance(commands, ClusterCommands)
    store = RedisStore(connection.client, prefix=prefix, commands=commands)
    thread_id = "thread_redirect"
    slot = key_slot(store.keys.thread(thread_id).encode())
    ids = _node_ids(redis_cluster_url)
    await connection.client.initialize()
    owner = int(connection.client.nodes_manager.slots_cache[slot][0].port)
    other = next(port for port in ids if port != owner)
    try:
        await store.record_thread(ThreadRecord(thread_id, "demo", "assistants", "alice", 1.0, 1.0))
        record, token = await store.open_thread(thread_id, "alice", ttl_ms=60_000)
        assert record is not None and token is not None
        lock = store.keys.lock(thread_id)

        # ASK: the slot is migrating and its keys have left the node the fast path sends to.
        _migrate(slot, owner, other, ids)
        try:
            await store.close_turn(thread_id, token, now=2.0)
            # Redirected at least once (the new node may not know the script yet: NOSCRIPT, then EVAL).
            assert commands.redirects >= 1
        finally:
            _own_slot(slot, other, ids)
        touched = await store.get_thread(thread_id)
        assert touched is not None and touched.turns == 1  # ran once
        assert await connection.client.get(lock) is None

        # MOVED: the slot now lives elsewhere; the fast path's table still names the old node.
        stale = connection.client.nodes_manager.slots_cache
        stale[slot] = [node for node in connection.client.get_primaries() if int(node.port) == owner]
        redirects = commands.redirects
        await store.close_turn(thread_id, None, now=3.0)
        assert commands.redirects == redirects + 1
        touched = await store.get_thread(thread_id)
        assert touched is not None and touched.turns == 2 and touched.last_used_at == 3.0
    finally:
        # The slot goes back to its first owner, keys and all, for the tests that come after.
        here = [k async for k in connection.client.scan_iter(match=f"{prefix}*")]
        for key in here:
            await connection.client.delete(key)
        _migrate(slot, other, owner, ids)
        _own_slot(slot, owner, ids)
        await connection.aclose()
