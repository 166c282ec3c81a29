"""Run it like a service: packaging, metrics, JSON logs, graceful shutdown, several replicas."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.bridge import Bridge, routes_for
from tests.support.chat import answered, turn
from tests.support.process import bridge_process, write_config
from tests.support.servers import ServerThread

ROOT = Path(__file__).resolve().parents[2]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
USER_KEY = "service-test-key-0123456789"


def _config(tmp_path: Path, emulator: ServerThread, redis_prefix: str, **settings: Any) -> Path:
    """A `config.yaml` for a bridge process: the test routes against the emulator, this test's prefix."""
    return write_config(tmp_path / "config.yaml", routes_for(emulator.url), redis_prefix=redis_prefix, **settings)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_a_scripted_session(bridge: Bridge) -> None:
    client = bridge.client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "/tool lookup {}"}]
    first = turn(client, stream=False, model="demo-assistant", messages=messages, tools=TOOLS)
    messages += answered(first, "42")
    turn(client, stream=True, model="demo-assistant", messages=messages, tools=TOOLS)
    # A Foundry v2 agent calls only the tools its version declares: the flights agent's own.
    response = client.responses.create(
        model="flights-agent",
        input="/tool get_flights {}",
        tools=[{"type": "function", "name": "get_flights", "parameters": {"type": "object"}}],
    )
    fc = response.output[0]
    client.responses.create(
        model="flights-agent",
        previous_response_id=response.id,
        input=[{"type": "function_call_output", "call_id": fc.call_id, "output": "7"}],
    )
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(
            model="demo-assistant", messages=[{"role": "user", "content": "/fail server_error"}]
        )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    text = httpx.get(f"{bridge.url}/metrics").text
    samples = _samples(text)
    chat = "/v1/chat/completions"
    assert _value(samples, "agent_bridge_requests_total", endpoint=chat, model="demo-assistant", status="200") == 2
    assert _value(samples, "agent_bridge_requests_total", endpoint=chat, model="demo-assistant", status="502") == 1
    assert _value(samples, "agent_bridge_requests_total", endpoint=chat, model="unknown", status="404") == 1
    assert (
        _value(samples, "agent_bridge_requests_total", endpoint="/v1/responses", model="flights-agent", status="200")
        == 2
    )
    assert _value(samples, "agent_bridge_runs_total", backend="assistants", status="requires_action") == 1
    assert _value(samples, "agent_bridge_runs_total", backend="assistants", status="completed") == 1
    assert _value(samples, "agent_bridge_runs_total", backend="assistants", status="failed") == 1
    assert _value(samples, "agent_bridge_runs_total", backend="foundry", status="completed") == 2
    assert _value(samples, "agent_bridge_tool_rounds_total", backend="assistants") == 1
    assert _value(samples, "agent_bridge_tool_rounds_total", backend="foundry") == 1
    assert _value(samples, "agent_bridge_threads_created_total") == 2
    assert _value(samples, "agent_bridge_threads_live") == 1  # the failed first turn deleted its thread
    assert _value(samples, "agent_bridge_upstream_requests_total", operation="create_thread_and_run", status="200") == 2
    assert _value(samples, "agent_bridge_upstream_requests_total", operation="submit_tool_outputs", status="200") == 1
    assert _value(samples, "agent_bridge_upstream_requests_total", operation="create_response", status="200") == 2
    assert _value(samples, "agent_bridge_request_duration_seconds_count", endpoint=chat) == 4
    assert _value(samples, "agent_bridge_overhead_seconds_count", endpoint=chat) == 4
    bridge.fault(path=r"/threads/runs$", status=503, count=1)
    turn(client, stream=False, model="demo-assistant", messages=[{"role": "user", "content": "retry me"}])
    samples = _samples(httpx.get(f"{bridge.url}/metrics").text)
    assert _value(samples, "agent_bridge_upstream_retries_total", operation="create_thread_and_run") == 1
    assert _value(samples, "agent_bridge_upstream_requests_total", operation="create_thread_and_run", status="503") == 1


