"""Usage per key and route, and limits per key, across two replicas on one Redis (bridge processes), a
restart, and a Redis outage (docs/usage-and-limits.md)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import openai
import pytest

from tests.support.bridge import routes_for, running_bridge
from tests.support.chat import answered, turn
from tests.support.cut_proxy import cut_proxy
from tests.support.leftovers import active_runs, wait_for
from tests.support.process import bridge_process, bridge_processes, write_config
from tests.support.servers import ServerThread

ROOT = Path(__file__).resolve().parents[2]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
ADMIN = "usage-admin-key-0123456789"
KEYS = {
    "team-a": "team-a-key-0123456789",
    "team-b": "team-b-key-0123456789",
    "rpm": "rpm-team-key-0123456789",
    "tpm": "tpm-team-key-0123456789",
    "tpd": "tpd-team-key-0123456789",
    "tif": "tif-team-key-0123456789",
}
LIMITS = {
    "rpm": {"requests_per_minute": 3},
    "tpm": {"tokens_per_minute": 5},
    "tpd": {"tokens_per_day": 5},
    "tif": {"turns_in_flight": 1},
}
RESET = re.compile(r"^(\d+ms|\d+s|\d+m\d+s|\d+h\d+m\d+s)$")


def _keys() -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = [{"name": "ops", "key": ADMIN, "admin": True}]
    for name, key in KEYS.items():
        keys.append({"name": name, "key": key, **({"limits": LIMITS[name]} if name in LIMITS else {})})
    return keys


def _config(tmp_path: Path, emulator: ServerThread, prefix: str, **settings: Any) -> Path:
    return write_config(
        tmp_path / "config.yaml", routes_for(emulator.url), redis_prefix=prefix, keys=_keys(), **settings
    )


_OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Every client is closed at the end of its test: pooled connections to a stopped replica would
    otherwise be collected (and warned about) in a later test."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def _client(url: str, owner: str) -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEYS[owner], max_retries=0)
    _OPEN.append(client)
    return client


def _usage(url: str, **params: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/admin/usage", params=params, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["data"]
    return rows


def _add(totals: dict[tuple[str, str], dict[str, int]], owner: str, route: str, inp: int, out: int) -> None:
    row = totals.setdefault((owner, route), {"turns": 0, "input_tokens": 0, "output_tokens": 0, "errors": 0})
    row["turns"] += 1
    row["input_tokens"] += inp
    row["output_tokens"] += out


def _fresh_minute() -> None:
    """Per-minute limits count by the clock's minute: start early in one, not at its edge."""
    if time.time() % 60 > 52:
        time.sleep(60 - time.time() % 60 + 0.2)


