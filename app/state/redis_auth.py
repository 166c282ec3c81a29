"""Entra ID for Redis: a streaming credential provider on azure.identity.aio that re-authenticates pooled connections.

redis-py asks a `StreamingCredentialProvider` for credentials when a connection opens, and calls
back (`on_next`) with each new token: idle pooled connections send AUTH at once, busy ones when
they are released. This provider fetches tokens with an async azure-identity credential (no thread,
no blocking call on the event loop; `redis-entraid` runs a synchronous credential instead) and, in
a task of its own, fetches the next token `refresh_margin_s` before the current one expires (or at
half its life), so every connection holds a valid token before the old one runs out.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential
from redis.auth.token import SimpleToken
from redis.credentials import StreamingCredentialProvider

log = logging.getLogger("agent_bridge.store")

RETRY_S = 2.0
"""After a failed refresh, the next try (the current token is still valid until its expiry)."""


def _oid(token: str) -> str | None:
    """The `oid` claim of a JWT, unverified (Redis verifies the token; this only names the user)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        oid = claims.get("oid")
        return str(oid) if oid else None
    except (IndexError, ValueError):
        return None


class EntraCredentialProvider(StreamingCredentialProvider):
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
        self._token: AccessToken | None = None
        self._refresh_at = 0.0
        self._fetching: asyncio.Task[AccessToken] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[Any], Awaitable[None] | None]] = []
        self.fetches = 0

    # -- redis-py's interface --------------------------------------------------------------------

    def on_next(self, callback: Callable[[Any], Any]) -> None:
        self._listeners.append(callback)

    def on_error(self, callback: Callable[[Exception], Any]) -> None:
        pass  # a failed refresh is retried here; the current token stays valid meanwhile

    def is_streaming(self) -> bool:
        return True

    def get_credentials(self) -> tuple[str, str]:
        raise NotImplementedError("the Entra credential provider serves async Redis clients only")

    async def get_credentials_async(self) -> tuple[str, str]:
        token = self._token
        if token is None or self._clock() >= self._refresh_at:
            token = await self._fetch()
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever(), name="redis-entra")
        return self._user(token), token.token

    # -- ours ------------------------------------------------------------------------------------

    def _user(self, token: AccessToken) -> str:
        return self.username or _oid(token.token) or "default"

    async def _fetch(self) -> AccessToken:
        task = self._fetching
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._get_token())
            self._fetching = task
        return await asyncio.shield(task)

    async def _get_token(self) -> AccessToken:
        self.fetches += 1
        token = await self.credential.get_token(self.scope)
        now = self._clock()
        margin = min(self.refresh_margin_s, max(0.0, (token.expires_on - now) / 2))
        self._token, self._refresh_at = token, token.expires_on - margin
        return token

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(max(0.0, self._refresh_at - self._clock()))
            try:
                token = await self._fetch()
            except Exception as exc:
                log.warning("redis: Entra token refresh failed (retrying in %.0f s): %s", RETRY_S, type(exc).__name__)
                self._refresh_at = self._clock() + RETRY_S
                continue
            value = SimpleToken(
                token.token,
                token.expires_on * 1000.0,
                self._clock() * 1000.0,
                {"oid": self._user(token)},
            )
            for listener in self._listeners:
                try:
                    outcome = listener(value)
                    if outcome is not None:
                        await outcome
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
