"""Process-wide tuning of a serving process: the cyclic garbage collector.

With CPython's default thresholds (a young collection every 700 net allocations) a bridge under load
collected about once every three turns, and each young collection also promoted the objects of every
turn still in flight, so the older generations filled with short-lived objects and were scanned again
and again: about a sixth of the bridge's CPU per turn went to the collector (measured with
`gc.callbacks` at 64 concurrent chat follow-ups). Nearly everything a turn allocates is freed by
reference counting anyway; cycles (tracebacks, cancelled tasks) are few and small. So a serving process
collects far less often, and the objects that live as long as the process (modules, routes, models,
settings) are frozen out of every collection once the app is built.
"""

from __future__ import annotations

import gc

THRESHOLDS = (20_000, 20, 10)
"""Young collections every 20,000 net allocations (not 700); the older generations keep their ratios."""


def tune_gc() -> None:
    """Call once the app is built, before serving."""
    gc.collect()
    gc.freeze()  # what exists now lives as long as the process: never scan it again
    gc.set_threshold(*THRESHOLDS)