@pytest.mark.usefixtures("process_identity")
def test_usage_adds_up_across_two_replicas_and_a_restart(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, emulator, redis_prefix)
    expected: dict[tuple[str, str], dict[str, int]] = {}
    with bridge_processes(config, redis_url, tmp_path, 2) as (one, two):
        a1, a2, b1 = _client(one.url, "team-a"), _client(two.url, "team-a"), _client(one.url, "team-b")
        # Chat, plain and streamed, one per replica; a tool round answered through the other replica.
        done = turn(a1, stream=False, model="demo-assistant", messages=[{"role": "user", "content": "one two"}])
        _add(expected, "team-a", "demo-assistant", done.usage.prompt_tokens, done.usage.completion_tokens)
        streamed = turn(
            a2,
            stream=True,
            model="demo-assistant",
            messages=[{"role": "user", "content": "three four five"}],
            stream_options={"include_usage": True},
        )
        _add(expected, "team-a", "demo-assistant", streamed.usage.prompt_tokens, streamed.usage.completion_tokens)
        messages: list[dict[str, Any]] = [{"role": "user", "content": "/tool lookup {}"}]
        first = turn(b1, stream=False, model="demo-assistant", messages=messages, tools=TOOLS)
        _add(expected, "team-b", "demo-assistant", first.usage.prompt_tokens, first.usage.completion_tokens)
        messages += answered(first, "42")
        second = turn(_client(two.url, "team-b"), stream=False, model="demo-assistant", messages=messages, tools=TOOLS)
        _add(expected, "team-b", "demo-assistant", second.usage.prompt_tokens, second.usage.completion_tokens)
        # A Foundry v2 response (Azure's figures as the Responses API reports them).
        response = b1.responses.create(model="demo-agent", input="six seven")
        assert response.usage is not None
        _add(expected, "team-b", "demo-agent", response.usage.input_tokens, response.usage.output_tokens)
        # A failed run is a turn and an error.
        with pytest.raises(openai.APIStatusError):
            a1.chat.completions.create(
                model="demo-assistant", messages=[{"role": "user", "content": "/fail server_error"}]
            )
        _add(expected, "team-a", "demo-assistant", 0, 0)
        expected[("team-a", "demo-assistant")]["errors"] += 1
        for client in (a1, a2, b1):
            client.close()
    # A restart: what was counted stays counted, and new turns add to it.
    with bridge_process(config, redis_url, tmp_path) as again:
        client = _client(again.url, "team-a")
        done = turn(client, stream=False, model="demo-assistant", messages=[{"role": "user", "content": "after"}])
        _add(expected, "team-a", "demo-assistant", done.usage.prompt_tokens, done.usage.completion_tokens)
        client.close()
        rows = {(r["owner"], r["route"]): r for r in _usage(again.url)}
        by_owner = {r["owner"]: r for r in _usage(again.url, group_by="owner")}
    assert set(rows) == set(expected)
    for key, want in expected.items():
        got = rows[key]
        assert {k: got[k] for k in want} == want, key
        assert got["total_tokens"] == want["input_tokens"] + want["output_tokens"]
        assert got["input_tokens"] > 0
    assert rows[("team-b", "demo-assistant")]["tool_rounds"] == 1
    assert rows[("team-b", "demo-agent")]["background"] == 1
    team_a = [w for (o, _), w in expected.items() if o == "team-a"]
    assert by_owner["team-a"]["route"] == "*"
    assert by_owner["team-a"]["turns"] == sum(w["turns"] for w in team_a)
    # The CLI reads the same rows straight from Redis (its table: tests/unit/test_metering.py).
    env = {"REDIS_URL": redis_url, "PATH": ""}
    cli = [sys.executable, "-m", "app.cli", "usage", "--config", str(config), "--json"]
    out = subprocess.run(cli, capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert {(r["owner"], r["route"]): r for r in json.loads(out.stdout)["data"]} == rows


def _limited(url: str, owner: str, content: str = "hi") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "demo-assistant", "messages": [{"role": "user", "content": content}]},
        headers={"Authorization": f"Bearer {KEYS[owner]}"},
        timeout=30,
    )


def _refused(answer: httpx.Response, kind: str) -> dict[str, Any]:
    assert answer.status_code == 429, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded" and error["type"] == kind
    assert int(answer.headers["retry-after"]) >= 1
    return error


