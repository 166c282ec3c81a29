"""Entra ID upstream: azure-identity's managed identity against the emulator's App Service endpoint."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.bridge import Bridge, routes_for, running_bridge
from tests.support.identity import point_managed_identity
from tests.support.servers import ServerThread


@pytest.fixture
def managed_identity(emulator: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    point_managed_identity(monkeypatch, f"{emulator.url}/msi/token", "app-service-secret")


def _routes(emulator_url: str) -> dict[str, Any]:
    project = f"{emulator_url}/api/projects/demo"
    return routes_for(
        emulator_url,
        **{
            "entra-assistant": {
                "endpoint": emulator_url,
                "assistant_id": "asst_demo",
                "auth": {"type": "entra", "client_id": "mi-1"},
            },
            "entra-agent": {"endpoint": project, "agent": {"name": "demo-agent"}, "auth": {"type": "entra"}},
        },
    )


def _token_fetches(bridge: Bridge) -> list[dict[str, Any]]:
    return [r for r in bridge.emulator_requests() if r["path"] == "/msi/token"]


def _ask(bridge: Bridge, model: str, text: str) -> httpx.Response:
    return httpx.post(
        f"{bridge.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}]},
        timeout=30,
    )


@pytest.mark.usefixtures("managed_identity")
def test_twenty_concurrent_requests_share_one_token(emulator: ServerThread, redis_url: str, redis_prefix: str) -> None:
    with running_bridge(emulator.url, redis_url, redis_prefix, routes=_routes(emulator.url)) as bridge:
        bridge.reset_stats()
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda n: _ask(bridge, "entra-assistant", f"n{n}"), range(20)))
        assert [a.status_code for a in answers] == [200] * 20
        fetches = _token_fetches(bridge)
        assert len(fetches) == 1
        assert "resource=https://cognitiveservices.azure.com" in fetches[0]["query"]
        assert "client_id=mi-1" in fetches[0]["query"]
        # The Foundry route asks for its own scope, with DefaultAzureCredential.
        assert _ask(bridge, "entra-agent", "hello").json()["choices"][0]["message"]["content"] == "Echo: hello"
        fetches = _token_fetches(bridge)
        assert len(fetches) == 2
        assert "resource=https://ai.azure.com" in fetches[1]["query"]


@pytest.mark.usefixtures("managed_identity")
def test_a_token_near_expiry_is_refreshed(emulator: ServerThread, redis_url: str, redis_prefix: str) -> None:
    with httpx.Client(base_url=emulator.url) as c:
        c.post("/_emulator/config", json={"token_ttl_s": 3}).raise_for_status()
    with running_bridge(emulator.url, redis_url, redis_prefix, routes=_routes(emulator.url)) as bridge:
        bridge.reset_stats()
        assert _ask(bridge, "entra-assistant", "one").status_code == 200
        assert _ask(bridge, "entra-assistant", "two").status_code == 200
        assert len(_token_fetches(bridge)) == 1
        time.sleep(3.5)  # past its expiry: the bridge must fetch a new token, not send the old one
        assert _ask(bridge, "entra-assistant", "three").status_code == 200
        assert len(_token_fetches(bridge)) == 2
        auth = bridge.state.components.auths["entra-assistant"]
        assert auth.fetches >= 2


@pytest.mark.usefixtures("managed_identity")
def test_a_rejected_token_is_a_502_without_secrets(
    emulator: ServerThread, redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with running_bridge(emulator.url, redis_url, redis_prefix, routes=_routes(emulator.url)) as bridge:
        assert _ask(bridge, "entra-assistant", "warm").status_code == 200
        bridge.fault(path=r"^/openai/threads", status=401, count=10)
        response = _ask(bridge, "entra-assistant", "rejected")
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["code"] == "upstream_authentication_failed"
        assert "authentication failed" in error["message"].lower()
        assert "emu-" not in response.text
        assert "emu-" not in caplog.text
        assert "app-service-secret" not in caplog.text and "app-service-secret" not in response.text
