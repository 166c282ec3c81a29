"""Entra tokens for Redis: on each new token, the client's connections are recycled through redis-py's own hooks.

A connection authenticates as it opens, with the provider's newest token (`app.state.redis_auth`).
When the provider announces a new token, every connection opened before it is recycled, so it opens
again with the new token before the old one expires (Azure closes a connection whose token expired
without a new AUTH):
- one in use is marked for reconnect: the pool closes it when its command gives it back, and it
  reopens on its next use. The command that holds it finishes on the old token, still valid;
- a free one is closed now, out of reach of any command while it closes, and reopens on its next use.

Standalone, `ConnectionPool.run_proactive_reconnect()` does both under the pool's lock (the one
`get_connection` and `release` take; held while the free connections close, a round trip at most for
a TLS close), so no connection moves between the free and in-use lists meanwhile:
`update_active_connections_for_reconnect()` followed by `disconnect(inuse_connections=False)` would
close the free connections in tasks that start a loop step later, when a command may have taken one.
On a cluster, per node (the discovered ones and the startup ones, whose discovery connection
stays open): `update_active_connections_for_reconnect()` and `disconnect_free_connections()`, which
takes the free connections out of the free list while they close.

Why not redis-py's own re-authentication (a `StreamingCredentialProvider` switches it on): a busy
connection sends its AUTH from the release path, whose failure is raised from the command that
released it, and a cluster re-authenticates its nodes' free connections only (a busy one, and a
startup node's, keep the old token until Azure closes them). redis-py 8.2's
`BlockingConnectionPool.get_connection` takes the pool's lock, so the third fault worked around here
before (a command handed a connection whose AUTH reply was still unread) is gone there. A recycled
connection costs one reconnect per token (Entra tokens live about an hour).
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio.cluster import RedisCluster

from app.state.redis_auth import Credential

log = logging.getLogger("agent_bridge.store")


class Recycler:
    """Subscribed to an `EntraCredentialProvider`: recycles every connection of `client` at each new token."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.rotations = 0

    def _nodes(self) -> list[Any]:
        cluster: RedisCluster = self.client
        manager = cluster.nodes_manager
        nodes = {id(node): node for node in [*manager.startup_nodes.values(), *cluster.get_nodes()]}
        return list(nodes.values())

    async def __call__(self, credential: Credential, deadline: float) -> None:
        self.rotations += 1
        if isinstance(self.client, RedisCluster):
            for node in self._nodes():
                node.update_active_connections_for_reconnect()
                await node.disconnect_free_connections()
        else:
            await self.client.connection_pool.run_proactive_reconnect()
        log.debug("redis: connections recycled for Entra token %d", credential.generation)
