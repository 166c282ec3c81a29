"""The Grafana dashboard shipped with the Helm chart queries only metrics a running bridge exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.bridge import Bridge
from tests.support.helm_render import render

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "agent-bridge"
DASHBOARD = CHART / "dashboards" / "agent-bridge.json"
_SAMPLES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _queried(dashboard: dict[str, object]) -> set[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]  # type: ignore[attr-defined]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]  # type: ignore[index]
    return {name for expr in exprs for name in re.findall(r"\b(agent_bridge_\w+)", expr)}


def _exported(metrics_text: str) -> set[str]:
    """Every sample name the families on /metrics can have (a labelled family with no child yet still counts)."""
    return {
        family.name + suffix
        for family in text_string_to_metric_families(metrics_text)
        for suffix in _SAMPLES.get(family.type, ("",))
    }


def test_every_metric_the_dashboard_queries_is_exported(bridge: Bridge) -> None:
    client = bridge.client()
    client.chat.completions.create(model="demo-assistant", messages=[{"role": "user", "content": "hi"}])
    exported = _exported(httpx.get(f"{bridge.url}/metrics").text)
    dashboard = json.loads(DASHBOARD.read_text())
    queried = _queried(dashboard)
    assert len(queried) >= 10
    assert queried - exported == set()
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("turns", "latency", "errors by code", "tokens", "limits hit", "janitor backlog", "migration"):
        assert topic in titles


def test_the_chart_ships_the_dashboard_as_a_configmap() -> None:
    keyed = {"keysFromSecret": True}  # the chart renders only with keys (or open mode asked for)
    assert not [o for o in render(CHART, keyed) if o["metadata"]["name"].endswith("-dashboard")]  # opt-in
    objects = render(CHART, {**keyed, "grafanaDashboard": {"enabled": True}})
    (configmap,) = [o for o in objects if o["metadata"]["name"] == "bridge-dashboard"]
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["agent-bridge.json"]) == json.loads(DASHBOARD.read_text())
