"""A thread's turn lock as a lease: renewed while its turn runs, released at its end (retried past a store outage)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from app.core.background import BackgroundTasks
from app.errors import StoreUnavailableError

log = logging.getLogger("agent_bridge.lease")


class LockStore(Protocol):
    async def extend_lock(self, thread_id: str, token: str, ttl_ms: int) -> bool: ...

    async def close_turn(self, thread_id: str, token: str | None, *, now: float | None) -> None: ...


@dataclass(frozen=True)
class LeasePolicy:
    """How long a lock lives unrenewed (a crashed holder frees it this fast) and how a failed release is retried."""

    ttl_s: float = 10.0
    renew_every_s: float = 3.0
    release_first_s: float = 0.2
    release_max_s: float = 2.0
    release_within_s: float = 120.0
    """A release still failing after this is given up: the lock has long expired on its own by then."""

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl_s * 1000)

    @classmethod
    def for_ttl(cls, ttl_s: float) -> LeasePolicy:
        return cls(ttl_s=ttl_s, renew_every_s=max(0.05, ttl_s / 3))

    @classmethod
    def testing(cls) -> LeasePolicy:
        return cls(ttl_s=2.0, renew_every_s=0.5, release_first_s=0.05, release_max_s=0.3, release_within_s=30.0)


class Lease:
    """One turn's hold on one thread's lock."""

    __slots__ = ("_policy", "_store", "_tasks", "_timer", "thread_id", "token")

    def __init__(
        self, store: LockStore, tasks: BackgroundTasks, policy: LeasePolicy, thread_id: str, token: str
    ) -> None:
        self._store = store
        self._tasks = tasks
        self._policy = policy
        self.thread_id = thread_id
        self.token: str | None = token
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            policy.renew_every_s, self._renew
        )

    def _renew(self) -> None:
        if self.token is None:
            return
        self._tasks.spawn(self._extend(self.token), name=f"renew-{self.thread_id}")
        self._timer = asyncio.get_running_loop().call_later(self._policy.renew_every_s, self._renew)

    async def _extend(self, token: str) -> None:
        try:
            if not await self._store.extend_lock(self.thread_id, token, self._policy.ttl_ms):
                log.warning("the lock of thread %s expired while its turn ran", self.thread_id)
        except StoreUnavailableError:
            pass  # the next renewal tries again; the lease outlives a short outage

    def abandon(self) -> None:
        """Stop renewing and never release: the lock is another holder's to release now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.token = None

    async def release(self, used_at: float | None) -> None:
        """Free the lock and record the thread's last use; a store outage is waited out in the background."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        token, self.token = self.token, None
        try:
            await self._store.close_turn(self.thread_id, token, now=used_at)
        except StoreUnavailableError:
            self._tasks.spawn(self._retry(token, used_at), name=f"release-{self.thread_id}")

    async def _retry(self, token: str | None, used_at: float | None) -> None:
        policy = self._policy
        give_up = time.monotonic() + policy.release_within_s
        delay = policy.release_first_s
        while time.monotonic() < give_up:
            await asyncio.sleep(delay)
            delay = min(policy.release_max_s, delay * 2)
            try:
                await self._store.close_turn(self.thread_id, token, now=used_at)
                return
            except StoreUnavailableError:
                continue
        log.warning("gave up releasing the lock of thread %s: the store stayed unavailable", self.thread_id)
