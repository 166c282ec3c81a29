"""OpenTelemetry's SDK for the bridge's traces, set up only when the standard OTEL_* environment asks for it.

`OTEL_TRACES_EXPORTER` (`otlp`, `console` or `none`), `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` switch tracing on; `OTEL_SDK_DISABLED=true` keeps it off. The OTLP
exporter is OTLP/HTTP with protobuf and reads the rest of its OTEL_EXPORTER_OTLP_* settings itself; the
batch processor reads OTEL_BSP_*; the resource, OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from app import __version__
from app.core import tracing

log = logging.getLogger("agent_bridge.telemetry")

_provider: Any = None


def configured(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup(environ: Mapping[str, str] | None = None, *, exporter: Any = None) -> bool:
    """Switch tracing on (once per process) when the environment configures it, or with `exporter` (tests).
    True when this call switched it on (its caller then owns `shutdown`)."""
    global _provider
    env = os.environ if environ is None else environ
    if tracing.ENABLED or (exporter is None and not configured(env)):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    resource = Resource.create({"service.name": "agent-bridge", "service.version": __version__})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        kinds = [k.strip() for k in env.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if k.strip()]
        for kind in kinds:
            if kind == "console":
                provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
            elif kind == "otlp":
                protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                if protocol and protocol != "http/protobuf":
                    log.warning("telemetry: OTLP protocol %r is not installed; traces go over http/protobuf", protocol)
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            else:
                log.warning("telemetry: unknown OTEL_TRACES_EXPORTER %r ignored", kind)
    _provider = provider
    tracing.enable(provider.get_tracer("agent_bridge", __version__))
    log.info("telemetry: traces are on")
    return True


def shutdown() -> None:
    """Flush what is batched and switch tracing off (the end of the process, or of a test)."""
    global _provider
    tracing.disable()
    provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()