def test_json_access_log_carries_the_request_id_and_no_secrets(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, emulator, redis_prefix, keys=[{"name": "team", "key": USER_KEY}])
    with bridge_process(config, redis_url, tmp_path) as proc:
        headers = {"Authorization": f"Bearer {USER_KEY}", "X-Request-Id": "client-chose-this-id"}
        body = {"model": "demo-assistant", "messages": [{"role": "user", "content": "very private words"}]}
        answer = httpx.post(f"{proc.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
        assert answer.status_code == 200 and answer.headers["x-request-id"] == "client-chose-this-id"
        httpx.post(f"{proc.url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer wrong-key"})
        time.sleep(0.3)
        lines = proc.log_lines()
    records = [json.loads(line) for line in lines]
    access = [r for r in records if r["logger"] == "agent_bridge.access"]
    mine = next(r for r in access if r["request_id"] == "client-chose-this-id")
    assert mine["status"] == 200 and mine["model"] == "demo-assistant" and mine["owner"] == "team"
    assert mine["thread_id"] == answer.headers["x-thread-id"]
    assert mine["total_ms"] >= mine["upstream_ms"] > 0
    assert any(r["status"] == 401 for r in access)
    text = "\n".join(lines)
    for secret in (USER_KEY, "wrong-key", "test-key", "very private words"):
        assert secret not in text


