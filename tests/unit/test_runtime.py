"""A serving process collects cycles rarely and never rescans what lives as long as it does."""

from __future__ import annotations

import json
import subprocess
import sys

from app.runtime import THRESHOLDS

_PROBE = """
import gc, json
from app.runtime import tune_gc
before = (gc.get_threshold(), gc.get_freeze_count())
tune_gc()
print(json.dumps({"before": before, "after": [gc.get_threshold(), gc.get_freeze_count()]}))
"""


def test_tune_gc_freezes_what_exists_and_raises_the_young_threshold() -> None:
    # In a process of its own: the collector's settings are process-wide, the test runner's stay as they are.
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60)
    seen = json.loads(done.stdout)
    assert seen["before"][0][0] == 700 and seen["before"][1] == 0  # CPython's defaults
    assert tuple(seen["after"][0]) == THRESHOLDS and seen["after"][0][0] > 700
    assert seen["after"][1] > 1000  # the imported modules' objects, frozen
