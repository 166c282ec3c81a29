"""Traces: a span per turn (GenAI semantic conventions) continuing the client's trace, child spans for each
request to Azure and the Redis work, and `traceparent` sent on to Azure; in-process (the SDK's in-memory
exporter) and from a bridge process to an OTLP/HTTP collector."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import telemetry
from tests.support.bridge import Bridge, routes_for, running_bridge
from tests.support.leftovers import wait_for
from tests.support.process import bridge_process, write_config
from tests.support.servers import ServerThread

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert telemetry.setup({}, exporter=exporter)
    try:
        yield exporter
    finally:
        telemetry.shutdown()


@pytest.fixture
def traced_bridge(
    spans: InMemorySpanExporter, emulator: ServerThread, redis_url: str, redis_prefix: str
) -> Iterator[Bridge]:
    with running_bridge(emulator.url, redis_url, redis_prefix) as bridge:
        yield bridge


def _turn_span(exporter: InMemorySpanExporter, route: str) -> Any:
    def found() -> Any:
        return next((s for s in exporter.get_finished_spans() if s.name == f"invoke_agent {route}"), None)

    wait_for(lambda: found() is not None, what="the turn's span")
    return found()


def test_a_turn_span_continues_the_clients_trace_into_azure(traced_bridge: Bridge, spans: InMemorySpanExporter) -> None:
    client = traced_bridge.client()
    traced_bridge.reset_stats()
    raw = client.chat.completions.with_raw_response.create(
        model="demo-assistant",
        messages=[{"role": "user", "content": "trace me"}],
        extra_headers={"traceparent": TRACEPARENT},
    )
    completion = raw.parse()
    turn = _turn_span(spans, "demo-assistant")
    assert f"{turn.context.trace_id:032x}" == TRACE_ID
    assert turn.parent is not None and f"{turn.parent.span_id:016x}" == PARENT_ID
    attributes = dict(turn.attributes)
    assert completion.usage is not None
    assert attributes["gen_ai.operation.name"] == "invoke_agent"
    assert attributes["gen_ai.agent.id"] == "asst_demo"
    assert attributes["agent_bridge.route"] == "demo-assistant"
    assert attributes["gen_ai.conversation.id"] == raw.headers["x-thread-id"]
    assert attributes["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens
    assert attributes["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    assert tuple(attributes["gen_ai.response.finish_reasons"]) == ("stop",)
    assert "error.type" not in attributes
    children = [
        s for s in spans.get_finished_spans() if s.parent is not None and s.parent.span_id == turn.context.span_id
    ]
    upstream = [s for s in children if "http.request.method" in s.attributes]
    redis_work = [s for s in children if s.attributes.get("db.system.name") == "redis"]
    assert upstream and all(s.attributes["http.response.status_code"] < 400 for s in upstream)
    assert redis_work  # the thread's record and lock
    # Each request to Azure carried its own span's traceparent, in the client's trace.
    sent = [r["traceparent"] for r in traced_bridge.emulator_requests()]
    assert sent and all(t is not None and t.split("-")[1] == TRACE_ID for t in sent)
    assert {t.split("-")[2] for t in sent} <= {f"{s.context.span_id:016x}" for s in upstream}


def test_a_failed_turn_says_its_error_type(traced_bridge: Bridge, spans: InMemorySpanExporter) -> None:
    client = traced_bridge.client()
    with pytest.raises(openai.APIStatusError):
        client.responses.create(model="demo-agent", input="/fail server_error")
    turn = _turn_span(spans, "demo-agent")
    attributes = dict(turn.attributes)
    assert attributes["gen_ai.agent.id"] == "demo-agent:1"
    assert attributes["gen_ai.conversation.id"].startswith("resp")
    assert attributes["error.type"]
    assert turn.status.status_code.name == "ERROR"
    assert turn.parent is None  # no traceparent from the client: the turn starts its own trace


class Collector:
    """An OTLP/HTTP trace receiver: decodes each export (protobuf) and keeps its spans."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.app = Starlette(routes=[Route("/v1/traces", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.body())
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        return Response(ExportTraceServiceRequest().SerializeToString(), media_type="application/x-protobuf")


def test_a_bridge_process_exports_its_turns_over_otlp(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    collector = Collector()
    server = ServerThread(collector.app).start()
    config = write_config(tmp_path / "config.yaml", routes_for(emulator.url), redis_prefix=redis_prefix)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": server.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    try:
        with bridge_process(config, redis_url, tmp_path, extra_env=env) as running:
            answer = httpx.post(
                f"{running.url}/v1/chat/completions",
                json={"model": "demo-assistant", "messages": [{"role": "user", "content": "hi"}]},
                headers={"traceparent": TRACEPARENT},
                timeout=30,
            )
            assert answer.status_code == 200
            deadline = time.monotonic() + 10
            while not any(s.name == "invoke_agent demo-assistant" for s in collector.spans):
                assert time.monotonic() < deadline, "no turn span reached the collector"
                time.sleep(0.05)
    finally:
        server.stop()
    turn = next(s for s in collector.spans if s.name == "invoke_agent demo-assistant")
    assert turn.trace_id.hex() == TRACE_ID and turn.parent_span_id.hex() == PARENT_ID
    attributes = {a.key: a.value for a in turn.attributes}
    assert attributes["gen_ai.usage.output_tokens"].int_value == answer.json()["usage"]["completion_tokens"]
    assert any(s.parent_span_id == turn.span_id and s.name == "POST" for s in collector.spans)
