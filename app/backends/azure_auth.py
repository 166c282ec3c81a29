"""Upstream credentials: an api-key header, or Entra ID tokens cached and refreshed before they expire."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from app.errors import UpstreamAuthError
from app.settings import AuthSettings

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
AI_FOUNDRY_SCOPE = "https://ai.azure.com/.default"


class AuthProvider(Protocol):
    async def headers(self) -> dict[str, str]: ...

    def invalidate(self) -> bool:
        """Forget a cached credential that Azure rejected; True if there was one to forget."""
        ...

    async def aclose(self) -> None: ...


class ApiKeyAuth:
    def __init__(self, key: str) -> None:
        self._headers = {"api-key": key}

    async def headers(self) -> dict[str, str]:
        return self._headers

    def invalidate(self) -> bool:
        return False

    async def aclose(self) -> None:
        pass

    def __repr__(self) -> str:
        return "ApiKeyAuth(***)"


class EntraAuth:
    """Bearer tokens from azure-identity; concurrent callers share one fetch."""

    def __init__(self, credential: Any, scope: str, *, refresh_margin_s: float = 300.0) -> None:
        self.credential = credential
        self.scope = scope
        self.refresh_margin_s = refresh_margin_s
        self._token: Any = None
        self._margin = refresh_margin_s
        self._lock = asyncio.Lock()
        self.fetches = 0

    def _fresh(self) -> bool:
        return self._token is not None and self._token.expires_on - time.time() > self._margin

    async def headers(self) -> dict[str, str]:
        if not self._fresh():
            async with self._lock:
                if not self._fresh():
                    self._token = await self._fetch()
                    # Short-lived tokens are refreshed at half their life, long ones `refresh_margin_s` early.
                    lifetime = self._token.expires_on - time.time()
                    self._margin = min(self.refresh_margin_s, max(0.0, lifetime / 2))
        return {"Authorization": f"Bearer {self._token.token}"}

    async def _fetch(self) -> Any:
        from azure.core.exceptions import AzureError

        self.fetches += 1
        try:
            return await self.credential.get_token(self.scope)
        except (AzureError, ValueError, OSError) as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise UpstreamAuthError(
                f"Upstream authentication failed: could not get an Entra ID token ({reason})."
            ) from exc

    def invalidate(self) -> bool:
        had, self._token = self._token is not None, None
        return had

    async def aclose(self) -> None:
        close = getattr(self.credential, "close", None)
        if close is not None:
            await close()

    def __repr__(self) -> str:
        return f"EntraAuth(scope={self.scope!r})"


def build_auth(settings: AuthSettings, default_scope: str) -> AuthProvider:
    if settings.type == "api_key":
        assert settings.api_key is not None
        return ApiKeyAuth(settings.api_key)
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    credential: Any = (
        ManagedIdentityCredential(client_id=settings.client_id) if settings.client_id else DefaultAzureCredential()
    )
    return EntraAuth(credential, settings.scope or default_scope)
