"""Upstream credentials: an api-key header, or Entra ID tokens cached and refreshed."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Protocol

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential

from app.core import timing
from app.errors import ConfigError, UpstreamAuthError
from app.settings import AuthSettings

log = logging.getLogger("agent_bridge.upstream")

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
"""Azure OpenAI resources (Assistants)."""
AI_FOUNDRY_SCOPE = "https://ai.azure.com/.default"
"""Foundry projects (classic agents and v2)."""

# Anything token-like in an error message is cut out before the message goes anywhere.
_SECRETS = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*|(?i:bearer)\s+\S+|(?i:(?:secret|password|token)=)\S+")


class AuthProvider(Protocol):
    async def headers(self) -> dict[str, str]:
        """The headers that authenticate one request to Azure."""
        ...

    def invalidate(self) -> bool:
        """Forget a cached credential that Azure rejected; True if there was one to forget."""
        ...

    async def aclose(self) -> None:
        """Release what the provider owns (an azure-identity credential and its HTTP session)."""
        ...


class ApiKeyAuth:
    """A static `api-key` header."""

    def __init__(self, key: str) -> None:
        self._key = key

    async def headers(self) -> dict[str, str]:
        return {"api-key": self._key}

    def invalidate(self) -> bool:
        return False  # nothing cached: a rejected key stays rejected

    async def aclose(self) -> None:
        pass

    def __repr__(self) -> str:
        return "ApiKeyAuth(***)"


class EntraAuth:
    """`Authorization: Bearer` tokens from azure-identity, cached until shortly before they expire.

    A token is refreshed `refresh_margin_s` before `expires_on`, or at half its life if it was issued
    for less than twice the margin (else a short-lived token would be fetched for every request).
    Concurrent callers that find no fresh token share one fetch, which runs in a task of its own so
    that a caller that is cancelled does not cancel it for the others.
    """

    def __init__(
        self,
        credential: AsyncTokenCredential,
        scope: str,
        *,
        refresh_margin_s: float = 300.0,
        owns_credential: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credential = credential
        self.scope = scope
        self.refresh_margin_s = refresh_margin_s
        self.owns_credential = owns_credential
        self._clock = clock
        self._token: AccessToken | None = None
        self._refresh_at = 0.0
        self._inflight: asyncio.Task[AccessToken] | None = None
        self.fetches = 0

    async def headers(self) -> dict[str, str]:
        token = self._token
        if token is None or self._clock() >= self._refresh_at:
            token = await self._refresh()
        return {"Authorization": f"Bearer {token.token}"}

    async def _refresh(self) -> AccessToken:
        task = self._inflight
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.get_running_loop().create_task(self._fetch(), name=f"entra-token-{self.scope}")
            task.add_done_callback(self._fetched)
            self._inflight = task
        return await asyncio.shield(task)

    def _fetched(self, task: asyncio.Task[AccessToken]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone away

    async def _fetch(self) -> AccessToken:
        self.fetches += 1
        try:
            with timing.upstream_wait():
                token = await self.credential.get_token(self.scope)
        except Exception as exc:
            # The credential's text names identity endpoints, tenants and client ids: the log has it.
            request_id = timing.request_id()
            log.error(
                "upstream: no Entra token for scope %s (request %s): %s",
                self.scope,
                request_id or "-",
                _reason(exc),
                extra={"request_id": request_id or None},
            )
            where = f" under request id {request_id}" if request_id else ""
            raise UpstreamAuthError(
                "upstream authentication failed: the bridge could not get a token for Azure; an operator must "
                f"check its identity. The bridge's log has the details{where}."
            ) from exc
        now = self._clock()
        margin = min(self.refresh_margin_s, max(0.0, (token.expires_on - now) / 2))
        self._token, self._refresh_at = token, token.expires_on - margin
        return token

    def invalidate(self) -> bool:
        had, self._token, self._refresh_at = self._token is not None, None, 0.0
        return had

    async def aclose(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
        if self.owns_credential:
            await self.credential.close()

    def __repr__(self) -> str:
        return f"EntraAuth(scope={self.scope!r})"


def _reason(exc: BaseException) -> str:
    """A short, secret-free account of why a token could not be had: the error type and its first line."""
    lines = str(exc).strip().splitlines()
    first = _SECRETS.sub("***", lines[0].strip())[:200] if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def build_auth(settings: AuthSettings, default_scope: str) -> AuthProvider:
    """The provider a route's `auth` settings describe; Entra scope = `settings.scope or default_scope`."""
    if settings.type == "api_key":
        if not settings.api_key:
            raise ConfigError("auth.type api_key needs auth.api_key")
        return ApiKeyAuth(settings.api_key)
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    credential: AsyncTokenCredential = (
        ManagedIdentityCredential(client_id=settings.client_id) if settings.client_id else DefaultAzureCredential()
    )
    return EntraAuth(credential, settings.scope or default_scope)
