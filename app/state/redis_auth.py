"""Entra ID for Redis: a credential provider on azure.identity.aio that fetches each token before the last expires.

redis-py asks the provider for `(user, token)` whenever a connection opens. In a task of its own,
the provider fetches the next token `refresh_margin_s` before the current one expires (or at half
its life) with an async azure-identity credential (no thread, no blocking call on the event loop;
`redis-entraid` runs a synchronous credential instead), and hands each new token to its
subscribers: `app.state.reauth` recycles the open connections, which reopen with it.

It is deliberately not a redis-py `StreamingCredentialProvider`: for those, redis-py registers its
own re-authentication of pooled connections, which misses busy ones (see `app.state.reauth`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential
from redis.credentials import CredentialProvider
from redis.exceptions import AuthenticationError

log = logging.getLogger("agent_bridge.store")

RETRY_S = 2.0
"""After a failed refresh, the next try (the current token is still valid until its expiry)."""
SAME_TOKEN_RETRY_S = 5.0
"""azure-identity serves its cached token until the token is inside its own refresh window (the last
300 s of its life): a refresh asked for earlier gets the same token back, and is asked again soon."""


@dataclass(frozen=True)
class Credential:
    """One token as Redis takes it: `AUTH <user> <token>`; `generation` counts the provider's tokens."""

    user: str
    token: str
    expires_on: float
    generation: int


Subscriber = Callable[[Credential, float], Awaitable[None]]
"""Called with each new credential and the moment the one before it expires (connections must move
to the new one before then)."""


def _oid(token: str) -> str | None:
    """The `oid` claim of a JWT, unverified (Redis verifies the token; this only names the user)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        oid = claims.get("oid")
        return str(oid) if oid else None
    except (IndexError, ValueError):
        return None


class EntraCredentialProvider(CredentialProvider):
    def __init__(
        self,
        credential: AsyncTokenCredential,
        scope: str,
        *,
        username: str | None = None,
        refresh_margin_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credential = credential
        self.scope = scope
        self.username = username
        self.refresh_margin_s = refresh_margin_s
        self._clock = clock
        self._current: Credential | None = None
        self._announced: Credential | None = None
        self._refresh_at = 0.0
        self._fetching: asyncio.Task[Credential] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._subscribers: list[Subscriber] = []
        self.fetches = 0

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    @property
    def current(self) -> Credential | None:
        return self._current

    # -- redis-py's interface --------------------------------------------------------------------

    def get_credentials(self) -> tuple[str, str]:
        raise NotImplementedError("the Entra credential provider serves async Redis clients only")

    async def get_credentials_async(self) -> tuple[str, str]:
        current = self._current
        if current is None or self._clock() >= self._refresh_at:
            try:
                current = await self._fetch()
            except Exception as exc:
                if current is None or self._clock() >= current.expires_on:
                    # A Redis error, so the store answers 503 like any Redis failure (azure-identity's
                    # own errors are no RedisError and would escape as a 500).
                    log.warning("redis: no Entra token for a new connection: %s", type(exc).__name__)
                    raise AuthenticationError("no Entra token for Redis") from exc
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever(), name="redis-entra")
        return current.user, current.token

    # -- ours ------------------------------------------------------------------------------------

    def _user(self, token: AccessToken) -> str:
        return self.username or _oid(token.token) or "default"

    async def _fetch(self) -> Credential:
        task = self._fetching
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._get_token())
            self._fetching = task
        return await asyncio.shield(task)

    async def _get_token(self) -> Credential:
        self.fetches += 1
        token = await self.credential.get_token(self.scope)
        now = self._clock()
        if self._current is not None and token.token == self._current.token:
            self._refresh_at = now + min(SAME_TOKEN_RETRY_S, max(0.05, (token.expires_on - now) / 4))
            return self._current
        margin = min(self.refresh_margin_s, max(0.0, (token.expires_on - now) / 2))
        generation = self._current.generation + 1 if self._current is not None else 1
        self._refresh_at = token.expires_on - margin
        self._current = Credential(self._user(token), token.token, float(token.expires_on), generation)
        if self._announced is None:
            self._announced = self._current  # the first token: connections open with it
        return self._current

    async def _refresh_forever(self) -> None:
        while True:
            await self._announce()
            delay = self._refresh_at - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
                continue  # a connection opening meanwhile may have fetched the next token already
            try:
                await self._fetch()
            except Exception as exc:
                log.warning("redis: Entra token refresh failed (retrying in %.0f s): %s", RETRY_S, type(exc).__name__)
                self._refresh_at = self._clock() + RETRY_S

    async def _announce(self) -> None:
        """Tell subscribers of a token newer than the last they heard of (whoever fetched it)."""
        current, last = self._current, self._announced
        if current is None or last is None or current.generation <= last.generation:
            return
        self._announced = current
        for subscriber in self._subscribers:
            try:
                await subscriber(current, last.expires_on)
            except Exception as exc:
                log.warning("redis: re-authenticating connections failed: %s", type(exc).__name__)

    async def aclose(self) -> None:
        for task in (self._refresher, self._fetching):
            if task is not None and not task.done():
                task.cancel()
        await self.credential.close()


def entra_provider(client_id: str | None, scope: str, username: str | None, margin_s: float) -> EntraCredentialProvider:
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    credential: AsyncTokenCredential = (
        ManagedIdentityCredential(client_id=client_id) if client_id else DefaultAzureCredential()
    )
    return EntraCredentialProvider(credential, scope, username=username, refresh_margin_s=margin_s)
