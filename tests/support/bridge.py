"""The bridge on a real port, configured against the test emulator and a real Redis."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from app.backends.polling import PollPolicy
from app.backends.retry import RetryPolicy
from app.http_protocol import StepWriteProtocol
from app.main import create_app
from app.settings import Settings, load_settings
from tests.support.identity import point_managed_identity
from tests.support.servers import ServerThread

KEY = {"type": "api_key", "api_key": "test-key"}
ENTRA = {"type": "entra"}
"""Project endpoints take Entra tokens only: the bridge gets them from the emulator's managed identity."""
IDENTITY_HEADER = "bridge-tests-identity"


def routes_for(emulator_url: str, **extra: dict[str, Any]) -> dict[str, Any]:
    project = f"{emulator_url}/api/projects/demo"
    routes: dict[str, Any] = {
        "demo-assistant": {"endpoint": emulator_url, "assistant_id": "asst_demo", "auth": KEY},
        "flights-assistant": {"endpoint": emulator_url, "assistant_id": "asst_flights", "auth": KEY},
        "classic-assistant": {"endpoint": project, "assistant_id": "asst_demo", "auth": ENTRA},
        "classic-flights": {"endpoint": project, "assistant_id": "asst_flights", "auth": ENTRA},
        "poll-assistant": {"endpoint": emulator_url, "assistant_id": "asst_demo", "auth": KEY, "upstream": "poll"},
        "poll-flights": {
            "endpoint": emulator_url,
            "assistant_id": "asst_flights",
            "auth": KEY,
            "upstream": "poll",
        },
        "demo-agent": {"endpoint": project, "agent": {"name": "demo-agent", "version": "1"}, "auth": ENTRA},
        "flights-agent": {"endpoint": project, "agent": {"name": "flights-demo", "version": "1"}, "auth": ENTRA},
    }
    routes.update(extra)
    return routes


@dataclass
class Bridge:
    server: ServerThread
    settings: Settings
    emulator_url: str
    clients: list[openai.OpenAI] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("api_key", "unused")
        kwargs.setdefault("max_retries", 0)
        client = openai.OpenAI(base_url=f"{self.url}/v1", **kwargs)
        self.clients.append(client)
        return client

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    @property
    def state(self) -> Any:
        """The bridge app's `app.state` (store, service, ...), for assertions on Redis."""
        return self.server.app.state

    # -- what the emulator saw ------------------------------------------------------------------

    def emulator(self) -> httpx.Client:
        return httpx.Client(base_url=self.emulator_url, timeout=30)

    def emulator_threads(self) -> list[dict[str, Any]]:
        with self.emulator() as c:
            data: list[dict[str, Any]] = c.get("/_emulator/threads").json()["data"]
            return data

    def emulator_stats(self) -> dict[str, int]:
        with self.emulator() as c:
            stats: dict[str, int] = c.get("/_emulator/stats").json()["by_operation"]
            return stats

    def emulator_requests(self) -> list[dict[str, Any]]:
        with self.emulator() as c:
            requests: list[dict[str, Any]] = c.get("/_emulator/stats").json()["requests"]
            return requests

    def reset_stats(self) -> None:
        with self.emulator() as c:
            c.post("/_emulator/stats/reset").raise_for_status()

    def fault(self, **spec: Any) -> None:
        with self.emulator() as c:
            c.post("/_emulator/faults", json=spec).raise_for_status()


@contextlib.contextmanager
def managed_identity(emulator_url: str) -> Iterator[None]:
    """azure-identity's App Service managed identity pointed at the emulator's `/msi/token`, for as long
    as the block runs (the environment is the process's: the bridge runs in-process)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        point_managed_identity(monkeypatch, f"{emulator_url}/msi/token", IDENTITY_HEADER)
        yield


@contextlib.contextmanager
def running_bridge(
    emulator_url: str,
    redis_url: str | None,
    prefix: str,
    *,
    routes: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[Bridge]:
    """`settings` as `load_settings` takes them; without `keys` the bridge runs in open mode, asked for
    explicitly (`open_mode: true`) as a keyless bridge must be (pass `open_mode=False` to test the refusal)."""
    settings.setdefault("open_mode", True)
    config = load_settings(
        None,
        env={},
        redis_url=redis_url,
        redis_prefix=prefix,
        routes=routes if routes is not None else routes_for(emulator_url),
        **settings,
    )
    with managed_identity(emulator_url):
        app = create_app(config, retry=RetryPolicy.testing(), poll=PollPolicy.testing())
        server = ServerThread(app, http=StepWriteProtocol).start()  # the protocol `serve` runs
        bridge = Bridge(server=server, settings=config, emulator_url=emulator_url)
        try:
            yield bridge
        finally:
            for client in bridge.clients:
                client.close()
            server.stop()
