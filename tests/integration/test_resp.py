"""The lean RESP channel and the turn's command carriers against real Redis servers (one, a cluster,
one stopped and started again, one that accepts and never answers)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis as sync_redis
from redis.crc import key_slot
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError, TimeoutError

from app.state.commands import ChannelCommands, ClusterCommands, Script, pairs, truthy
from app.state.connect import build
from app.state.resp import Channel, Endpoint
from tests.support.servers import free_port


def _endpoint(url: str, **kw: object) -> Endpoint:
    host, _, rest = url.removeprefix("redis://").partition(":")
    port, _, db = rest.partition("/")
    return Endpoint(host=host, port=int(port), db=int(db or 0), **kw)  # type: ignore[arg-type]


@pytest.fixture
async def channel(redis_url: str) -> AsyncIterator[Channel]:
    made = Channel(_endpoint(redis_url))
    try:
        yield made
    finally:
        await made.aclose()


async def test_replies_line_up_with_their_callers_when_some_give_up(channel: Channel, redis_prefix: str) -> None:
    keys = [f"{redis_prefix}k{n}" for n in range(200)]
    await channel.batch([("SET", key, f"v{n}") for n, key in enumerate(keys)])
    tasks = [asyncio.ensure_future(channel.execute("GET", key)) for key in keys]
    await asyncio.sleep(0)  # every command is written; now half the callers give up
    for task in tasks[::2]:
        task.cancel()
    answered = await asyncio.gather(*tasks[1::2])
    assert answered == [f"v{n}" for n in range(1, 200, 2)]
    # The cancelled callers' replies were read and dropped: the next command gets its own.
    assert await channel.execute("GET", keys[0]) == "v0"
    assert channel.connects == 1


async def test_commands_sent_in_one_loop_step_leave_in_one_write(channel: Channel, redis_prefix: str) -> None:
    assert await channel.execute("PING") == "PONG"  # connected
    conn = channel._conn
    assert conn is not None
    before = conn.writes
    keys = [f"{redis_prefix}w{n}" for n in range(50)]
    replies = await asyncio.gather(*(channel.execute("SET", key, "v") for key in keys))
    assert replies == ["OK"] * 50
    assert conn.writes == before + 1  # fifty callers, one write
    assert await channel.execute("GET", keys[-1]) == "v"
    assert conn.writes == before + 2


async def test_errors_are_redis_py_exceptions_and_leave_the_connection_usable(
    channel: Channel, redis_prefix: str
) -> None:
    key = f"{redis_prefix}h"
    with pytest.raises(ResponseError, match="unknown command"):
        await channel.execute("NO-SUCH-COMMAND")
    # A failed command inside MULTI/EXEC surfaces; the others in it still ran (Redis's semantics).
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await channel.transaction([("SET", key, "x"), ("HSET", key, "f", "v")])
    assert await channel.execute("GET", key) == "x"
    fields, locked = await channel.batch([("HGETALL", f"{redis_prefix}none"), ("SET", key, "y", "NX")])
    assert pairs(fields) == {} and not truthy(locked)
    assert channel.connects == 1


async def test_a_script_unknown_to_the_server_is_sent_whole_once(redis_url: str, redis_prefix: str) -> None:
    commands = ChannelCommands(_endpoint(redis_url))
    script = Script(f"return '{redis_prefix}' .. KEYS[1] .. ARGV[1]")  # a source no other test loads
    try:
        assert await commands.script(script, ["a"], ["b"]) == f"{redis_prefix}ab"  # NOSCRIPT, then EVAL
        assert await commands.channel.execute("SCRIPT", "EXISTS", script.sha) == [1]
        assert await commands.script(script, ["c"], ["d"]) == f"{redis_prefix}cd"  # EVALSHA
    finally:
        await commands.aclose()


@pytest.fixture
def own_redis() -> Iterator[tuple[int, Callable[[], None], Callable[[], None]]]:
    """A redis-server of this test's own, which the test may stop and start again on the same port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                sync_redis.Redis(port=port).ping()
                return
            except sync_redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop() -> None:
        procs[-1].terminate()
        procs[-1].wait(10)

    start()
    try:
        yield port, stop, start
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


