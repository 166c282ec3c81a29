"""Every upper bound in pyproject.toml's runtime dependencies says which internal it protects."""

from __future__ import annotations

import re
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _runtime_lines() -> list[str]:
    text = PYPROJECT.read_text()
    block = text[text.index("dependencies = [") : text.index("]\n", text.index("dependencies = ["))]
    return block.splitlines()[1:]


def test_each_upper_bound_has_a_comment_naming_the_code_that_leans_on_it() -> None:
    lines = _runtime_lines()
    bounded = [i for i, line in enumerate(lines) if re.match(r'\s*"[^"]*<[^"]*"', line)]
    assert bounded, "no upper bound found: the parse of pyproject.toml is off"
    for i in bounded:
        above = []
        for line in reversed(lines[:i]):
            if not line.strip().startswith("#"):
                break
            above.append(line.strip(" #"))
        comment = " ".join([lines[i].partition("#")[2], *above])
        package = lines[i].strip().strip('",').split("[")[0].split(">")[0].split("<")[0]
        assert re.search(r"app/\S+\.py", comment), f"{package}'s upper bound names no module that needs it"


def test_the_libraries_the_code_subclasses_are_bounded() -> None:
    pins = {line.strip().strip('",').split("[")[0].split(">")[0]: line for line in _runtime_lines() if '"' in line}
    for package in ("fastapi", "starlette", "uvicorn", "httpx", "httpx-aiohttp", "redis"):
        assert "<" in pins[package], f"{package} has no upper bound"
