"""docs/security.md stays true: every command it tells an operator to run parses, every test it cites
exists, every setting it names is one the config takes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from app import cli
from app.settings import RedisSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "security.md").read_text()


def test_every_command_it_gives_parses() -> None:
    commands = [line for line in re.findall(r"^agent-bridge [^\n]*", DOC, re.M)]
    assert len(commands) >= 2
    for line in commands:
        args = shlex.split(line.split("#", 1)[0])[1:]
        parsed = cli.parser().parse_args(args)  # exits (SystemExit) on an unknown command or flag
        assert parsed.command == "threads"


def test_every_test_it_cites_exists() -> None:
    cited = set(re.findall(r"`(tests/[\w/]+\.py)(?:::\w+)?`", DOC))
    assert len(cited) >= 8
    for path in cited:
        assert (ROOT / path).is_file(), path
    for path, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", DOC):
        assert f"def {name}(" in (ROOT / path).read_text(), (path, name)


def test_the_settings_it_names_exist() -> None:
    assert "open_mode" in Settings.model_fields and "require_noeviction" in RedisSettings.model_fields
    for setting in ("open_mode: true", "redis.require_noeviction", "AGENT_BRIDGE_OPEN_MODE=true", "keysFromSecret"):
        assert setting in DOC
