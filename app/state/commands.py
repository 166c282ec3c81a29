"""The commands a turn sends: over lean channels (`resp`) to a server or a cluster's nodes, else over redis-py.

The store calls three verbs, whatever carries them:
- `call(command, key=...)`: one command;
- `batch(commands, key=...)`: several in one write, all on `key`'s slot (a turn's thread keys share a
  hash tag, `app.state.keys`);
- `transaction(commands, key=...)`: the same in MULTI/EXEC;
- `script(script, keys, args)`: EVALSHA, and EVAL the first time a server does not know the script.

Replies are raw RESP2 values (HGETALL is a flat list, SET is "OK" or None), whichever carrier
answered: `pairs` and `truthy` read them.

On a cluster, a command goes to the primary that redis-py's own slot table names (it keeps that
table current). A redirect (MOVED, ASK: the slot moved), a slot redis-py has not mapped yet, or a node
that cannot be reached before anything was sent goes through redis-py's cluster client instead,
which follows the redirect and refreshes its table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from app.state.resp import Channel, Command, Endpoint, RedirectError, Unreachable

log = logging.getLogger("agent_bridge.store")


class Script:
    """A Lua script and its SHA1, which Redis caches it under."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class Commands(Protocol):
    async def call(self, command: Command, *, key: str) -> Any: ...
    async def batch(self, commands: Sequence[Command], *, key: str) -> list[Any]: ...
    async def transaction(self, commands: Sequence[Command], *, key: str) -> list[Any]: ...
    async def script(self, script: Script, keys: Sequence[str], args: Sequence[str | int | float]) -> Any: ...
    async def reauthenticate(self, user: str, token: str) -> None: ...
    async def aclose(self) -> None: ...


def pairs(reply: Any) -> dict[str, str]:
    """An HGETALL reply (a flat list from RESP2, a dict from redis-py) as a dict."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def truthy(reply: Any) -> bool:
    """SET NX's reply: "OK" from RESP2, True from redis-py; None when the key existed."""
    return reply is not None and reply is not False


def _evalsha(script: Script, keys: Sequence[str], args: Sequence[str | int | float]) -> Command:
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


def _eval(script: Script, keys: Sequence[str], args: Sequence[str | int | float]) -> Command:
    return ("EVAL", script.source, len(keys), *keys, *args)


async def _pipeline(client: Any, commands: Sequence[Command], *, transaction: bool) -> list[Any]:
    async with client.pipeline(transaction=transaction) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        results: list[Any] = await pipe.execute()
    return results


class ChannelCommands:
    """A standalone Redis (or a cluster's proxy endpoint) over one `Channel`."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.channel = Channel(endpoint)

    async def call(self, command: Command, *, key: str) -> Any:
        return await self.channel.execute(*command)

    async def batch(self, commands: Sequence[Command], *, key: str) -> list[Any]:
        return await self.channel.batch(commands)

    async def transaction(self, commands: Sequence[Command], *, key: str) -> list[Any]:
        return await self.channel.transaction(commands)

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        try:
            return await self.channel.execute(*_evalsha(script, keys, args))
        except NoScriptError:
            return await self.channel.execute(*_eval(script, keys, args))

    async def reauthenticate(self, user: str, token: str) -> None:
        sent = self.channel.reauthenticate(user, token)
        if sent is not None:
            await sent

    async def aclose(self) -> None:
        await self.channel.aclose()


class ClusterCommands:
    """A Redis Cluster: a `Channel` per primary, routed by redis-py's slot table, redis-py on a redirect."""

    def __init__(self, cluster: RedisCluster, endpoint: Endpoint) -> None:
        self.cluster = cluster
        self.endpoint = endpoint
        self.channels: dict[str, Channel] = {}
        self.redirects = 0

    def _channel(self, key: str) -> Channel | None:
        nodes = self.cluster.nodes_manager.slots_cache.get(key_slot(key.encode()))
        if not nodes:
            return None
        node = nodes[0]
        channel = self.channels.get(node.name)
        if channel is None:
            channel = Channel(dataclasses.replace(self.endpoint, host=node.host, port=int(node.port)))
            self.channels[node.name] = channel
        return channel

    async def _routed(
        self, key: str, lean: Callable[[Channel], Awaitable[Any]], fallback: Callable[[], Awaitable[Any]]
    ) -> Any:
        channel = self._channel(key)
        if channel is not None:
            try:
                return await lean(channel)
            except RedirectError:
                self.redirects += 1
            except Unreachable:
                pass  # redis-py rediscovers the slot's primary
        return await fallback()

    async def call(self, command: Command, *, key: str) -> Any:
        return await self._routed(
            key, lambda channel: channel.execute(*command), lambda: self.cluster.execute_command(*command)
        )

    async def batch(self, commands: Sequence[Command], *, key: str) -> list[Any]:
        results: list[Any] = await self._routed(
            key, lambda channel: channel.batch(commands), lambda: _pipeline(self.cluster, commands, transaction=False)
        )
        return results

    async def transaction(self, commands: Sequence[Command], *, key: str) -> list[Any]:
        results: list[Any] = await self._routed(
            key,
            lambda channel: channel.transaction(commands),
            lambda: _pipeline(self.cluster, commands, transaction=True),
        )
        return results

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        try:
            return await self.call(_evalsha(script, keys, args), key=keys[0])
        except NoScriptError:
            return await self.call(_eval(script, keys, args), key=keys[0])

    async def reauthenticate(self, user: str, token: str) -> None:
        for channel in list(self.channels.values()):
            sent = channel.reauthenticate(user, token)
            if sent is not None:
                await sent

    async def aclose(self) -> None:
        for channel in self.channels.values():
            await channel.aclose()


class ClientCommands:
    """Any client with redis-py's interface (the embedded fakeredis): its replies, read the same way."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def call(self, command: Command, *, key: str) -> Any:
        return await self.client.execute_command(*command)

    async def batch(self, commands: Sequence[Command], *, key: str) -> list[Any]:
        return await _pipeline(self.client, commands, transaction=False)

    async def transaction(self, commands: Sequence[Command], *, key: str) -> list[Any]:
        return await _pipeline(self.client, commands, transaction=True)

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        try:
            return await self.client.execute_command(*_evalsha(script, keys, args))
        except NoScriptError:
            return await self.client.execute_command(*_eval(script, keys, args))

    async def reauthenticate(self, user: str, token: str) -> None:
        return None  # redis-py's connections are moved by `app.state.reauth`

    async def aclose(self) -> None:
        return None  # the client is closed by its owner
