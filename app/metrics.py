"""Prometheus metrics: one registry per app (no process-wide globals), shared by every component.

With several uvicorn workers, set PROMETHEUS_MULTIPROC_DIR to an empty directory: every worker then
writes its samples there and `/metrics` aggregates them (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
from typing import Any, Self

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client import Counter as _PromCounter
from prometheus_client import Histogram as _PromHistogram
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25)


class _CachedLabels:
    """`labels(...)` children cached by their values (mixed in before a prometheus_client metric)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._children: dict[tuple[object, ...], Self] = {}

    def labels(self, *labelvalues: object, **labelkwargs: object) -> Self:
        if labelkwargs:
            return super().labels(*labelvalues, **labelkwargs)  # type: ignore[misc, no-any-return]
        child = self._children.get(labelvalues)
        if child is None:
            child = self._children[labelvalues] = super().labels(*labelvalues)  # type: ignore[misc]
        return child  # type: ignore[no-any-return]


class Counter(_CachedLabels, _PromCounter):
    """A counter whose `labels(...)` children are cached by their values.

    prometheus_client checks and rebuilds the label tuple under a lock on every `labels` call (a dozen
    Python calls); a request counts half a dozen of them. The children are never removed here, so the
    cache holds exactly what prometheus_client's own `_metrics` holds.
    """


class Histogram(_CachedLabels, _PromHistogram):
    """A histogram whose `labels(...)` children are cached by their values (see `Counter`)."""


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # In multiprocess mode the samples live in files; this registry only declares them.
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "agent_bridge_requests",
            "Client requests by endpoint, model and status.",
            ["endpoint", "model", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "agent_bridge_request_duration_seconds",
            "Whole request time, first byte in to last byte out.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead_seconds = Histogram(
            "agent_bridge_overhead_seconds",
            "Time spent in the bridge itself (request time minus waiting on Azure).",
            ["endpoint"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.upstream_requests = Counter(
            "agent_bridge_upstream_requests",
            "Requests to Azure by operation and status.",
            ["operation", "status"],
            registry=r,
        )
        self.upstream_retries = Counter(
            "agent_bridge_upstream_retries",
            "Requests to Azure repeated after a retryable failure.",
            ["operation"],
            registry=r,
        )
        self.runs = Counter(
            "agent_bridge_runs",
            "Runs (Assistants) and responses (Foundry v2) by final status.",
            ["backend", "status"],
            registry=r,
        )
        self.tool_rounds = Counter(
            "agent_bridge_tool_rounds",
            "Tool outputs handed to a waiting run or response.",
            ["backend"],
            registry=r,
        )
        self.threads_created = Counter("agent_bridge_threads_created", "Threads created on Azure.", registry=r)
        self.threads_deleted = Counter(
            "agent_bridge_threads_deleted", "Threads deleted on Azure, by who deleted them.", ["by"], registry=r
        )
        self.thread_deletions_failed = Counter(
            "agent_bridge_thread_deletions_failed", "Deletions Azure refused or failed (retried later).", registry=r
        )
        self.threads_live = Gauge(
            "agent_bridge_threads_live",
            "Threads in the registry (read from Redis at scrape time).",
            registry=r,
            multiprocess_mode="max",
        )
        self.janitor_sweeps = Counter(
            "agent_bridge_janitor_sweeps",
            "Janitor sweeps, by whether this replica held the lease.",
            ["ran"],
            registry=r,
        )
        self.janitor_backlog = Gauge(
            "agent_bridge_janitor_backlog",
            "Threads idle past the TTL and not yet deleted (read by each janitor sweep).",
            registry=r,
            multiprocess_mode="max",
        )
        self.janitor_stranded = Gauge(
            "agent_bridge_janitor_stranded",
            "Expired threads the janitor cannot delete: their route is no longer configured.",
            registry=r,
            multiprocess_mode="max",
        )
        self.store_errors = Counter("agent_bridge_store_errors", "Redis operations that failed.", registry=r)
        self.carried = Counter(
            "agent_bridge_conversations_carried",
            "Assistants threads carried to Foundry v2 conversations, by outcome (carried, failed).",
            ["outcome"],
            registry=r,
        )
        self.carry_pending = Gauge(
            "agent_bridge_conversations_carry_pending",
            "Threads of migrating routes not carried yet (set by each bulk migration's plan and progress).",
            registry=r,
            multiprocess_mode="max",
        )
        # Usage per key and route (owner and route labels: configured names, else "other"; app/core/metering.py).
        self.key_turns = Counter("agent_bridge_key_turns", "Turns by owner and route.", ["owner", "route"], registry=r)
        self.key_tokens = Counter(
            "agent_bridge_key_tokens", "Azure's tokens by owner, route, kind.", ["owner", "route", "kind"], registry=r
        )
        self.key_errors = Counter(
            "agent_bridge_key_errors", "Turns that ended in an error, by code.", ["owner", "route", "code"], registry=r
        )
        self.key_tool_rounds = Counter(
            "agent_bridge_key_tool_rounds", "Turns that answered tool calls.", ["owner", "route"], registry=r
        )
        self.key_background_turns = Counter(
            "agent_bridge_key_background_turns", "Turns run as background responses.", ["owner", "route"], registry=r
        )
        self.rate_limited = Counter(
            "agent_bridge_rate_limited", "Turns refused by a key's limit.", ["owner", "limit"], registry=r
        )
        self.redis_evicting = Gauge(
            "agent_bridge_redis_evicting",
            "Redis's maxmemory-policy evicts keys: 1 evicting, 0 noeviction, -1 unknown (CONFIG refused).",
            registry=r,
            multiprocess_mode="max",
        )
        self.store_lost = Gauge(
            "agent_bridge_store_lost",
            "1 while the registry marker says the state store lost its data (until an operator restores it).",
            registry=r,
            multiprocess_mode="max",
        )
        self.store_losses = Counter(
            "agent_bridge_store_losses", "Losses of the state store this process detected (once each).", registry=r
        )

    def render(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