async def test_a_restart_fails_the_commands_in_flight_and_the_next_ones_reconnect(
    own_redis: tuple[int, Callable[[], None], Callable[[], None]],
) -> None:
    port, stop, start = own_redis
    channel = Channel(Endpoint(port=port, connect_timeout=5.0))
    try:
        assert await channel.execute("PING") == "PONG"
        stop()
        with pytest.raises(ConnectionError):
            await channel.execute("PING")  # the dropped connection, or a refused new one: never a hang
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await channel.execute("PING")
        assert time.monotonic() - started < 2.5  # refused at once, not after the connect timeout
        await asyncio.to_thread(start)  # the same server back on its port
        assert await channel.execute("PING") == "PONG"  # on a new connection
        assert channel.connects == 2
    finally:
        await channel.aclose()


async def test_a_redis_that_never_answers_fails_each_caller_within_the_command_timeout() -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepted, read, never answered
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    channel = Channel(Endpoint(port=port, command_timeout=0.3))
    try:
        calls = [asyncio.ensure_future(channel.execute("GET", f"k{n}")) for n in range(5)]
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
        assert all(isinstance(r, TimeoutError) for r in results), results
        # The hung connection was closed; the next command opens another one (and times out too).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(channel.execute("PING"), 5)
        assert channel.connects == 2
    finally:
        await channel.aclose()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_wrong_password_is_an_authentication_error(
    own_redis: tuple[int, Callable[[], None], Callable[[], None]],
) -> None:
    port, _stop, _start = own_redis
    sync_redis.Redis(port=port).config_set("requirepass", "s3cret")
    good = Channel(Endpoint(port=port, password="s3cret"))
    bad = Channel(Endpoint(port=port, password="wrong"))
    nobody = Channel(Endpoint(port=port))
    try:
        assert await good.execute("PING") == "PONG"
        with pytest.raises(AuthenticationError):
            await bad.execute("PING")
        with pytest.raises(AuthenticationError):
            await nobody.execute("PING")
    finally:
        for channel in (good, bad, nobody):
            await channel.aclose()


async def test_cluster_commands_go_to_the_slots_primary_and_follow_a_redirect(
    redis_cluster_url: str, redis_prefix: str
) -> None:
    connection = build(redis_cluster_url)
    commands = connection.commands
    assert isinstance(commands, ClusterCommands)
    try:
        await connection.client.initialize()
        keys = [f"{redis_prefix}{{s{n}}}:k" for n in range(30)]
        for n, key in enumerate(keys):
            await commands.call(("SET", key, str(n)), key=key)
        assert [await connection.client.get(key) for key in keys] == [str(n) for n in range(30)]
        assert len(commands.channels) == 3 and commands.redirects == 0  # every primary, no redirect
        # A stale slot table (as after a resharding): the wrong node answers MOVED, redis-py follows it.
        slots = connection.client.nodes_manager.slots_cache
        slot = key_slot(keys[0].encode())
        right = slots[slot]
        wrong = next(nodes for s, nodes in slots.items() if nodes[0].name != right[0].name)
        slots[slot] = wrong
        try:
            assert await commands.call(("GET", keys[0]), key=keys[0]) == "0"
            fields, locked = await commands.batch(
                [("HGETALL", keys[0] + "h"), ("SET", keys[0], "z", "NX")], key=keys[0]
            )
            assert pairs(fields) == {} and not truthy(locked)
        finally:
            slots[slot] = right
        assert commands.redirects == 1  # the batch went straight to the right node
    finally:
        for key in [k async for k in connection.client.scan_iter(match=f"{redis_prefix}*")]:
            await connection.client.delete(key)
        await connection.aclose()
