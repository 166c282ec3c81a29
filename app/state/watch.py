"""The store's integrity as start-up and every readiness probe see it: Redis's eviction policy and the
registry marker (`app.state.marker`), each reported loudly (a log line, a field of `/readyz`, a gauge).

An evicting `maxmemory-policy` forgets keys under memory pressure: under `volatile-*` first the ones
with a TTL, which include every ownership record. Redis reports its policy through `CONFIG GET`;
managed services (Azure Cache for Redis, Azure Managed Redis) refuse `CONFIG`, and then the policy is
`unknown`: the operator must check it where the service shows it (docs/security.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from app.metrics import Metrics
from app.state.marker import MarkerState, RegistryMarker
from app.state.store import RedisStore
from app.state.store_base import translated

log = logging.getLogger("agent_bridge.store")

UNKNOWN = "unknown"
SAFE_POLICY = "noeviction"


def evicting(policy: str) -> bool:
    """Every policy but `noeviction` forgets keys (`allkeys-*`, `volatile-*`, and any a later Redis adds)."""
    return policy not in (SAFE_POLICY, UNKNOWN)


@dataclass(frozen=True)
class StoreReport:
    policy: str
    marker: MarkerState

    @property
    def evicting(self) -> bool:
        return evicting(self.policy)


class StoreWatch:
    def __init__(self, store: RedisStore, metrics: Metrics, *, require_noeviction: bool = False) -> None:
        self.store = store
        self.metrics = metrics
        self.marker = RegistryMarker(store)
        self.require_noeviction = require_noeviction
        self._policy_said: str | None = None
        self._loss_said: float | None = None

    @translated
    async def policy(self) -> str:
        """`maxmemory-policy` as the server says it, or `unknown` where it refuses to say."""
        try:
            reply: Any = await self.store.redis.config_get("maxmemory-policy")
        except ResponseError:
            return UNKNOWN  # CONFIG disabled or renamed (Azure), or not allowed to this user (ACL)
        if isinstance(reply, dict) and reply.get("maxmemory-policy"):
            return str(reply["maxmemory-policy"])
        return UNKNOWN

    async def check(self) -> StoreReport:
        """Read both, log what changed (once per policy, once per loss), set the gauges.
        Raises StoreUnavailableError when Redis does not answer."""
        report = StoreReport(await self.policy(), await self.marker.check())
        self._say_policy(report.policy)
        self._say_marker(report.marker)
        return report

    def _say_policy(self, policy: str) -> None:
        self.metrics.redis_evicting.set(1 if evicting(policy) else (-1 if policy == UNKNOWN else 0))
        if policy == self._policy_said:
            return
        self._policy_said = policy
        if evicting(policy):
            log.error(
                "redis: maxmemory-policy is %s: under memory pressure Redis deletes keys, and with them thread "
                "records and ownership. Set maxmemory-policy to noeviction (docs/security.md).",
                policy,
                extra={"maxmemory_policy": policy},
            )
        elif policy == UNKNOWN:
            log.warning(
                "redis: the server does not tell its maxmemory-policy (CONFIG is refused, as on Azure's "
                "managed Redis): make sure it is noeviction (docs/security.md)."
            )

    def _say_marker(self, state: MarkerState) -> None:
        self.metrics.store_lost.set(1 if state.lost else 0)
        if state.created:
            log.info("redis: a new registry: its marker is written")
        elif state.adopted:
            log.warning(
                "redis: the registry has threads but no marker (a registry from before markers, or one whose "
                "marker was lost while no bridge ran): its marker is written now"
            )
        if not state.lost:
            self._loss_said = None
            return
        if state.lost_at == self._loss_said:
            return
        self._loss_said = state.lost_at
        self.metrics.store_losses.inc()
        log.error(
            "redis: THE STATE STORE LOST ITS DATA: %s. Thread records and ownership written before are gone; "
            "this bridge is not ready until an operator runs `agent-bridge threads reconcile --adopt` (project "
            "routes) or `agent-bridge threads accept-loss` (docs/security.md).",
            state.reason,
            extra={"lost_at": state.lost_at},
        )
