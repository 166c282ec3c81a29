"""A turn's trace: its span (GenAI semantic conventions), its upstream requests' and Redis work's child spans,
and W3C trace context in from the client and out to Azure. Off unless `app.telemetry` switched it on.

Every entry point is guarded by the one boolean `ENABLED` at its call site, so tracing off creates no span
object and costs one attribute read per guarded call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from app.core.events import ThreadBound
    from app.core.metering import Account

ENABLED = False
"""Set by `app.telemetry.setup` when the standard OTEL_* environment configures an exporter."""

_tracer: trace.Tracer | None = None
_propagator = TraceContextTextMapPropagator()
_incoming: ContextVar[Context | None] = ContextVar("agent_bridge_trace_incoming", default=None)
_turn: ContextVar[Any] = ContextVar("agent_bridge_turn_span", default=None)
_attempt: ContextVar[Any] = ContextVar("agent_bridge_upstream_span", default=None)


def enable(tracer: trace.Tracer) -> None:
    global ENABLED, _tracer
    _tracer, ENABLED = tracer, True


def disable() -> None:
    global ENABLED, _tracer
    _tracer, ENABLED = None, False


def _get() -> trace.Tracer:
    assert _tracer is not None
    return _tracer


def accept(headers: Mapping[str, str]) -> None:
    """The client's `traceparent`/`tracestate`, if any: the parent of the turn this request opens."""
    _incoming.set(_propagator.extract(headers))


def start_turn(operation: str, account: Account) -> Any:
    """The turn's span, current for the rest of the request's task (and the tasks it spawns)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.request.model": account.route,
        "gen_ai.agent.name": account.agent_name or account.route,
        "agent_bridge.route": account.route,
        "agent_bridge.endpoint": operation,
        "agent_bridge.owner": account.owner,
    }
    if account.agent_id:
        attributes["gen_ai.agent.id"] = account.agent_id
    if account.conversation_id:
        attributes["gen_ai.conversation.id"] = account.conversation_id
    span = _get().start_span(
        f"invoke_agent {attributes['gen_ai.agent.name']}",
        context=_incoming.get(),
        kind=SpanKind.CLIENT,
        attributes=attributes,
    )
    _turn.set(span)
    return span


def bound(span: Any, where: ThreadBound) -> None:
    """The conversation the turn runs on: the thread (Assistants) or the response chain (Foundry v2)."""
    conversation = where.thread_id or where.response_id
    if conversation and not span.attributes.get("gen_ai.conversation.id"):
        span.set_attribute("gen_ai.conversation.id", conversation)
    if where.response_id:
        span.set_attribute("gen_ai.response.id", where.response_id)


def end_turn(span: Any, account: Account, ending: BaseException | None) -> None:
    span.set_attribute("gen_ai.usage.input_tokens", account.input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", account.output_tokens)
    if account.finish_reason:
        span.set_attribute("gen_ai.response.finish_reasons", [account.finish_reason])
    if ending is not None or account.failed is not None:
        from app.core.metering import error_code

        code = account.failed or error_code(ending)
        span.set_attribute("error.type", code)
        span.set_status(Status(StatusCode.ERROR, code))
    span.end()


def outgoing(headers: Mapping[str, str], method: str, url: str) -> dict[str, str]:
    """A request to Azure: its span (a child of the turn's) and the headers with its `traceparent`."""
    parent = _turn.get()
    parts = urlsplit(url)
    span = _get().start_span(
        method,
        context=trace.set_span_in_context(parent) if parent is not None else None,
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": method,
            "url.full": f"{parts.scheme}://{parts.netloc}{parts.path}",
            "server.address": parts.hostname or "",
        },
    )
    _attempt.set(span)
    carrier = dict(headers)
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def answered(status: str) -> None:
    """Azure answered the request whose span is open in this task (`status`: an HTTP status or an error's name)."""
    span = _attempt.get()
    if span is None:
        return
    _attempt.set(None)
    if status.isdigit():
        span.set_attribute("http.response.status_code", int(status))
        if int(status) >= 400:
            span.set_attribute("error.type", status)
            span.set_status(Status(StatusCode.ERROR))
    else:
        span.set_attribute("error.type", status)
        span.set_status(Status(StatusCode.ERROR))
    span.end()


@contextmanager
def redis_span(name: str) -> Iterator[Any]:
    """A child span of the turn's for Redis work (`name`: what the work is)."""
    parent = _turn.get()
    span = _get().start_span(
        name,
        context=trace.set_span_in_context(parent) if parent is not None else None,
        kind=SpanKind.CLIENT,
        attributes={"db.system.name": "redis", "db.operation.name": name},
    )
    try:
        yield span
    except BaseException as exc:
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR))
        raise
    finally:
        span.end()
