"""EntraAuth with a stand-in credential: one shared fetch, refresh inside the margin, errors without secrets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

from app.backends.azure_auth import (
    AI_FOUNDRY_SCOPE,
    COGNITIVE_SERVICES_SCOPE,
    ApiKeyAuth,
    EntraAuth,
    build_auth,
)
from app.errors import UpstreamAuthError
from app.settings import AuthSettings

T0 = 1_700_000_000.0
LEAKY = (
    "ManagedIdentityCredential: bad answer for Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl secret=hunter2"
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class StandInCredential:
    """Plays azure-identity's AsyncTokenCredential: numbered tokens valid `lifetime_s` from the clock's now."""

    def __init__(self, clock: Clock, lifetime_s: float = 3600, *, fail: bool = False, delay_s: float = 0.05) -> None:
        self.clock = clock
        self.lifetime_s = lifetime_s
        self.fail = fail
        self.delay_s = delay_s
        self.calls = 0
        self.scopes: list[tuple[str, ...]] = []
        self.closed = False

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        self.scopes.append(scopes)
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise ClientAuthenticationError(LEAKY + "\nmore diagnostics on a second line")
        return AccessToken(f"tok-{self.calls}", int(self.clock.now + self.lifetime_s))

    async def close(self) -> None:
        self.closed = True


async def test_twenty_concurrent_callers_share_one_fetch() -> None:
    clock = Clock()
    credential = StandInCredential(clock)
    auth = EntraAuth(credential, AI_FOUNDRY_SCOPE, clock=clock)
    headers = await asyncio.gather(*(auth.headers() for _ in range(20)))
    assert credential.calls == 1
    assert credential.scopes == [(AI_FOUNDRY_SCOPE,)]
    assert all(h == {"Authorization": "Bearer tok-1"} for h in headers)
    assert await auth.headers() == {"Authorization": "Bearer tok-1"}
    assert credential.calls == 1


async def test_a_token_is_cached_until_the_margin_then_refreshed() -> None:
    clock = Clock()
    credential = StandInCredential(clock, lifetime_s=3600)
    auth = EntraAuth(credential, "scope", clock=clock)  # margin: 300 s
    assert (await auth.headers())["Authorization"] == "Bearer tok-1"
    clock.now = T0 + 3299  # 301 s left
    assert (await auth.headers())["Authorization"] == "Bearer tok-1"
    clock.now = T0 + 3301  # 299 s left: inside the margin
    assert (await auth.headers())["Authorization"] == "Bearer tok-2"
    assert credential.calls == 2


@pytest.mark.parametrize(
    ("lifetime_s", "margin", "still_fresh_at", "refreshed_at"),
    [
        (3600, {"refresh_margin_s": 60}, 3500, 3541),  # a configured margin
        (120, {}, 59, 61),  # shorter than twice the 300 s margin: refreshed at half life, not every call
    ],
)
async def test_a_token_is_refreshed_once_its_margin_begins(
    lifetime_s: int, margin: dict[str, float], still_fresh_at: int, refreshed_at: int
) -> None:
    clock = Clock()
    credential = StandInCredential(clock, lifetime_s=lifetime_s)
    auth = EntraAuth(credential, "scope", clock=clock, **margin)
    await auth.headers()
    clock.now = T0 + still_fresh_at
    await auth.headers()
    assert credential.calls == 1
    clock.now = T0 + refreshed_at
    await auth.headers()
    assert credential.calls == 2


async def test_a_credential_error_becomes_upstream_auth_error_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    auth = EntraAuth(StandInCredential(Clock(), fail=True), "scope")
    with pytest.raises(UpstreamAuthError) as info:
        await auth.headers()
    message = info.value.message
    # The client gets a summary; the credential's first line (secrets cut out) goes to the log only.
    assert message.startswith("upstream authentication failed: the bridge could not get a token for Azure")
    assert "ManagedIdentityCredential" not in message
    [logged] = [r.getMessage() for r in caplog.records if r.name == "agent_bridge.upstream"]
    assert "ClientAuthenticationError: ManagedIdentityCredential" in logged
    for text in (message, logged):
        assert "eyJ" not in text and "hunter2" not in text and "second line" not in text
    assert isinstance(info.value.__cause__, ClientAuthenticationError)
    assert info.value.status == 502 and info.value.code == "upstream_authentication_failed"


async def test_concurrent_callers_share_one_failure_and_the_next_call_tries_again() -> None:
    credential = StandInCredential(Clock(), fail=True)
    auth = EntraAuth(credential, "scope")
    results = await asyncio.gather(*(auth.headers() for _ in range(20)), return_exceptions=True)
    assert credential.calls == 1
    assert all(isinstance(r, UpstreamAuthError) for r in results)
    credential.fail = False
    assert await auth.headers() == {"Authorization": "Bearer tok-2"}


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch() -> None:
    clock = Clock()
    credential = StandInCredential(clock, delay_s=0.1)
    auth = EntraAuth(credential, "scope", clock=clock)
    first = asyncio.ensure_future(auth.headers())
    second = asyncio.ensure_future(auth.headers())
    await asyncio.sleep(0.02)
    first.cancel()
    assert await second == {"Authorization": "Bearer tok-1"}
    assert first.cancelled() and credential.calls == 1


async def test_invalidate_forgets_the_token_and_api_keys_have_none() -> None:
    clock = Clock()
    credential = StandInCredential(clock)
    auth = EntraAuth(credential, "scope", clock=clock)
    assert auth.invalidate() is False
    await auth.headers()
    assert auth.invalidate() is True
    assert await auth.headers() == {"Authorization": "Bearer tok-2"}
    key = ApiKeyAuth("k3y-value")
    assert await key.headers() == {"api-key": "k3y-value"}
    assert key.invalidate() is False
    assert "k3y" not in repr(key) and "tok" not in repr(auth)


async def test_aclose_closes_only_an_owned_credential() -> None:
    owned, lent = StandInCredential(Clock()), StandInCredential(Clock())
    await EntraAuth(owned, "scope").aclose()
    await EntraAuth(lent, "scope", owns_credential=False).aclose()
    assert owned.closed and not lent.closed


async def test_build_auth_picks_the_credential_and_scope() -> None:
    key = build_auth(AuthSettings(type="api_key", api_key="k-123"), COGNITIVE_SERVICES_SCOPE)
    assert await key.headers() == {"api-key": "k-123"}

    managed = build_auth(AuthSettings(type="entra", client_id="11111111-2222"), AI_FOUNDRY_SCOPE)
    assert isinstance(managed, EntraAuth) and isinstance(managed.credential, ManagedIdentityCredential)
    assert managed.scope == AI_FOUNDRY_SCOPE

    default = build_auth(AuthSettings(type="entra", scope="api://custom/.default"), COGNITIVE_SERVICES_SCOPE)
    assert isinstance(default, EntraAuth) and isinstance(default.credential, DefaultAzureCredential)
    assert default.scope == "api://custom/.default"
    for auth in (key, managed, default):
        await auth.aclose()


def test_scope_constants() -> None:
    assert COGNITIVE_SERVICES_SCOPE == "https://cognitiveservices.azure.com/.default"
    assert AI_FOUNDRY_SCOPE == "https://ai.azure.com/.default"
