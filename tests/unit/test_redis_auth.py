"""The Entra credential provider for Redis: which token a new connection gets, and when subscribers hear of one.

The token source is a scripted stand-in for azure-identity's credential (not our code); the clock is
the test's own, so nothing here waits.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from redis.exceptions import AuthenticationError, RedisError

from app.state.redis_auth import EntraCredentialProvider


def _jwt(oid: str, n: int) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'oid': oid, 'n': n})}.sig"


class Tokens:
    """Hands out the scripted answers in order: an AccessToken, or an exception to raise."""

    def __init__(self, *answers: AccessToken | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _provider(tokens: Tokens, clock: Clock) -> EntraCredentialProvider:
    return EntraCredentialProvider(tokens, "https://redis.azure.com/.default", refresh_margin_s=300, clock=clock)  # type: ignore[arg-type]


async def test_a_connection_authenticates_as_the_token_oid_and_reuses_the_token() -> None:
    clock = Clock()
    first = AccessToken(_jwt("oid-1", 1), 1000 + 3600)
    provider = _provider(Tokens(first), clock)
    try:
        assert await provider.get_credentials_async() == ("oid-1", first.token)
        assert await provider.get_credentials_async() == ("oid-1", first.token)
        assert provider.fetches == 1
        assert provider.current is not None and provider.current.generation == 1
    finally:
        await provider.aclose()


async def test_the_same_token_again_is_not_a_new_generation() -> None:
    # azure-identity answers a refresh asked for before its own refresh window with the cached token.
    clock = Clock()
    first = AccessToken(_jwt("oid-1", 1), 1000 + 3600)
    newer = AccessToken(_jwt("oid-1", 2), 1000 + 7200)
    provider = _provider(Tokens(first, first, newer), clock)
    try:
        await provider.get_credentials_async()
        clock.now = 1000 + 3600 - 300  # the refresh point
        assert await provider.get_credentials_async() == ("oid-1", first.token)
        assert provider.current is not None and provider.current.generation == 1
        assert provider._refresh_at < first.expires_on  # asked again before it expires
        clock.now = provider._refresh_at
        assert await provider.get_credentials_async() == ("oid-1", newer.token)
        assert provider.current.generation == 2
    finally:
        await provider.aclose()


async def test_no_token_at_all_is_a_redis_error_so_the_store_answers_503() -> None:
    provider = _provider(Tokens(ClientAuthenticationError("no identity here")), Clock())
    try:
        with pytest.raises(AuthenticationError) as caught:
            await provider.get_credentials_async()
        assert isinstance(caught.value, RedisError)
        assert "no identity here" not in str(caught.value)
    finally:
        await provider.aclose()


async def test_a_failed_refresh_keeps_serving_the_still_valid_token() -> None:
    clock = Clock()
    first = AccessToken(_jwt("oid-1", 1), 1000 + 3600)
    provider = _provider(Tokens(first, ClientAuthenticationError("identity endpoint down")), clock)
    try:
        await provider.get_credentials_async()
        clock.now = 1000 + 3600 - 100
        assert await provider.get_credentials_async() == ("oid-1", first.token)
    finally:
        await provider.aclose()


async def test_an_explicit_username_wins_over_the_oid() -> None:
    first = AccessToken(_jwt("oid-1", 1), 1000 + 3600)
    provider = EntraCredentialProvider(Tokens(first), "s", username="principal-7", clock=Clock())  # type: ignore[arg-type]
    try:
        assert await provider.get_credentials_async() == ("principal-7", first.token)
    finally:
        await provider.aclose()
