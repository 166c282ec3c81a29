"""The neutral model of one turn: conversation items, tools and options, whatever the client dialect."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from app.settings import RouteSettings

ApprovalMode = Literal["client", "approve", "deny", "refuse"]
"""Who answers the agent's MCP approval requests in this turn (`refuse`: nobody; the turn fails)."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    role: Literal["user", "assistant"]
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    parts: tuple[str, ...] = ()
    """The text as the client split it, when it sent more than one text part (`text` joins them with
    a newline for the places that take one string); upstreams that take content arrays get the parts."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    output: str
    approve: bool | None = None
    """Set when this answers an MCP approval request (`call_id` is the request's id)."""


Item = Message | ToolResult


def join_parts(parts: tuple[str, ...]) -> str:
    """Text parts as one string, for the fields that take only a string (instructions, tool output).

    A newline keeps the parts apart ("part one\npart two", never "part onepart two"); where the
    upstream takes an array of parts (thread messages, Responses input) the parts go as they came.
    """
    return "\n".join(parts)


def text_message(
    role: Literal["user", "assistant"], parts: tuple[str, ...], calls: tuple[ToolCall, ...] = ()
) -> Message:
    """A message of the client's text parts (none for null or empty content)."""
    return Message(role=role, text=join_parts(parts), tool_calls=calls, parts=parts if len(parts) > 1 else ())


@dataclass(frozen=True, slots=True)
class FunctionTool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class TurnOptions:
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class TurnRequest:
    """What a backend needs to play one turn against Azure."""

    owner: str
    model: str
    route: RouteSettings
    items: tuple[Item, ...]
    """The whole conversation as the client holds it (used when a new upstream conversation is seeded)."""
    cursor: str | None
    """The upstream conversation to continue (Assistants: a thread id; Foundry v2: a response id)."""
    new_items: tuple[Item, ...]
    """What to send when `cursor` is still valid: the items the upstream side has not seen."""
    instructions: str | None
    tools: tuple[FunctionTool, ...] | None
    """Function tools from the request; None keeps the agent's own."""
    options: TurnOptions = field(default_factory=TurnOptions)
    deadline: float = 0.0
    """Absolute `time.monotonic()` by which the turn must end (the route's timeout)."""
    approvals: ApprovalMode = "refuse"
    conversation: str | None = None
    """The conversation the turn continues: on Foundry v2 the project's (sent as `conversation`, with
    `new_items`); on Assistants the bridge's, whose thread is `cursor` (never replaced by a new thread)."""
    lock_ttl_s: float | None = None
    """A background turn's thread lock lives this long unrenewed (its deadline), so that a replica that
    dies mid-run leaves the thread locked for the replica that takes the run over; None: `limits.lock_lease`."""


def pending_tool_results(items: tuple[Item, ...]) -> tuple[ToolResult, ...]:
    """The tool results at the end of the conversation (the answer to the agent's last calls)."""
    tail: list[ToolResult] = []
    for item in reversed(items):
        if not isinstance(item, ToolResult):
            break
        tail.append(item)
    return tuple(reversed(tail))
