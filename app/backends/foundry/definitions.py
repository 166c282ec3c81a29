"""The agent versions' definitions (their tools), read from the project once per route and cached.

Read only when a request carries tools (the check needs them); a cache hit costs no request. The
project API serves them at `GET {project}/agents/{name}/versions/{version}` (or the agent's
`versions.latest` at `GET {project}/agents/{name}` when the route follows the active version),
`?api-version=v1` (azure-ai-projects 2.x `agents.get_version` / `agents.get`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from app.backends.foundry import overrides
from app.core import notices
from app.errors import BridgeError

log = logging.getLogger("agent_bridge.foundry")


@dataclass(frozen=True)
class DefinitionPolicy:
    """How long a definition read stays good: `ttl_s` after a success, `failure_ttl_s` after a failure."""

    ttl_s: float = 300.0
    failure_ttl_s: float = 15.0
    read_within_s: float = 10.0

    @classmethod
    def testing(cls) -> DefinitionPolicy:
        return cls(ttl_s=60.0, failure_ttl_s=0.5, read_within_s=5.0)


@dataclass(frozen=True)
class AgentDefinition:
    name: str
    version: str
    tools: tuple[dict[str, Any], ...]

    @property
    def label(self) -> str:
        return f"agent '{self.name}' version {self.version}"


class DefinitionSource(Protocol):
    """What the reader needs of a route's client (`FoundryClient` fits)."""

    async def get_agent_definition(self, deadline: float) -> dict[str, Any]: ...


def parse(version: dict[str, Any], fallback_name: str) -> AgentDefinition:
    """An `agent.version` object (`{name, version, definition: {tools}}`) as a definition."""
    definition = version.get("definition") if isinstance(version.get("definition"), dict) else {}
    tools = definition.get("tools") if isinstance(definition, dict) else None
    return AgentDefinition(
        name=str(version.get("name") or fallback_name),
        version=str(version.get("version") or "?"),
        tools=tuple(t for t in tools or () if isinstance(t, dict)),
    )


@dataclass
class _Entry:
    definition: AgentDefinition | None
    expires_at: float
    error: str | None = None


class AgentDefinitions:
    """One cache entry per route; concurrent misses on a route share one read."""

    def __init__(self, policy: DefinitionPolicy | None = None) -> None:
        self.policy = policy or DefinitionPolicy()
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, route: str, agent: str, source: DefinitionSource) -> AgentDefinition | None:
        """The route's agent version definition, or None when it could not be read (then `error(route)` says why)."""
        entry = self._entries.get(route)
        if entry is not None and entry.expires_at > time.monotonic():
            return entry.definition
        lock = self._locks.setdefault(route, asyncio.Lock())
        async with lock:
            entry = self._entries.get(route)
            if entry is not None and entry.expires_at > time.monotonic():
                return entry.definition
            entry = await self._read(agent, source)
            self._entries[route] = entry
            return entry.definition

    def error(self, route: str) -> str | None:
        entry = self._entries.get(route)
        return entry.error if entry is not None else None

    async def _read(self, agent: str, source: DefinitionSource) -> _Entry:
        try:
            version = await source.get_agent_definition(time.monotonic() + self.policy.read_within_s)
        except BridgeError as exc:
            log.warning("could not read the definition of agent %r: %s", agent, exc.message)
            return _Entry(None, time.monotonic() + self.policy.failure_ttl_s, exc.message)
        return _Entry(parse(version, agent), time.monotonic() + self.policy.ttl_s)

    async def check_tools(self, route: str, agent: str, source: DefinitionSource, tools: list[Any]) -> None:
        """A 400 if the request declares a tool the route's agent version lacks (no read without tools).

        A definition that cannot be read does not fail the turn: the tools are not sent either way,
        and a warning says they were not checked.
        """
        requested = overrides.requested_tools(tools)
        if not requested:
            return
        definition = await self.get(route, agent, source)
        if definition is None:
            notices.warn(
                f"tools unchecked: the definition of agent '{agent}' could not be read, so the request's "
                "tools were not checked against it (they are never sent: the agent version's own tools apply)"
            )
            return
        overrides.check_declared(requested, definition.tools, f"{definition.label} (model '{route}')")

    def forget(self, route: str) -> None:
        self._entries.pop(route, None)
