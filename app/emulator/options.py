"""Runtime options of the emulator (set at start, adjustable through `/_emulator/config`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass
class EmulatorOptions:
    latency_ms: float = 0.0
    """Added before every request is answered (test hooks excepted)."""
    token_delay_ms: float = 0.0
    """Spacing between streamed text deltas."""
    run_expiry_s: float = 600.0
    """How long a run may wait in `requires_action` before it expires (Azure: 10 minutes)."""
    token_ttl_s: float = 3600.0
    """Lifetime of managed-identity tokens minted by `/msi/token`."""
    empty: bool = False
    """Start without the preloaded demo agents."""
    accept_api_key_on_projects: bool = False
    """A key-taking gateway (API Management) stands in front of the project endpoints: accept `api-key`
    there too. Azure itself takes only Entra tokens for agent operations (see `hooks._authorised`)."""

    def update(self, values: dict[str, Any]) -> None:
        flags = {f.name for f in fields(self) if f.type in (bool, "bool")}
        known = {f.name for f in fields(self)}
        for key, value in values.items():
            if key not in known:
                raise KeyError(key)
            setattr(self, key, bool(value) if key in flags else float(value))

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