def test_each_limit_refuses_at_its_count_across_two_replicas(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, emulator, redis_prefix)
    with bridge_processes(config, redis_url, tmp_path, 2) as (one, two):
        _fresh_minute()
        # requests_per_minute 3: the replicas take turns; the fourth request is refused, wherever it lands.
        remaining = []
        for url in (one.url, two.url, one.url):
            answer = _limited(url, "rpm")
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-ratelimit-limit-requests"] == "3"
            assert RESET.match(answer.headers["x-ratelimit-reset-requests"])
            remaining.append(answer.headers["x-ratelimit-remaining-requests"])
        assert remaining == ["2", "1", "0"]
        refused = _limited(two.url, "rpm")
        error = _refused(refused, "requests")
        assert "requests per min (RPM): Limit 3, Used 3" in error["message"]
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert "x-ratelimit-limit-tokens" not in refused.headers  # no token limit on this key
        # tokens_per_minute 5: tokens are known when a turn ends, so the turn that spends past the limit
        # goes through and the next one (on the other replica) is refused.
        first = _limited(one.url, "tpm", "one two three four five six")
        assert first.status_code == 200 and first.headers["x-ratelimit-remaining-tokens"] == "5"
        spent = first.json()["usage"]["total_tokens"]
        assert spent > 5
        # (a plain answer goes out after its turn's end, which wrote its tokens)
        error = _refused(refused := _limited(two.url, "tpm"), "tokens")
        assert "tokens per min (TPM): Limit 5" in error["message"]
        assert refused.headers["x-ratelimit-limit-tokens"] == "5"
        assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
        assert RESET.match(refused.headers["x-ratelimit-reset-tokens"])
        # tokens_per_day 5: the same, reset at the end of the UTC day.
        assert _limited(two.url, "tpd", "one two three four five six").status_code == 200
        error = _refused(refused := _limited(one.url, "tpd"), "tokens")
        assert "tokens per day (TPD): Limit 5" in error["message"]
        assert refused.headers["x-ratelimit-limit-tokens"] == "5"
        assert int(refused.headers["retry-after"]) > 60 or time.time() % 86400 > 86340
        # turns_in_flight 1: while one turn runs on one replica, the other refuses the key's next turn;
        # once it ended, the key may start another.
        out: dict[str, httpx.Response] = {}
        slow = threading.Thread(target=lambda: out.setdefault("slow", _limited(one.url, "tif", "/sleep 1000\nx")))
        slow.start()
        wait_for(lambda: len(active_runs(emulator.url)) == 1, what="the slow turn's run")
        error = _refused(_limited(two.url, "tif"), "requests")
        assert "turns in flight: Limit 1, Used 1" in error["message"]
        slow.join(15)
        assert out["slow"].status_code == 200
        assert _limited(two.url, "tif").status_code == 200
        # Unlimited keys carry no x-ratelimit headers; limits hit are counted per key and limit.
        assert "x-ratelimit-limit-requests" not in _limited(one.url, "team-a").headers
        metrics = httpx.get(f"{one.url}/metrics").text + httpx.get(f"{two.url}/metrics").text
        for owner, limit in (("rpm", "requests_per_minute"), ("tpm", "tokens_per_minute")):
            assert f'agent_bridge_rate_limited_total{{limit="{limit}",owner="{owner}"}} 1.0' in metrics


def _through(redis_url: str, port: int) -> str:
    parsed = urlparse(redis_url)
    credentials, _, _ = parsed.netloc.rpartition("@")
    return parsed._replace(netloc=f"{credentials}@" * bool(credentials) + f"{parsed.hostname}:{port}").geturl()


@pytest.mark.parametrize("setting", ["open", "closed"])
def test_a_redis_outage_follows_on_store_error(
    emulator: ServerThread, redis_url: str, redis_prefix: str, setting: str
) -> None:
    keys = [{"name": "rpm", "key": KEYS["rpm"], "limits": {"requests_per_minute": 100}}]
    with (
        cut_proxy(urlparse(redis_url).port or 6379) as proxy,
        running_bridge(
            emulator.url,
            _through(redis_url, proxy.port),
            redis_prefix,
            keys=keys,
            limits={"on_store_error": setting},
            redis={"connect_timeout": "300ms", "command_timeout": "500ms"},
        ) as bridge,
    ):
        _fresh_minute()
        assert _limited(bridge.url, "rpm").status_code == 200
        # A limited key's turn that fails after its admission still says where the key stands.
        failed = _limited(bridge.url, "rpm", "/fail server_error")
        assert failed.status_code >= 500 and failed.headers["x-ratelimit-limit-requests"] == "100"
        assert failed.headers["x-ratelimit-remaining-requests"] == "98"
        bridge.reset_stats()
        proxy.cut()
        try:
            answer = httpx.post(
                f"{bridge.url}/v1/responses",
                json={"model": "demo-agent", "input": "hi", "store": False},
                headers={"Authorization": f"Bearer {KEYS['rpm']}"},
                timeout=30,
            )
        finally:
            proxy.mend()
        assert answer.status_code == 503, answer.text
        reached_azure = any(r["operation"].startswith("POST") for r in bridge.emulator_requests())
        message = answer.json()["error"]["message"]
        if setting == "open":
            # Let through the limiter: the turn went to Azure (and failed later, on the store it needs).
            assert reached_azure
            assert "limits cannot be checked" not in message
        else:
            assert not reached_azure
            assert "limits cannot be checked" in message
            assert answer.headers["retry-after"] == "1"
