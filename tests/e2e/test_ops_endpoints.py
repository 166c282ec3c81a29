"""What operators see: /version, guarded /metrics and /openapi.json, /docs, metric labels, access lines."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import __version__
from tests.support.bridge import managed_identity, routes_for, running_bridge
from tests.support.process import bridge_process, write_config
from tests.support.servers import ServerThread

ADMIN_KEY = "ops-admin-key-0123456789"
USER_KEY = "ops-user-key-0123456789"
KEYS = [
    {"name": "ops", "key": ADMIN_KEY, "admin": True},
    {"name": "team", "key": USER_KEY, "models": ["demo-assistant", "demo-agent"]},
]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_version_names_the_backends_of_the_routes_a_key_may_use(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    with running_bridge(emulator.url, redis_url, redis_prefix, keys=KEYS) as bridge, bridge.http() as http:
        assert http.get("/healthz").json() == {"status": "ok", "version": __version__}
        assert http.get("/version").status_code == 401
        team = http.get("/version", headers=_auth(USER_KEY)).json()
        assert team["version"] == __version__
        assert team["routes"] == {
            "demo-assistant": {"backend": "assistants", "agent": "asst_demo", "upstream": "stream"},
            "demo-agent": {"backend": "foundry", "agent": "demo-agent:1", "upstream": "stream"},
        }
        everything = http.get("/version", headers=_auth(ADMIN_KEY)).json()["routes"]
        assert set(everything) == set(bridge.settings.routes)
        assert everything["poll-assistant"]["upstream"] == "poll"


def test_metrics_and_openapi_require_the_key_the_settings_ask_for(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    server = {"metrics_auth": "admin", "openapi_auth": "key"}
    with (
        running_bridge(emulator.url, redis_url, redis_prefix, keys=KEYS, server=server) as bridge,
        bridge.http() as http,
    ):
        missing = http.get("/metrics")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
        denied = http.get("/metrics", headers=_auth(USER_KEY))
        assert denied.status_code == 403 and denied.json()["error"]["type"] == "permission_error"
        allowed = http.get("/metrics", headers=_auth(ADMIN_KEY))
        assert allowed.status_code == 200 and "agent_bridge_requests_total" in allowed.text
        assert http.get("/openapi.json").status_code == 401
        spec = http.get("/openapi.json", headers=_auth(USER_KEY))
        assert spec.status_code == 200 and "/v1/chat/completions" in spec.json()["paths"]
        assert http.get("/docs").status_code == 404


def test_metrics_and_openapi_are_open_by_default_and_docs_can_be_turned_on(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    with running_bridge(emulator.url, redis_url, redis_prefix, server={"docs": True}) as bridge, bridge.http() as http:
        assert http.get("/metrics").status_code == 200
        assert http.get("/openapi.json").json()["info"]["version"] == __version__
        page = http.get("/docs")
        assert page.status_code == 200 and "/openapi.json" in page.text and "swagger" in page.text.lower()


@pytest.fixture
def bridge_http(emulator: ServerThread, redis_url: str, redis_prefix: str) -> Iterator[httpx.Client]:
    with running_bridge(emulator.url, redis_url, redis_prefix) as bridge, bridge.http() as http:
        yield http


def test_the_model_label_takes_only_configured_names(bridge_http: httpx.Client) -> None:
    for n in range(3):
        answer = bridge_http.post(
            "/v1/chat/completions", json={"model": f"made-up-{n}", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert answer.status_code == 404
    bridge_http.post(
        "/v1/chat/completions", json={"model": "demo-assistant", "messages": [{"role": "user", "content": "hi"}]}
    ).raise_for_status()
    labels = [
        sample.labels
        for family in text_string_to_metric_families(bridge_http.get("/metrics").text)
        for sample in family.samples
        if sample.name == "agent_bridge_requests_total"
    ]
    models = {label["model"] for label in labels}
    assert "unknown" in models and "demo-assistant" in models
    assert not any(m.startswith("made-up") for m in models)
    unknown = next(label for label in labels if label["model"] == "unknown")
    assert unknown["status"] == "404"


def _chat(model: str, text: str) -> tuple[str, dict[str, Any]]:
    return "/v1/chat/completions", {"model": model, "stream": True, "messages": [{"role": "user", "content": text}]}


def _responses(model: str, text: str) -> tuple[str, dict[str, Any]]:
    return "/v1/responses", {"model": model, "stream": True, "input": text}


# Streams that fail after their first byte, on each endpoint and backend: the in-stream error's code.
IN_STREAM = {
    "ops-chat-assistants": _chat("demo-assistant", "/fail rate_limit_exceeded"),
    "ops-chat-foundry": _chat("demo-agent", "/fail server_error"),
    "ops-responses-assistants": _responses("demo-assistant", "/fail server_error"),
    "ops-responses-foundry": _responses("demo-agent", "/fail rate_limit_exceeded"),
    "ops-ok-stream": _chat("demo-assistant", "fine"),
}


def _streamed_error(url: str, request_id: str, path: str, body: dict[str, Any]) -> str | None:
    """The code of the stream's error (chat: an error chunk; Responses: the `error` event), None if none."""
    with httpx.stream("POST", url + path, json=body, headers={"X-Request-Id": request_id}, timeout=30) as answer:
        assert answer.status_code == 200, (request_id, answer.read())
        payloads = [json.loads(line[6:]) for line in answer.iter_lines() if line.startswith("data: {")]
    for payload in payloads:
        if payload.get("type") == "error":
            return str(payload["code"])
        if "type" not in payload and isinstance(payload.get("error"), dict):
            return str(payload["error"]["code"])
    return None