def test_the_wheel_installs_and_serves(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """What the Dockerfile does: build the wheel, install it in a fresh environment, run `agent-bridge serve`."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=180,
    )
    (wheel,) = dist.glob("agent_bridge-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    # The dependencies come from the test environment; the package itself only from the wheel.
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "fastapi").exists())
    (site / "deps.pth").write_text(deps + "\n")
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)], check=True, timeout=120)
    config = _config(tmp_path, emulator, redis_prefix)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    with bridge_process(config, redis_url, workdir, python=str(venv / "bin" / "agent-bridge")) as proc:
        reply = httpx.post(
            f"{proc.url}/v1/chat/completions",
            json={"model": "demo-assistant", "messages": [{"role": "user", "content": "from the wheel"}]},
            timeout=30,
        )
        assert reply.json()["choices"][0]["message"]["content"] == "Echo: from the wheel"
    assert "app" not in {p.name for p in site.iterdir() if p.is_symlink()}
    assert (site / "app" / "emulator" / "app.py").exists()


def test_compose_file_and_dockerfile_hold_together() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "bridge", "emulator"}
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    assert any(v.startswith("redis-data:") for v in services["redis"]["volumes"])
    assert "redis-data" in compose["volumes"]
    assert services["emulator"]["profiles"] == ["demo"]
    # Both services run the one image the project builds; neither may need a registry pull.
    assert services["emulator"]["build"] == services["bridge"]["build"] == "."
    assert services["bridge"]["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert services["bridge"]["depends_on"]["redis"]["condition"] == "service_healthy"
    # Entra routes in compose get tokens from the emulator's managed identity, as `dev` arranges.
    identity = services["bridge"]["environment"]
    assert identity["IDENTITY_ENDPOINT"].endswith("-http://emulator:8100/msi/token}")
    assert identity["IDENTITY_HEADER"].startswith("${IDENTITY_HEADER-")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") == 2 and "USER bridge" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert 'ENTRYPOINT ["agent-bridge", "serve"]' in dockerfile
    env_example = (ROOT / ".env.example").read_text()
    assert "AZURE_EMULATOR_URL" in env_example and "AGENT_BRIDGE_API_KEYS" in env_example


def _stream(
    url: str, body: dict[str, Any], headers: dict[str, str], out: dict[str, Any], first: threading.Event
) -> None:
    try:
        with (
            httpx.Client(timeout=30) as c,
            c.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as r,
        ):
            out["thread_id"] = r.headers.get("x-thread-id")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    out.setdefault("lines", []).append(line[6:])
                    if '"content":"Echo' in line:
                        first.set()
    except httpx.HTTPError as exc:
        out["error"] = repr(exc)
    finally:
        first.set()


@pytest.mark.parametrize(("grace", "delay_ms", "finishes"), [("4s", 100, True), ("1s", 600, False)])
def test_sigterm_lets_turns_finish_within_the_grace_then_cancels(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path, grace: str, delay_ms: int, finishes: bool
) -> None:
    config = _config(tmp_path, emulator, redis_prefix, shutdown_grace=grace)
    with bridge_process(config, redis_url, tmp_path) as proc:
        with httpx.Client(base_url=emulator.url) as c:
            c.post("/_emulator/config", json={"token_delay_ms": delay_ms}).raise_for_status()
        words = " ".join(f"w{i}" for i in range(12))
        out: dict[str, Any] = {}
        first = threading.Event()
        body = {"model": "demo-assistant", "stream": True, "messages": [{"role": "user", "content": words}]}
        reader = threading.Thread(target=_stream, args=(proc.url, body, {}, out, first))
        reader.start()
        assert first.wait(10)
        started = time.monotonic()
        proc.terminate()
        reader.join(20)
        proc.proc.wait(20)
        elapsed = time.monotonic() - started
    with httpx.Client(base_url=emulator.url) as c:
        c.post("/_emulator/config", json={"token_delay_ms": 0}).raise_for_status()
        thread = next(t for t in c.get("/_emulator/threads").json()["data"] if t["id"] == out["thread_id"])
    run_status = thread["runs"][-1]["status"]
    if finishes:
        assert out["lines"][-1] == "[DONE]"
        assert run_status == "completed"
        assert elapsed < 4
    else:
        # Past the grace the stream ends in OpenAI's format: an in-stream error, then [DONE].
        assert out["lines"][-1] == "[DONE]"
        assert json.loads(out["lines"][-2])["error"]["code"] == "shutting_down"
        assert run_status == "cancelled"
        assert elapsed < 5
    import redis

    r = redis.Redis.from_url(redis_url)
    assert r.exists(f"{redis_prefix}lock:thread:{out['thread_id']}") == 0
    r.close()


def test_two_replicas_share_conversations_and_tool_calls(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, emulator, redis_prefix, threads={"ttl": "2s", "sweep_interval": "200ms"})
    with bridge_process(config, redis_url, tmp_path) as one, bridge_process(config, redis_url, tmp_path) as two:
        a = openai.OpenAI(base_url=f"{one.url}/v1", api_key="x", max_retries=0)
        b = openai.OpenAI(base_url=f"{two.url}/v1", api_key="x", max_retries=0)
        # A tool call issued by one replica is answered through the other.
        messages: list[dict[str, Any]] = [{"role": "user", "content": "/tool lookup {}"}]
        first = turn(a, stream=False, model="demo-assistant", messages=messages, tools=TOOLS)
        messages += answered(first, "across")
        done = turn(b, stream=True, model="demo-assistant", messages=messages, tools=TOOLS)
        assert done.text == "Tool lookup returned: across"
        # A conversation alternating between the replicas keeps one thread.
        history: list[dict[str, Any]] = []
        threads = set()
        for n, client in enumerate([a, b, a, b]):
            history.append({"role": "user", "content": f"alternate {n}"})
            raw = client.chat.completions.with_raw_response.create(model="demo-assistant", messages=history)
            threads.add(raw.headers["x-thread-id"])
            history.append({"role": "assistant", "content": raw.parse().choices[0].message.content})
        assert len(threads) == 1
        a.close()
        b.close()
        # Both janitors run; each expired thread is deleted exactly once.
        with httpx.Client(base_url=emulator.url) as c:
            deadline = time.monotonic() + 20
            while not all(t["deleted"] for t in c.get("/_emulator/threads").json()["data"]):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            deletes = [r for r in c.get("/_emulator/stats").json()["requests"] if r["method"] == "DELETE"]
        assert len(deletes) == 2 and all(r["status"] == 200 for r in deletes)
