"""docs/DESIGN.md section 3 lists the key layout that app/state/keys.py and the store write, no more, no less."""

from __future__ import annotations

import re
from pathlib import Path

from app.state.keys import Keys

DESIGN = Path(__file__).resolve().parents[2] / "docs" / "DESIGN.md"


def _documented() -> set[str]:
    section = DESIGN.read_text().split("## 3. State (Redis)")[1].split("\n## ")[0]
    return {m.group(1) for m in re.finditer(r"^\| `([^`]+)`", section, re.MULTILINE)}


def _written() -> set[str]:
    keys = Keys("")

    def tagged(key: str) -> str:
        return re.sub(r"\{b\d{3}\}", "{bNNN}", key)

    return {
        tagged(keys.thread("<id>")),
        tagged(keys.lock("<id>")),
        tagged(keys.idle(7)),
        tagged(keys.owner(7, "<owner>")),
        tagged(keys.janitor_lease(7)),
        tagged(keys.carried("<id>")),
        keys.conversation("<id>"),
        keys.history("<id>"),
        keys.item("<id>"),
        keys.background("<id>"),
        keys.background_events("<id>"),
        keys.background_runner("<id>"),
        keys.marker(),
        # The store's other families (app/state/lookups.py, store.py), through the same prefixing.
        keys.raw("conv", "<owner>", "<route>", "<fp>"),
        keys.raw("conv", "<owner>", "<route>", "id", "<conversation>"),
        keys.raw("call", "<call_id>"),
        keys.raw("resp", "<id>"),
        keys.raw("owned", "conversation", "<id>"),
        keys.raw("owned", "item", "<id>"),
        keys.raw("file", "<id>"),
        keys.raw("lease", "<name>"),
        keys.raw("probe", "<name>"),
        keys.raw("carry", "<route>"),
        keys.raw("tools", "<route>"),
        # Usage and limits (app/state/accounting.py).
        keys.usage("<owner>", "<YYYY-MM-DD>"),
        keys.usage_owners(),
        keys.rate_minute("<owner>", 0).replace(":m:0", ":m:<minute>"),
        keys.rate_day("<owner>", "<YYYY-MM-DD>"),
        keys.inflight("<owner>"),
    }


def test_the_design_key_table_matches_the_layout() -> None:
    documented = {re.sub(r" \(\w+\)$", "", key) for key in _documented()}
    assert documented == _written()


def test_layout_1_is_named_only_as_what_the_migration_reads() -> None:
    keys = Keys("")
    text = DESIGN.read_text()
    for old in (keys.v1_thread("<id>"), keys.v1_idle(), keys.v1_owner("<owner>")):
        assert f"`{old}`" in text