def test_access_lines_carry_error_codes_and_hang_ups_and_no_colour(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yaml", routes_for(emulator.url), redis_prefix=redis_prefix)
    # The bridge's managed identity is the emulator's (project endpoints take Entra tokens only).
    with managed_identity(emulator.url), bridge_process(config, redis_url, tmp_path) as proc:
        lost = httpx.post(
            f"{proc.url}/v1/chat/completions",
            json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-Request-Id": "ops-unknown-model"},
        )
        assert lost.status_code == 404
        bad = httpx.post(
            f"{proc.url}/v1/chat/completions",
            content=b"{",
            headers={"X-Request-Id": "ops-bad-json", "Content-Type": "application/json"},
        )
        assert bad.status_code == 400
        body = {"model": "demo-assistant", "stream": True, "messages": [{"role": "user", "content": "/sleep 3000"}]}
        with (
            httpx.Client(timeout=30) as client,
            client.stream(
                "POST", f"{proc.url}/v1/chat/completions", json=body, headers={"X-Request-Id": "ops-hang-up"}
            ) as stream,
        ):
            assert stream.status_code == 200
            next(stream.iter_raw())  # the first chunk arrived: hang up before the answer is complete
        sent = {name: _streamed_error(proc.url, name, path, body) for name, (path, body) in IN_STREAM.items()}
        # A line is written once the response is over, which can be just after the client has read it.
        deadline = time.monotonic() + 10
        while missing := [n for n in ("ops-hang-up", *sent) if not any(n in line for line in proc.log_lines())]:
            assert time.monotonic() < deadline, f"no access line for {missing}"
            time.sleep(0.1)
        text = proc.log_path.read_text()
    records = {
        r.get("request_id"): r for r in map(json.loads, text.splitlines()) if r["logger"] == "agent_bridge.access"
    }
    assert records["ops-unknown-model"]["error_code"] == "model_not_found"
    assert records["ops-unknown-model"]["status"] == 404
    assert records["ops-bad-json"]["error_code"] == "invalid_json"
    hung_up = records["ops-hang-up"]
    assert hung_up["status"] == 499 and hung_up["client_closed"] is True and hung_up["sent_status"] == 200
    assert sent == {
        "ops-chat-assistants": "rate_limit_exceeded",
        "ops-chat-foundry": "server_error",
        "ops-responses-assistants": "server_error",
        "ops-responses-foundry": "rate_limit_exceeded",
        "ops-ok-stream": None,
    }
    for name, code in sent.items():
        # An error after the first byte: the line keeps the status sent and names the event's code.
        assert (records[name]["status"], records[name].get("error_code")) == (200, code), name
    assert "\x1b[" not in text and "color_message" not in text
    assert any(json.loads(line)["logger"].startswith("uvicorn") for line in text.splitlines())
