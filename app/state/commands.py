"""The three commands of a turn (GETEX, and the open and close scripts): over the fast path (`resp`), else redis-py.

The store calls two verbs, whatever carries them:
- `call(command, key=...)`: one command;
- `script(script, keys, args)`: EVALSHA, and EVAL the first time a server does not know the script.
Both are single commands: one that fails ran entirely or not at all, so redis-py may run it again.

Replies are raw RESP2 values, whichever carrier answered.

On a cluster, a command goes to the primary that redis-py's own slot table names (it keeps that
table current). A redirect (MOVED, ASK, TRYAGAIN, CLUSTERDOWN: the command did not run), a slot
redis-py has not mapped yet, or a node that cannot be reached before anything was sent goes through
redis-py's cluster client instead, which follows the redirect and refreshes its table.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from app.state.resp import Arg, Channel, Endpoint, RedirectError, Unreachable


class Script:
    """A Lua script and its SHA1, which Redis caches it under."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class Commands(Protocol):
    async def call(self, command: Sequence[Arg], *, key: str) -> Any: ...
    async def script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any: ...
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


def _evalsha(script: Script, keys: Sequence[str], args: Sequence[Arg]) -> list[Arg]:
    return ["EVALSHA", script.sha, len(keys), *keys, *args]


def _eval(script: Script, keys: Sequence[str], args: Sequence[Arg]) -> list[Arg]:
    return ["EVAL", script.source, len(keys), *keys, *args]


class _ScriptByCall:
    async def call(self, command: Sequence[Arg], *, key: str) -> Any:
        raise NotImplementedError

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return await self.call(_evalsha(script, keys, args), key=keys[0])
        except NoScriptError:
            return await self.call(_eval(script, keys, args), key=keys[0])


class ChannelCommands(_ScriptByCall):
    """A standalone Redis (or a cluster's proxy endpoint) over one `Channel`."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.channel = Channel(endpoint)

    async def call(self, command: Sequence[Arg], *, key: str) -> Any:
        return await self.channel.execute(*command)

    async def reauthenticate(self, user: str, token: str) -> None:
        sent = self.channel.reauthenticate(user, token)
        if sent is not None:
            await sent

    async def aclose(self) -> None:
        await self.channel.aclose()


class ClusterCommands(_ScriptByCall):
    """A Redis Cluster: a `Channel` per primary, routed by redis-py's slot table, redis-py on a redirect."""

    def __init__(self, cluster: RedisCluster, endpoint: Endpoint) -> None:
        self.cluster = cluster
        self.endpoint = endpoint
        self.channels: dict[str, Channel] = {}
        self.redirects = 0

    def channel(self, key: str) -> Channel | None:
        nodes = self.cluster.nodes_manager.slots_cache.get(key_slot(key.encode()))
        if not nodes:
            return None
        node = nodes[0]
        channel = self.channels.get(node.name)
        if channel is None:
            channel = Channel(dataclasses.replace(self.endpoint, host=node.host, port=int(node.port)))
            self.channels[node.name] = channel
        return channel

    async def call(self, command: Sequence[Arg], *, key: str) -> Any:
        channel = self.channel(key)
        if channel is not None:
            try:
                return await channel.execute(*command)
            except RedirectError:
                self.redirects += 1
            except Unreachable:
                pass  # redis-py rediscovers the slot's primary
        return await self.cluster.execute_command(*command)

    async def reauthenticate(self, user: str, token: str) -> None:
        for channel in list(self.channels.values()):
            sent = channel.reauthenticate(user, token)
            if sent is not None:
                await sent

    async def aclose(self) -> None:
        for channel in self.channels.values():
            await channel.aclose()


class ClientCommands(_ScriptByCall):
    """Any client with redis-py's interface (the embedded fakeredis): its replies, read the same way."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def call(self, command: Sequence[Arg], *, key: str) -> Any:
        return await self.client.execute_command(*command)

    async def reauthenticate(self, user: str, token: str) -> None:
        return None  # redis-py's connections are recycled by `app.state.reauth`

    async def aclose(self) -> None:
        return None  # the client is closed by its owner
