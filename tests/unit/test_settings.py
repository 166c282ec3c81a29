"""Config loading: env references, validation messages that name the key, check-config."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import cli
from app.errors import ConfigError
from app.settings import config_warnings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_shipped_config_is_valid() -> None:
    settings = load_settings(ROOT / "config.yaml", env={})
    assert set(settings.routes) == {
        "demo-assistant",
        "flights-assistant",
        "demo-agent",
        "flights-agent",
        "demo-endpoint",
        "flights-endpoint",
    }
    assert settings.routes["demo-endpoint"].backend == "endpoint"
    assert settings.routes["flights-assistant"].assistant_id == "asst_flights"
    assert settings.routes["flights-agent"].agent is not None
    assert settings.routes["flights-agent"].agent.name == "flights-demo"
    assert settings.routes["demo-assistant"].endpoint == "http://127.0.0.1:8100"
    assert settings.redis_url is None


def test_env_references_with_and_without_defaults(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "routes:\n  a:\n    endpoint: ${EP:-http://fallback}\n    assistant_id: asst_x\n"
        "    auth: {type: api_key, api_key: '${KEY}'}\n",
    )
    settings = load_settings(path, env={"KEY": "s3cret"})
    assert settings.routes["a"].endpoint == "http://fallback"
    assert settings.routes["a"].auth.api_key == "s3cret"
    settings = load_settings(path, env={"KEY": "k", "EP": "https://res.openai.azure.com"})
    assert settings.routes["a"].endpoint == "https://res.openai.azure.com"
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert "routes.a.auth.api_key" in str(info.value) and "KEY" in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "routes:\n  a:\n    endpoint: http://x\n    assistant_id: abc\n    auth: {type: api_key, api_key: k}\n",
            "routes.a.assistant_id: assistant_id must start with 'asst_'",
        ),
        (
            "routes:\n  a:\n    endpoint: ftp://x\n    assistant_id: asst_1\n    auth: {type: api_key, api_key: k}\n",
            "routes.a.endpoint: endpoint must be an http(s) URL",
        ),
        (
            "routes:\n  a:\n    endpoint: http://x\n    agent: {name: n}\n    auth: {type: api_key, api_key: k}\n",
            "needs a project endpoint",
        ),
        (
            "routes:\n  a:\n    endpoint: http://x\n    auth: {type: api_key, api_key: k}\n",
            "exactly one of assistant_id",
        ),
        (
            "routes:\n  a:\n    endpoint: http://x\n    assistant_id: asst_1\n    auth: {type: api_key}\n",
            "routes.a.auth",
        ),
        (
            "routes:\n  a:\n    endpoint: http://x\n    assistant_id: asst_1\n    auth: {type: api_key, api_key: k}\n"
            "    colour: red\n",
            "routes.a.colour: unknown key",
        ),
        ("threads: {ttl: forever}\n", "threads.ttl: expected a duration"),
        ("- a list\n", "the top level must be a mapping"),
        ("routes: [\n", "not valid YAML"),
    ],
)
def test_invalid_configs_name_the_key_and_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text), env={})
    assert expected in str(info.value)


def test_durations(tmp_path: Path) -> None:
    path = _write(tmp_path, "threads: {ttl: 2h}\nlimits: {lock_wait: 250ms}\n")
    settings = load_settings(path, env={})
    assert settings.threads.ttl == 7200
    assert settings.limits.lock_wait == 0.25


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_BRIDGE_OPEN_MODE", "true")  # the shipped config has no keys
    assert cli.main(["check-config", "--config", str(ROOT / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "OK, 6 routes" in out and "flights-agent: foundry flights-demo:1" in out
    assert "flights-endpoint: endpoint flights-demo" in out
    bad = _write(tmp_path, "routes:\n  a:\n    endpoint: http://x\n")
    with pytest.raises(SystemExit) as info:
        cli.main(["check-config", "--config", str(bad)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid configuration" in err and "routes.a" in err


PROJECT = "https://acct.services.ai.azure.com/api/projects/p"


def test_a_key_on_a_project_endpoint_is_a_warning_not_a_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(
        tmp_path,
        "open_mode: true\nroutes:\n"
        f"  keyed:\n    endpoint: {PROJECT}\n    agent: {{name: a}}\n    auth: {{type: api_key, api_key: k}}\n"
        f"  entra:\n    endpoint: {PROJECT}\n    agent: {{name: b, version: '2'}}\n    auth: {{type: entra}}\n"
        "  resource:\n    endpoint: https://r.openai.azure.com\n    assistant_id: asst_x\n"
        "    auth: {type: api_key, api_key: k}\n",
    )
    settings = load_settings(config, env={})
    assert settings.routes["keyed"].agent is not None and settings.routes["keyed"].agent.version is None
    [warning] = config_warnings(settings)
    assert warning.startswith("routes.keyed.auth: Agent Service takes Entra ID; a key works only through a gateway")
    assert cli.main(["check-config", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert "keyed: foundry a:latest" in captured.out
    assert "warning:" in captured.err and "routes.keyed.auth" in captured.err and "routes.entra" not in captured.err


def test_migrate_from_defaults_to_the_route_and_belongs_on_v2_routes() -> None:
    from app.settings import load_settings as load

    project = "https://res.services.ai.azure.com/api/projects/p"
    auth = {"type": "entra"}
    settings = load(
        None,
        env={},
        routes={
            "r": {"endpoint": project, "agent": {"name": "a"}, "auth": auth, "migrate_from": {"assistant_id": "asst_x"}}
        },
    )
    route = settings.routes["r"]
    assert route.migrate_from is not None and route.migrate_from.keep_source == 7 * 86400
    source = route.source_route()
    assert source is not None
    assert (source.endpoint, source.assistant_id, source.auth, source.backend) == (
        project,
        "asst_x",
        route.auth,
        "assistants",
    )
    with pytest.raises(ConfigError, match="migrate_from"):
        load(
            None,
            env={},
            routes={
                "r": {
                    "endpoint": project,
                    "assistant_id": "asst_y",
                    "auth": auth,
                    "migrate_from": {"assistant_id": "asst_x"},
                }
            },
        )


def test_an_agent_endpoint_route_names_no_version(tmp_path: Path) -> None:
    """The endpoint serves the version the agent publishes: a version next to endpoint_scoped is a config error."""
    path = _write(
        tmp_path,
        "routes:\n  e:\n    endpoint: https://a.services.ai.azure.com/api/projects/p\n"
        "    agent: {name: x, version: '2', endpoint_scoped: true}\n    auth: {type: entra}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert "routes.e.agent: an agent endpoint serves the version the agent publishes" in str(info.value)
