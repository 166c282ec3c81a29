"""What a request may not carry next to `agent_reference`, and what the bridge does instead (pure).

A Foundry v2 response made by an agent version takes that version's model, instructions, tools and
sampling; Azure refuses a request that carries its own with 400 `invalid_payload`, "Not allowed when
agent is specified." (`temperature`, `top_p`: microsoft/agent-framework#2573; `tools`: #5087, #5130;
`tool_choice` and `parallel_tool_calls` are stripped with `tools` by agent-framework's fix, PR #5101
and #6644; `instructions`, `text` and `reasoning` are refused the same way by the stricter reading
the emulator follows, docs/reference/azure-as-it-is.md 1). Server-side output items resent as input
are refused with 400 `invalid_payload` (agent-framework#5338).

So the bridge sends none of them: function tools are checked against the agent version's own
(`definitions`), and everything else is dropped with a warning, never failing the turn (the fields
through the parameter table, `app.core.params`; the items and a chat's system text from here).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from app.errors import InvalidRequestError

AGENT_OVERRIDES: tuple[str, ...] = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "instructions",
    "text",
    "reasoning",
)
"""Request fields Azure refuses next to an agent reference."""

SERVER_SIDE_ITEMS = frozenset(
    {
        "mcp_list_tools",
        "mcp_call",
        "mcp_approval_request",
        "web_search_call",
        "file_search_call",
        "code_interpreter_call",
        "image_generation_call",
        "reasoning",
        "bing_grounding_call",
        "azure_ai_search_call",
        "fabric_dataagent_call",
        "sharepoint_grounding_call",
        "openapi_call",
    }
)
"""Item types only the service produces: never valid input (the client's own items are)."""

# Values that ask for what the agent does anyway: dropped without a warning.
_DEFAULTS: dict[str, Any] = {"tool_choice": "auto", "parallel_tool_calls": True}


@dataclass(frozen=True)
class Stripped:
    """A body without what Azure refuses, and what was taken out."""

    body: dict[str, Any]
    tools: list[Any] = field(default_factory=list)
    """The request's tools (to be checked against the agent version's)."""
    ignored: tuple[str, ...] = ()
    """The refused fields dropped (other than tools), in AGENT_OVERRIDES order."""
    dropped_items: tuple[str, ...] = ()
    """The types of the server-side output items taken out of `input`."""


def strip(body: dict[str, Any]) -> Stripped:
    """The body minus every refused field and every server-side item in `input`."""
    clean = {k: v for k, v in body.items() if k not in AGENT_OVERRIDES}
    ignored = tuple(
        k for k in AGENT_OVERRIDES[1:] if body.get(k) is not None and not (k in _DEFAULTS and body[k] == _DEFAULTS[k])
    )
    tools = body.get("tools")
    items = clean.get("input")
    dropped: list[str] = []
    if isinstance(items, list):
        kept = []
        for item in items:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind in SERVER_SIDE_ITEMS:
                dropped.append(str(kind))
            else:
                kept.append(item)
        if dropped:
            clean["input"] = kept
    return Stripped(clean, list(tools) if isinstance(tools, list) else [], ignored, tuple(dropped))


def warnings(stripped: Stripped) -> list[str]:
    """What only the translated body shows (for the `x-agent-bridge-warning` header): server-side
    items left out of `input`. The refused fields a client sets are warned by the parameter table
    (`app.core.params`), one entry per parameter, before the turn starts."""
    if not stripped.dropped_items:
        return []
    kinds = ", ".join(sorted(set(stripped.dropped_items)))
    return [
        f"input items dropped: {len(stripped.dropped_items)} of type {kinds}, which only the agent service "
        "produces and Azure refuses as input"
    ]


def instructions_warning() -> str:
    """A chat turn's system/developer text, which becomes `instructions` and is left out on Foundry v2."""
    return (
        "instructions dropped: the system and developer messages are not sent, Foundry v2 refuses "
        "instructions next to agent_reference (the agent version's own instructions apply)"
    )


def requested_tools(tools: Iterable[Any]) -> list[tuple[str, str]]:
    """(type, name) of each tool a request declares: the name for functions, the type for the rest."""
    out: list[tuple[str, str]] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        kind = str(tool.get("type") or "function")
        if kind == "function":
            name = tool.get("name")
            if name is None and isinstance(tool.get("function"), dict):
                name = tool["function"].get("name")  # the chat (nested) shape
            out.append((kind, str(name)))
        else:
            out.append((kind, kind))
    return out


def check_declared(requested: Iterable[tuple[str, str]], declared: Iterable[dict[str, Any]], where: str) -> None:
    """A 400 naming the first tool the agent version does not declare (`where` names the version).

    Function tools match by name; other tools (web_search, file_search, mcp, ...) by type.
    """
    functions = {str(t.get("name")) for t in declared if t.get("type") == "function"}
    kinds = {str(t.get("type")) for t in declared}
    missing = [name for kind, name in requested if (name not in functions if kind == "function" else kind not in kinds)]
    if not missing:
        return
    names = ", ".join(f"'{m}'" for m in dict.fromkeys(missing))
    plural = "s" if len(set(missing)) > 1 else ""
    raise InvalidRequestError(
        f"The tool{plural} {names} {'are' if plural else 'is'} not declared by {where}. A Foundry v2 agent takes "
        "its tools from its agent version, not from the request: declare the tool in the agent's definition "
        "in the Foundry project (this makes a new agent version), then point the route's agent.version at "
        "that version (or leave agent.version out to follow the active one).",
        param="tools",
        code="tool_not_declared",
    )
