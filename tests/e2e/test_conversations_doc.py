"""Every code block of docs/conversations.md: python blocks run as written against a bridge with the
shipped config's route names (the bridge at 127.0.0.1:8000 in the page is rewritten to this one), yaml
blocks validate as config fragments."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from app.settings import load_settings
from tests.support.bridge import ENTRA, Bridge, routes_for, running_bridge
from tests.support.servers import ServerThread

PAGE = Path(__file__).resolve().parents[2] / "docs" / "conversations.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.M | re.S)
BLOCKS = [(m.group(1), m.group(2)) for m in _FENCE.finditer(PAGE.read_text())]


@pytest.fixture(scope="module")
def doc_bridge(emulator_server: ServerThread, redis_url: str) -> Iterator[Bridge]:
    project = f"{emulator_server.url}/api/projects/demo"
    endpoint = {"endpoint": project, "agent": {"name": "demo-agent", "endpoint_scoped": True}, "auth": ENTRA}
    routes = routes_for(emulator_server.url, **{"demo-endpoint": endpoint})
    prefix = f"abtest:{uuid.uuid4().hex[:12]}:"
    try:
        with running_bridge(emulator_server.url, redis_url, prefix, routes=routes) as bridge:
            yield bridge
    finally:
        with redis.Redis.from_url(redis_url) as client:
            doomed = list(client.scan_iter(match=f"{prefix}*"))
            if doomed:
                client.delete(*doomed)


def test_the_page_has_python_and_yaml_blocks_only() -> None:
    assert {language for language, _ in BLOCKS} == {"python", "yaml"}


@pytest.mark.parametrize("code", [c for lang, c in BLOCKS if lang == "python"])
def test_python_block_runs(doc_bridge: Bridge, code: str) -> None:
    # In this process (the bridge serves from a thread of it): a block that fails raises here.
    exec(compile(code.replace("http://127.0.0.1:8000", doc_bridge.url), str(PAGE), "exec"), {})


@pytest.mark.parametrize("code", [c for lang, c in BLOCKS if lang == "yaml"])
def test_yaml_block_is_valid_config(code: str, tmp_path: Path) -> None:
    """Merged into the shipped config.yaml, a fragment validates."""
    base = yaml.safe_load((PAGE.parents[1] / "config.yaml").read_text())
    for key, value in yaml.safe_load(code).items():
        base[key] = {**base.get(key, {}), **value}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base))
    assert load_settings(path, env={}).routes
