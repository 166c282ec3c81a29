"""Poll policy for the fallback mode: adaptive backoff from 50 ms to 1 s, bounded by the turn's deadline."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class PollPolicy:
    initial_s: float = 0.05
    max_s: float = 1.0
    multiplier: float = 1.6

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(self.max_s, delay * self.multiplier)

    @classmethod
    def testing(cls) -> PollPolicy:
        return cls(initial_s=0.005, max_s=0.05, multiplier=1.6)
