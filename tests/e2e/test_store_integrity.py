"""The store's integrity, on redis-servers of the tests' own: an evicting policy is reported (a log line,
`/readyz`, a gauge), and a store that lost its data (Redis restarted without persistence) is reported
by the next readiness probe, once in the log, until `threads reconcile --adopt` brings every thread
back with its owner and route."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.bridge import Bridge, routes_for, running_bridge
from tests.support.redis_server import redis_server
from tests.support.servers import ServerThread

NO_PERSISTENCE = ("--save", "", "--appendonly", "no")
TEAM_A, TEAM_B = "team-a-key-0123456789abcdef", "team-b-key-0123456789abcdef"
KEYS = [{"name": "team-a", "key": TEAM_A}, {"name": "team-b", "key": TEAM_B}]


def _ready(bridge: Bridge) -> tuple[int, dict[str, Any]]:
    with bridge.http() as http:
        answer = http.get("/readyz")
    return answer.status_code, answer.json()


def _metric(bridge: Bridge, name: str) -> float:
    with bridge.http() as http:
        text = http.get("/metrics").text
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def _errors(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and text in r.getMessage()]


def test_an_evicting_policy_is_reported_loudly_and_fails_readiness_only_when_asked(
    emulator: ServerThread, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    with redis_server(*NO_PERSISTENCE, "--maxmemory-policy", "volatile-lru") as server:
        with running_bridge(emulator.url, server.url, redis_prefix) as bridge:
            status, body = _ready(bridge)
            assert status == 200 and body["ready"] is True
            assert body["checks"]["redis"] == {"ok": True, "maxmemory_policy": "volatile-lru", "evicting": True}
            assert _metric(bridge, "agent_bridge_redis_evicting") == 1.0
            [line] = _errors(caplog, "maxmemory-policy is volatile-lru")  # once, not once per probe
            assert "noeviction" in line.getMessage()
        with running_bridge(emulator.url, server.url, redis_prefix, redis={"require_noeviction": True}) as strict:
            status, body = _ready(strict)
            assert status == 503 and body["checks"]["redis"]["ok"] is False
            assert "volatile-lru, not noeviction" in body["checks"]["redis"]["error"]


def test_noeviction_is_quiet_and_a_refused_config_is_unknown(
    emulator: ServerThread, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        redis_server(*NO_PERSISTENCE, "--maxmemory-policy", "noeviction") as safe,
        running_bridge(emulator.url, safe.url, redis_prefix) as bridge,
    ):
        status, body = _ready(bridge)
        assert status == 200 and body["checks"]["redis"]["maxmemory_policy"] == "noeviction"
        assert body["checks"]["redis"]["evicting"] is False
        assert _metric(bridge, "agent_bridge_redis_evicting") == 0.0
    # Azure Cache for Redis and Azure Managed Redis refuse CONFIG: the policy is unknown, and said so.
    with (
        redis_server(*NO_PERSISTENCE, "--rename-command", "CONFIG", "") as managed,
        running_bridge(emulator.url, managed.url, redis_prefix) as bridge,
    ):
        status, body = _ready(bridge)
        assert status == 200 and body["checks"]["redis"]["maxmemory_policy"] == "unknown"
        assert body["checks"]["redis"]["evicting"] is False
        assert _metric(bridge, "agent_bridge_redis_evicting") == -1.0
        assert any("does not tell its maxmemory-policy" in r.getMessage() for r in caplog.records)
    assert not _errors(caplog, "maxmemory-policy is")


def _cli(config: Path, redis_url: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "threads", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "REDIS_URL": redis_url},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_store_restarted_without_persistence_is_reported_and_reconcile_adopt_brings_every_thread_back(
    emulator: ServerThread, redis_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"redis_prefix": redis_prefix, "routes": routes_for(emulator.url), "keys": KEYS}))
    with (
        redis_server(*NO_PERSISTENCE) as server,
        running_bridge(emulator.url, server.url, redis_prefix, keys=KEYS, threads={"janitor": False}) as bridge,
    ):
        owners: dict[str, tuple[str, str]] = {}
        for n in range(6):
            key, owner = (TEAM_A, "team-a") if n % 2 else (TEAM_B, "team-b")
            model = ("classic-assistant", "classic-flights")[n % 3 == 0]
            raw = bridge.client(api_key=key).chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": f"before {n}"}]
            )
            owners[raw.headers["x-thread-id"]] = (owner, model)
        assert _ready(bridge)[0] == 200

        # Light load through the restart: a client keeps chatting (its failures while Redis is down are fine).
        stop = threading.Event()

        def load() -> None:
            client = bridge.client(api_key=TEAM_A, timeout=10)
            n = 0
            while not stop.is_set():
                try:
                    client.chat.completions.create(
                        model="classic-assistant", messages=[{"role": "user", "content": f"during {n}"}]
                    )
                except Exception:
                    pass
                n += 1

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        try:
            server.restart()  # SIGKILL, then an empty redis-server on the same port
            # The first probe that reaches Redis again reports the loss (a probe that finds Redis still
            # reconnecting says only that the store is unavailable).
            probes = [_ready(bridge) for _ in range(3)]
        finally:
            stop.set()
            worker.join(30)
        reached = [(status, body) for status, body in probes if body["checks"]["redis"]["ok"]]
        assert reached and len(reached) >= len(probes) - 1, probes
        for status, body in reached:
            assert status == 503 and body["ready"] is False
            registry = body["checks"]["registry"]
            assert registry["ok"] is False and "lost its data" in registry["error"] and registry["lost_at"]
        assert len(_errors(caplog, "THE STATE STORE LOST ITS DATA")) == 1  # once per loss, not per probe
        assert _metric(bridge, "agent_bridge_store_lost") == 1.0
        assert _metric(bridge, "agent_bridge_store_losses_total") == 1.0
        store: Any = bridge.state.store
        assert all(bridge.server.call(store.get_thread(t)) is None for t in owners)

        # The operator brings the threads back from Azure (their metadata names owner and route).
        report = _cli(config, server.url, "reconcile", "--adopt", "--yes")
        assert set(owners) <= set(report["adopted"]) and report["failed"] == {}
        assert report["marker_restored"] is True
        for thread_id, (owner, model) in owners.items():
            record = bridge.server.call(store.get_thread(thread_id))
            assert (record.owner, record.route) == (owner, model), thread_id
        status, body = _ready(bridge)
        assert status == 200 and body["checks"]["registry"] == {"ok": True}
        assert _metric(bridge, "agent_bridge_store_lost") == 0.0
        # A second reconcile finds nothing to adopt and leaves the marker alone.
        again = _cli(config, server.url, "reconcile", "--adopt", "--yes")
        assert again["orphans"] == [] and again["marker_restored"] is False
