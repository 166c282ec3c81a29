"""The operator CLI as people run it: the installed `agent-bridge` command, in a subprocess."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from app import __version__, cli
from tests.support.bridge import routes_for, running_bridge
from tests.support.servers import ServerThread

ROOT = Path(__file__).resolve().parents[2]
COMMAND = str(Path(sys.executable).parent / "agent-bridge")


def agent_bridge(*args: str, env: Mapping[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
    """The command, with `env` over this process's environment (a None value removes that variable)."""
    merged = {**os.environ, **(env or {})}
    environ = {name: value for name, value in merged.items() if value is not None}
    return subprocess.run([COMMAND, *args], capture_output=True, text=True, timeout=60, check=False, env=environ)


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _parsers(child, (*path, name))
    return found


def test_version() -> None:
    done = agent_bridge("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"agent-bridge {__version__}"


def test_every_flag_has_help_and_its_default_is_shown() -> None:
    parsers = _parsers(cli.parser())
    assert len(parsers) >= 10  # root, serve, emulator, dev, threads (+5 actions), check-config
    for path, parser in parsers:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(choice.help for choice in action._choices_actions), path
                continue
            assert action.help, f"{' '.join(path)} {action.option_strings or action.dest} has no help"
        done = agent_bridge(*path, "--help")
        assert done.returncode == 0, done.stderr
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert f"(default: {action.default})" in " ".join(done.stdout.split()), (path, action.dest)
    serve_help = agent_bridge("serve", "--help").stdout
    assert "{critical,error,warning,info,debug}" in serve_help
    bad = agent_bridge("serve", "--log-level", "loud")
    assert bad.returncode == 2 and "invalid choice: 'loud'" in bad.stderr


def test_check_config_reports_every_problem_in_one_run(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "redis_prefx: x\n"
        "threads: {ttl: forever, sweep_intervall: 1s}\n"
        "routes:\n"
        "  a:\n"
        "    endpoint: ${UNSET_ENDPOINT}\n"
        "    assistant_id: abc\n"
        "    auth: {type: api_key, api_key: '${UNSET_KEY}'}\n"
        "    timout: 5s\n"
        "  b:\n"
        "    endpoint: http://x/api/projects/p\n"
        "    agent: {name: n, versoin: '1'}\n"
        "    auth: {type: api_kee}\n"
    )
    done = agent_bridge("check-config", "--config", str(config), env={"UNSET_ENDPOINT": "", "UNSET_KEY": ""})
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == "agent-bridge: invalid configuration (9 problems)"
    expected = [
        "routes.a.endpoint: environment variable UNSET_ENDPOINT is not set",
        "routes.a.auth.api_key: environment variable UNSET_KEY is not set",
        "routes.a.assistant_id: assistant_id must start with 'asst_', got 'abc'",
        "routes.a.timout: unknown key (did you mean 'timeout'?)",
        "routes.b.agent.versoin: unknown key (did you mean 'version'?)",
        "routes.b.auth.type: Input should be 'api_key' or 'entra'",
        "threads.ttl: expected a duration such as 30s, 5m or 7d, got 'forever'",
        "threads.sweep_intervall: unknown key (did you mean 'sweep_interval'?)",
        "redis_prefx: unknown key (did you mean 'redis_prefix'?)",
    ]
    for text in expected:
        assert any(text in line for line in lines), (text, lines)
    # An unset variable is reported once, not again as the invalid value it leaves behind.
    assert not any("endpoint must be an http(s) URL" in line for line in lines)
    assert all(line.startswith(f"{config}: ") for line in lines[1:])


@pytest.mark.parametrize("text", ["", "threads: {ttl: 1h}\n", "routes: {}\n"])
def test_check_config_without_routes_is_an_error(tmp_path: Path, text: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    done = agent_bridge("check-config", "--config", str(config))
    assert done.returncode == 2
    assert "routes: no route is configured" in done.stderr


def test_check_config_accepts_the_shipped_config_with_open_mode_asked_for() -> None:
    done = agent_bridge("check-config", "--config", str(ROOT / "config.yaml"), env={"AGENT_BRIDGE_OPEN_MODE": "true"})
    assert done.returncode == 0, done.stderr
    assert "OK, 6 routes" in done.stdout and "demo-assistant: assistants asst_demo" in done.stdout


def test_without_keys_or_open_mode_the_shipped_config_does_not_serve_and_says_what_to_set(tmp_path: Path) -> None:
    clean: dict[str, str | None] = {"AGENT_BRIDGE_OPEN_MODE": None, "AGENT_BRIDGE_API_KEYS": None}
    checked = agent_bridge("check-config", "--config", str(ROOT / "config.yaml"), env=clean)
    served = agent_bridge("serve", "--config", str(ROOT / "config.yaml"), "--port", "0", env=clean)
    for done in (checked, served):
        assert done.returncode == 2, done.stderr
        assert "no client keys are configured" in done.stderr
        assert "`keys`" in done.stderr and "AGENT_BRIDGE_API_KEYS" in done.stderr
        assert "open_mode: true" in done.stderr and "AGENT_BRIDGE_OPEN_MODE=true" in done.stderr
    keyed = agent_bridge(
        "check-config", "--config", str(ROOT / "config.yaml"), env={**clean, "AGENT_BRIDGE_API_KEYS": "a:" + "k" * 20}
    )
    assert keyed.returncode == 0, keyed.stderr


def test_threads_list_prints_a_table_by_default_and_json_for_scripts(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    with running_bridge(emulator.url, redis_url, redis_prefix, threads={"janitor": False}) as bridge:
        ids = []
        for n in range(3):
            answer = httpx.post(
                f"{bridge.url}/v1/chat/completions",
                json={"model": "demo-assistant", "messages": [{"role": "user", "content": f"table {n}"}]},
                timeout=30,
            )
            ids.append(answer.headers["x-thread-id"])
        config = tmp_path / "config.yaml"
        config.write_text(json.dumps({"redis_prefix": redis_prefix, "routes": routes_for(emulator.url)}))
        env = {"REDIS_URL": redis_url}
        table = agent_bridge("threads", "--config", str(config), "list", env=env)
        page = agent_bridge("threads", "--config", str(config), "list", "--limit", "2", env=env)
        scripted = agent_bridge("threads", "--config", str(config), "list", "--json", env=env)
    assert table.returncode == 0, table.stderr
    header, *rows, footer = table.stdout.splitlines()
    assert header.split() == ["THREAD", "ROUTE", "OWNER", "TURNS", "CREATED", "LAST", "USED", "IDLE", "FOR"]
    assert sorted(row.split()[0] for row in rows) == sorted(ids)
    for row in rows:
        assert re.search(
            r"demo-assistant\s+anonymous\s+1\s+\d{4}-\d\d-\d\d \d\d:\d\d\s+\d{4}-\d\d-\d\d \d\d:\d\d\s+\d+[smhd]", row
        ), row
    assert footer == "3 threads"
    assert page.stdout.splitlines()[-1].startswith("2 threads; more with --after ")
    data = json.loads(scripted.stdout)["data"]
    assert {t["thread_id"] for t in data} == set(ids) and all(isinstance(t["idle_s"], float) for t in data)
