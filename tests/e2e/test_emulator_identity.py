"""The emulator's App Service managed-identity endpoint, as azure-identity's credential calls it."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from azure.identity import ManagedIdentityCredential

from tests.support.servers import ServerThread

SCOPE = "https://ai.azure.com/.default"
# Other managed-identity flavours that azure-identity/MSAL would pick before App Service.
OTHER_MI_VARS = (
    "IMDS_ENDPOINT",
    "IDENTITY_SERVER_THUMBPRINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_CLIENT_ID",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
)


@pytest.fixture
def app_service_env(emulator: ServerThread, monkeypatch: pytest.MonkeyPatch) -> ServerThread:
    for name in OTHER_MI_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{emulator.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "app-service-secret")
    return emulator


def _token_fetches(emulator: ServerThread) -> list[dict[str, Any]]:
    stats = httpx.get(f"{emulator.url}/_emulator/stats").json()
    return [r for r in stats["requests"] if r["operation"] == "GET /msi/token"]


def test_credential_gets_a_token_the_emulator_accepts(app_service_env: ServerThread) -> None:
    emulator = app_service_env
    with ManagedIdentityCredential() as credential:
        token = credential.get_token(SCOPE)
        again = credential.get_token(SCOPE)  # served from MSAL's cache
    assert token.token.startswith("emu-")
    assert len(token.token) > 20
    assert again.token == token.token
    assert 3500 <= token.expires_on - time.time() <= 3601
    [fetch] = _token_fetches(emulator)
    assert parse_qs(fetch["query"]) == {"api-version": ["2019-08-01"], "resource": ["https://ai.azure.com"]}
    assert fetch["status"] == 200

    with ManagedIdentityCredential() as fresh:
        other = fresh.get_token(SCOPE)
    assert other.token != token.token
    assert len(_token_fetches(emulator)) == 2
    stats = httpx.get(f"{emulator.url}/_emulator/stats").json()
    assert stats["by_operation"]["GET /msi/token"] == 2

    response = httpx.post(
        f"{emulator.url}/api/projects/demo/openai/v1/responses",
        headers={"Authorization": f"Bearer {token.token}"},
        json={"input": "hi", "agent_reference": {"type": "agent_reference", "name": "demo-agent"}},
    )
    assert response.status_code == 200, response.text
    assert response.json()["output"][0]["content"][0]["text"] == "Echo: hi"


def test_request_without_credentials_is_401(emulator: ServerThread) -> None:
    response = httpx.post(
        f"{emulator.url}/api/projects/demo/openai/v1/responses",
        json={"input": "hi", "agent_reference": {"type": "agent_reference", "name": "demo-agent"}},
    )
    assert response.status_code == 401
    body = response.json()
    assert body["statusCode"] == 401
    assert "Access token is missing" in body["message"]


def test_token_endpoint_rules(emulator: ServerThread) -> None:
    url = f"{emulator.url}/msi/token"
    params = {"api-version": "2019-08-01", "resource": "https://ai.azure.com"}
    missing = httpx.get(url, params=params)
    assert missing.status_code == 401
    assert missing.json()["statusCode"] == 401
    assert httpx.get(url, params=params, headers={"X-IDENTITY-HEADER": ""}).status_code == 401
    headers = {"X-IDENTITY-HEADER": "s"}
    assert httpx.get(url, params={**params, "api-version": "2017-09-01"}, headers=headers).status_code == 400
    assert httpx.get(url, params={"api-version": "2019-08-01"}, headers=headers).status_code == 400

    httpx.post(f"{emulator.url}/_emulator/config", json={"token_ttl_s": 120}).raise_for_status()
    body = httpx.get(url, params={**params, "client_id": "my-uami"}, headers=headers).json()
    assert body["token_type"] == "Bearer"
    assert body["resource"] == "https://ai.azure.com"
    assert body["client_id"] == "my-uami"
    assert isinstance(body["expires_on"], str)
    assert 115 <= int(body["expires_on"]) - time.time() <= 121
