"""EntraAuth: one fetch for concurrent callers, refresh before expiry, errors without secrets."""

from __future__ import annotations

import asyncio
import time

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from app.backends.azure_auth import ApiKeyAuth, EntraAuth
from app.errors import UpstreamAuthError


class StandInCredential:
    """Plays azure-identity's role: hands out numbered tokens with a given lifetime."""

    def __init__(self, lifetime_s: float, fail: bool = False) -> None:
        self.lifetime_s = lifetime_s
        self.fail = fail
        self.calls = 0

    async def get_token(self, *scopes: str) -> AccessToken:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.fail:
            raise ClientAuthenticationError("ManagedIdentityCredential: the endpoint refused the request")
        return AccessToken(f"secret-token-{self.calls}", int(time.time() + self.lifetime_s))


async def test_concurrent_callers_share_one_fetch() -> None:
    credential = StandInCredential(3600)
    auth = EntraAuth(credential, "https://ai.azure.com/.default")
    headers = await asyncio.gather(*(auth.headers() for _ in range(20)))
    assert credential.calls == 1
    assert {h["Authorization"] for h in headers} == {"Bearer secret-token-1"}


async def test_a_token_is_refreshed_once_inside_the_margin_only() -> None:
    credential = StandInCredential(10)
    auth = EntraAuth(credential, "scope", refresh_margin_s=8.9)
    await auth.headers()
    assert credential.calls == 1  # 10 s left, margin min(8.9, 10/2) = 5 s: fresh
    long_lived = StandInCredential(3600)
    steady = EntraAuth(long_lived, "scope")
    for _ in range(5):
        await steady.headers()
    assert long_lived.calls == 1


async def test_short_lived_tokens_refresh_at_half_life() -> None:
    credential = StandInCredential(2)
    auth = EntraAuth(credential, "scope")
    await auth.headers()
    assert (await auth.headers())["Authorization"] == "Bearer secret-token-1"
    await asyncio.sleep(1.1)
    assert (await auth.headers())["Authorization"] == "Bearer secret-token-2"


async def test_failures_become_upstream_auth_errors_and_invalidate_forgets() -> None:
    auth = EntraAuth(StandInCredential(3600, fail=True), "scope")
    with pytest.raises(UpstreamAuthError) as info:
        await auth.headers()
    assert "authentication failed" in info.value.message.lower()
    good = EntraAuth(StandInCredential(3600), "scope")
    await good.headers()
    assert good.invalidate() is True
    assert (await good.headers())["Authorization"] == "Bearer secret-token-2"
    assert "secret" not in repr(good) and "k3y" not in repr(ApiKeyAuth("k3y"))
    assert ApiKeyAuth("k3y").invalidate() is False
