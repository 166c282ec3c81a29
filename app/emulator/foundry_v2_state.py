"""In-memory state of the Foundry v2 surface: agent versions, stored responses, conversations, items."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field
from typing import Any

from app.emulator import script
from app.emulator.foundry_v2_background import EventLog
from app.emulator.foundry_v2_code import Containers
from app.emulator.http import EmulatorHTTPError, now

# Prompt-agent definitions as azure-ai-projects' `PromptAgentDefinition` serializes them (`kind: "prompt"`,
# flat Responses function tools). flights-demo declares the seed scenario's two functions, so a client that
# sends them next to the agent finds them "declared" by reading the version's `definition.tools`.
SEED_AGENTS: list[tuple[str, dict[str, Any]]] = [
    (
        "demo-agent",
        {"kind": "prompt", "model": "gpt-4o", "instructions": "You are a helpful assistant.", "tools": []},
    ),
    (
        "mcp-agent",
        {
            "kind": "prompt",
            "model": "gpt-4o",
            "instructions": "You use the docs MCP server.",
            "tools": [
                {
                    "type": "mcp",
                    "server_label": "docs",
                    "server_url": "https://mcp.example.com/mcp",
                    "require_approval": "always",
                }
            ],
        },
    ),
    (
        "code-agent",
        {
            "kind": "prompt",
            "model": "gpt-4o",
            "instructions": "You write and run Python to answer.",
            "tools": [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": []}}],
        },
    ),
    (
        "flights-demo",
        {
            "kind": "prompt",
            "model": "gpt-4o",
            "instructions": "You answer questions about flights using the functions you have.",
            "tools": script.flights_tools("responses"),
        },
    ),
]


HOSTED_TOOLS = ("mcp", "code_interpreter")


@dataclass
class AgentVersion:
    """One immutable version of a named agent (`AgentVersionDetails`)."""

    name: str
    version: str
    definition: dict[str, Any]
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: int = field(default_factory=now)

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": "agent.version",
            "id": f"{self.name}:{self.version}",
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "created_at": self.created_at,
            "definition": copy.deepcopy(self.definition),
            "metadata": dict(self.metadata),
            "status": "active",
        }

    @property
    def function_tools(self) -> list[dict[str, Any]]:
        tools = self.definition.get("tools") or []
        return [t for t in tools if isinstance(t, dict) and t.get("type") == "function"]

    @property
    def hosted_tools(self) -> list[dict[str, Any]]:
        """The tools the service runs itself (`mcp`, `code_interpreter`), echoed in the Response's `tools`."""
        tools = self.definition.get("tools") or []
        return [t for t in tools if isinstance(t, dict) and t.get("type") in HOSTED_TOOLS]


@dataclass
class Agent:
    """A named agent: its versions in creation order, numbered 1, 2, ... (never reused)."""

    name: str
    versions: dict[str, AgentVersion] = field(default_factory=dict)
    next_version: int = 1
    created_at: int = field(default_factory=now)

    @property
    def latest(self) -> AgentVersion:
        return list(self.versions.values())[-1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": "agent",
            "id": self.name,
            "name": self.name,
            "state": "enabled",
            "configuration_state": "enabled",
            "versions": {"latest": self.latest.as_dict()},
        }


@dataclass
class StoredResponse:
    """A Response object plus what it was made from: the prior context and this request's input."""

    body: dict[str, Any]
    history: list[dict[str, Any]]
    input_items: list[dict[str, Any]]
    task: asyncio.Task[None] | None = None
    log: EventLog | None = None
    """A background response's events, for streams that join or resume it."""

    @property
    def full_context(self) -> list[dict[str, Any]]:
        """History, input and output: the context a `previous_response_id` continuation starts from."""
        return [*self.history, *self.input_items, *self.body["output"]]


@dataclass
class Conversation:
    id: str
    created_at: int
    metadata: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at,
            "metadata": self.metadata,
        }


class FoundryState:
    """Everything the Foundry v2 surface remembers; `reset` forgets it all and re-seeds the demo agents."""

    def __init__(self) -> None:
        self.agents: dict[str, Agent] = {}
        self.responses: dict[str, StoredResponse] = {}
        self.conversations: dict[str, Conversation] = {}
        self.items: dict[str, dict[str, Any]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.containers = Containers()

    def reset(self, seed: bool) -> None:
        for task in list(self.tasks):
            task.cancel()
        self.tasks.clear()
        self.agents.clear()
        self.responses.clear()
        self.conversations.clear()
        self.items.clear()
        self.containers.reset()
        if seed:
            for name, definition in SEED_AGENTS:
                self.add_version(name, copy.deepcopy(definition))

    # -- agents

    def add_version(
        self,
        name: str,
        definition: dict[str, Any],
        description: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> AgentVersion:
        agent = self.agents.get(name)
        if agent is None:
            agent = self.agents[name] = Agent(name=name)
        version = AgentVersion(
            name=name,
            version=str(agent.next_version),
            definition=definition,
            description=description,
            metadata=metadata or {},
        )
        agent.next_version += 1
        agent.versions[version.version] = version
        return version

    def agent(self, name: str) -> Agent:
        agent = self.agents.get(name)
        if agent is None:
            raise EmulatorHTTPError(404, f"Agent '{name}' not found.", param="agent_name", code="not_found")
        return agent

    def version(self, name: str, version: str) -> AgentVersion:
        found = self.agent(name).versions.get(version)
        if found is None:
            raise EmulatorHTTPError(
                404, f"Agent '{name}' version '{version}' not found.", param="agent_version", code="not_found"
            )
        return found

    # -- responses, conversations, items

    def response(self, response_id: str) -> StoredResponse:
        stored = self.responses.get(response_id)
        if stored is None:
            raise EmulatorHTTPError(404, f"Response with id '{response_id}' not found.", param="response_id")
        return stored

    def conversation(self, conversation_id: str, param: str | None = None) -> Conversation:
        conv = self.conversations.get(conversation_id)
        if conv is None:
            raise EmulatorHTTPError(
                404, f"Conversation with id '{conversation_id}' not found.", param=param, code="not_found"
            )
        return conv

    def index(self, items: list[dict[str, Any]]) -> None:
        """Remember items by id so that later `item_reference` inputs can point at them."""
        for item in items:
            if isinstance(item.get("id"), str):
                self.items[item["id"]] = item

    def spawn(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
