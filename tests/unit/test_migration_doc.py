"""docs/migration.md's config blocks are valid configs (`${VAR:-default}` references resolved to their defaults)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from app.settings import interpolate, load_settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "migration.md"


def test_every_yaml_block_of_the_runbook_validates() -> None:
    blocks = re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(), re.M | re.S)
    assert len(blocks) == 2
    for block in blocks:
        data = interpolate(yaml.safe_load(block), {})
        settings = load_settings(None, env={}, **data)
        route = settings.routes["support"]
        assert route.migrate_from is not None and route.source_route() is not None
