"""The Helm chart renders the objects a platform team expects (helm is not installable here, so the chart is
rendered by tests/support/helm_render, which fails on any template action it does not know)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.settings import load_settings
from tests.support.helm_render import RenderFailed, render

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "agent-bridge"


KEYED = {
    "config": {"keys": [{"name": "team-a", "sha256": "ab" * 32}, {"name": "ops", "sha256": "cd" * 32, "admin": True}]}
}


def _render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart with client keys (without them it refuses to render) and these values over them."""
    merged = {**KEYED, **(values or {})}
    merged["config"] = {**KEYED["config"], **(values or {}).get("config", {})}
    return render(CHART, merged)


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def test_the_default_render_has_every_object_with_probes_grace_and_identity(tmp_path: Path) -> None:
    objects = _render()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "ServiceAccount"]
    )
    deployment = _one(objects, "Deployment")
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert {p: container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {
        "startupProbe": "/readyz",
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
    }
    config_text = _one(objects, "ConfigMap")["data"]["config.yaml"]
    (tmp_path / "config.yaml").write_text(config_text)
    settings = load_settings(tmp_path / "config.yaml", env={})  # the chart's config is one the bridge accepts
    assert pod["spec"]["terminationGracePeriodSeconds"] > settings.shutdown_grace
    assert len(pod["metadata"]["annotations"]["checksum/config"]) == 64
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert _one(objects, "ServiceAccount")["metadata"]["annotations"] == {"azure.workload.identity/client-id": ""}
    assert container["envFrom"] == [{"secretRef": {"name": "agent-bridge"}}]
    assert pod["spec"]["serviceAccountName"] == "bridge"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert _one(objects, "Service")["spec"]["selector"] == selector
    assert _one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    assert _one(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_a_config_change_changes_the_checksum_and_options_switch_objects() -> None:
    def checksum(objects: list[dict[str, Any]]) -> str:
        return str(_one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    before = checksum(_render())
    after = checksum(_render({"config": {"threads": {"ttl": "1d"}}}))
    assert before != after
    objects = _render(
        {
            "serviceMonitor": {"enabled": True},
            "ingress": {"enabled": True},
            "autoscaling": {"enabled": False},
            "workloadIdentity": {"enabled": False},
        }
    )
    kinds = {o["kind"] for o in objects}
    assert {"ServiceMonitor", "Ingress"} <= kinds and "HorizontalPodAutoscaler" not in kinds
    pod = _one(objects, "Deployment")["spec"]["template"]
    assert "azure.workload.identity/use" not in pod["metadata"]["labels"]
    endpoint = _one(objects, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics" and "authorization" not in endpoint


def test_a_protected_metrics_endpoint_gets_its_key_from_a_secret() -> None:
    secret = {"name": "bridge-metrics", "key": "admin-key"}
    values = {"serviceMonitor": {"enabled": True, "interval": "15s", "bearerTokenSecret": secret}}
    values["config"] = {"server": {"metrics_auth": "admin"}}
    objects = _render(values)
    endpoint = _one(objects, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": secret}
    assert "metrics_auth: admin" in _one(objects, "ConfigMap")["data"]["config.yaml"]


def test_without_keys_or_the_explicit_setting_the_chart_does_not_render(tmp_path: Path) -> None:
    with pytest.raises(RenderFailed, match=r"no client keys\. Set config\.keys") as refused:
        render(CHART)
    assert "keysFromSecret: true" in str(refused.value) and "config.open_mode: true" in str(refused.value)
    with pytest.raises(RenderFailed):
        render(CHART, {"config": {"keys": []}, "keysFromSecret": False})
    for values in ({"keysFromSecret": True}, {"config": {"open_mode": True}}):
        config_text = _one(render(CHART, values), "ConfigMap")["data"]["config.yaml"]
        (tmp_path / "config.yaml").write_text(config_text)
        settings = load_settings(tmp_path / "config.yaml", env={})
        assert settings.open_mode == ("config" in values) and not settings.keys
    keyed = _one(_render(), "ConfigMap")["data"]["config.yaml"]
    (tmp_path / "config.yaml").write_text(keyed)
    assert [k.name for k in load_settings(tmp_path / "config.yaml", env={}).keys] == ["team-a", "ops"]


def test_an_unknown_template_action_fails_the_render(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("name: x\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("a: 1\n")
    (chart / "templates" / "x.yaml").write_text("k: {{ tpl .Values.a . }}\n")
    with pytest.raises(ValueError, match="unsupported"):
        render(chart)


def test_the_chart_keeps_idle_client_connections_longer_than_gateways_do(tmp_path: Path) -> None:
    config_text = _one(_render(), "ConfigMap")["data"]["config.yaml"]
    (tmp_path / "config.yaml").write_text(config_text)
    assert load_settings(tmp_path / "config.yaml", env={}).server.keepalive_timeout > 60
