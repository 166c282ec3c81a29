"""Every code block of README.md and of the pages under docs/, run as written against a bridge started
with the shipped config.yaml (docs/reference/ holds Azure's wire shapes, quoted, not run).

Conventions (an HTML comment on the line before a fenced block; GitHub does not render it):

- ```sh / ```bash blocks run in bash (`set -euo pipefail`); ```python blocks run in this test's
  Python. Both must exit 0.
- ```yaml blocks are config fragments: merged into the shipped config.yaml, they must validate (each
  `${VAR}` they reference is set to a dummy value).
- `<!-- readme: expect TEXT -->`: the block's output must contain TEXT.
- `<!-- readme: skip REASON -->`: the block is not run (a synopsis, a reference with placeholders, a
  command that needs Docker or would start this suite again). Every block without a language must
  carry one; keep these few.

Blocks address the bridge as 127.0.0.1:8000 and the emulator as 127.0.0.1:8100, as `make run` starts
them; the test runs both on free ports and rewrites those two addresses.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from app.settings import load_settings
from tests.support.process import BridgeProcess, bridge_process
from tests.support.servers import ServerThread

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.M | re.S)
_MARK = re.compile(r"<!--\s*readme:\s*(skip|expect)\s+(.*?)\s*-->\s*$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    language: str
    code: str
    skip: str | None
    expect: str | None

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}:{self.language or 'text'}"


def blocks() -> list[Block]:
    found = []
    for page in PAGES:
        found += _page_blocks(page)
    return found


def _page_blocks(page: Path) -> list[Block]:
    text = page.read_text()
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.search(before)
        found.append(
            Block(
                page=str(page.relative_to(ROOT)),
                line=line,
                language=match.group(1),
                code=match.group(2),
                skip=mark.group(2) if mark and mark.group(1) == "skip" else None,
                expect=mark.group(2) if mark and mark.group(1) == "expect" else None,
            )
        )
    return found


BLOCKS = blocks()
RUNNABLE = [b for b in BLOCKS if b.skip is None and b.language in ("sh", "bash", "python")]
CONFIGS = [b for b in BLOCKS if b.skip is None and b.language == "yaml"]


def test_every_block_is_run_or_says_why_not() -> None:
    assert len(BLOCKS) >= 10
    for block in BLOCKS:
        if block.skip is None:
            assert block.language in ("sh", "bash", "python", "yaml"), f"{block.name}: mark it `readme: skip`"
    # Diagrams and transcripts (no language, `console`) are not code; of the code, at most half is not run.
    code = [b for b in BLOCKS if b.language in ("sh", "bash", "python", "yaml")]
    skipped = [b for b in code if b.skip is not None]
    assert len(skipped) <= len(code) // 2, [b.name for b in skipped]
    front = [b for b in RUNNABLE if b.page == "README.md"]
    assert any(b.language == "python" for b in front) and any("curl" in b.code for b in front)


def test_the_readme_is_a_front_door() -> None:
    """What it is, the two commands, one example per API, where to read on: the depth lives in docs/."""
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in text, f"the README does not lead to docs/{page.name}"


@pytest.fixture(scope="module")
def shipped_bridge(emulator_server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> BridgeProcess:
    """The shipped config.yaml as `make run` uses it: its routes on the emulator, the embedded Redis."""
    tmp = tmp_path_factory.mktemp("readme")
    # `make run` (`agent-bridge dev`) gives the bridge the emulator's managed identity (project
    # endpoints take Entra tokens only) and asks for open mode (the shipped config has no keys).
    env = {
        "AGENT_BRIDGE_OPEN_MODE": "true",
        "AZURE_EMULATOR_URL": emulator_server.url,
        "IDENTITY_ENDPOINT": f"{emulator_server.url}/msi/token",
        "IDENTITY_HEADER": "agent-bridge-readme",
    }
    with bridge_process(ROOT / "config.yaml", None, tmp, extra_env=env) as proc:
        yield proc  # type: ignore[misc]


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.name)
def test_block_runs_as_written(block: Block, shipped_bridge: BridgeProcess, emulator_server: ServerThread) -> None:
    code = block.code.replace("http://127.0.0.1:8000", shipped_bridge.url).replace(
        "http://127.0.0.1:8100", emulator_server.url
    )
    if block.language == "python":
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-c", "set -euo pipefail\n" + code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert done.returncode == 0, f"{block.name} failed:\n{done.stdout}\n{done.stderr}"
    if block.expect is not None:
        assert block.expect in done.stdout, f"{block.name}: {block.expect!r} not in:\n{done.stdout}"


@pytest.mark.parametrize("block", CONFIGS, ids=lambda b: b.name)
def test_config_fragment_validates(block: Block, tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config.update(yaml.safe_load(block.code))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {name: "readme-dummy-value-0123456789" for name in _VAR.findall(block.code)}
    settings = load_settings(path, env=env, require_routes=True)
    assert settings.routes
