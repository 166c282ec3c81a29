"""Which request parameters each backend honours: the source of docs/api.md's parameter table and of
the `x-agent-bridge-warning` header (one warning per parameter a turn sets but cannot honour).

Statuses:

- `mapped`: sent to Azure (under Azure's name where it differs);
- `accepted`: the bridge honours it itself (or it changes nothing on this backend);
- `ignored`: the bridge cannot honour it; a request that sets it gets a warning, the turn goes on;
- `dropped`: Azure refuses it on this backend, so it is never sent; a warning says so;
- `refused`: a 400 names it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["mapped", "accepted", "ignored", "dropped", "refused"]
Backend = Literal["assistants", "foundry"]
Endpoint = Literal["chat", "responses"]

# Foundry v2 refuses these next to `agent_reference` (400 invalid_payload, "Not allowed when agent is
# specified."): microsoft/agent-framework#2573 (temperature, top_p), #5087/#5130 and PR #5101 (tools,
# tool_choice, parallel_tool_calls). `tools` is checked against the agent version instead (issue 11).
# `instructions`, `text` and `reasoning` are refused the same way (docs/reference/azure-as-it-is.md 1;
# app/backends/foundry/overrides.py says what the bridge leaves out).
V2_REFUSED = ("temperature", "top_p", "tool_choice", "parallel_tool_calls")

_V2_DROP = "dropped: Foundry v2 refuses it next to agent_reference (the agent version's own setting applies)"


@dataclass(frozen=True, slots=True)
class Rule:
    status: Status
    note: str = ""
    harmless: tuple[Any, ...] = ()
    """Values that ask for nothing the backend fails to do (`logprobs: false`, `n: 1`): no warning."""


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    assistants: Rule
    foundry: Rule

    def rule(self, backend: str) -> Rule:
        return self.assistants if backend == "assistants" else self.foundry  # an agent endpoint is a v2 agent


_V2_DROPPED = Rule("dropped", _V2_DROP)
# The agent's own defaults ask for nothing Azure would refuse to do: no warning for them.
_V2_TOOL_CHOICE = Rule("dropped", _V2_DROP, harmless=("auto",))
_V2_PARALLEL = Rule("dropped", _V2_DROP, harmless=(True,))
_V2_TOOLS = Rule(
    "accepted",
    "checked against the agent version's own tools and never sent (one it lacks: 400 tool_not_declared)",
)


def _p(name: str, assistants: Rule, foundry: Rule | None = None) -> Param:
    return Param(name, assistants, foundry if foundry is not None else assistants)


_NO_LOGPROBS = "Azure agent runs return no log probabilities"
_NO_SAMPLING = "agent runs take no {} parameter"
_TIER = "the agent's deployment decides its tier"
_IDENTIFIER = "not forwarded: agent runs take no end-user identifier"

CHAT: tuple[Param, ...] = (
    _p("model", Rule("accepted", "picks the route; the agent's own deployment answers")),
    _p(
        "messages",
        Rule("mapped", "thread messages; system/developer text as the run's additional instructions"),
        Rule("mapped", "input items; system/developer text is dropped (the agent version's instructions apply)"),
    ),
    _p("stream", Rule("accepted", "the bridge streams whatever the upstream mode")),
    _p("stream_options", Rule("accepted", "include_usage adds the usage chunk")),
    _p(
        "tools",
        Rule("mapped", "replace the agent's function tools for the run; its built-in tools stay"),
        _V2_TOOLS,
    ),
    _p("tool_choice", Rule("mapped"), _V2_TOOL_CHOICE),
    _p("parallel_tool_calls", Rule("mapped"), _V2_PARALLEL),
    _p("temperature", Rule("mapped"), _V2_DROPPED),
    _p("top_p", Rule("mapped"), _V2_DROPPED),
    _p(
        "max_completion_tokens",
        Rule("mapped", "as the run's max_completion_tokens"),
        Rule("mapped", "as max_output_tokens"),
    ),
    _p(
        "max_tokens",
        Rule("mapped", "as the run's max_completion_tokens"),
        Rule("mapped", "as max_output_tokens"),
    ),
    _p(
        "response_format",
        Rule("mapped", "the run's response_format"),
        _V2_DROPPED,
    ),
    _p("n", Rule("refused", "only n=1: an agent run gives one answer", harmless=(1,))),
    _p("logprobs", Rule("ignored", _NO_LOGPROBS, harmless=(False,))),
    _p("top_logprobs", Rule("ignored", _NO_LOGPROBS, harmless=(0,))),
    _p("seed", Rule("ignored", _NO_SAMPLING.format("seed"))),
    _p("stop", Rule("ignored", _NO_SAMPLING.format("stop"), harmless=([],))),
    _p("presence_penalty", Rule("ignored", _NO_SAMPLING.format("presence_penalty"), harmless=(0,))),
    _p("frequency_penalty", Rule("ignored", _NO_SAMPLING.format("frequency_penalty"), harmless=(0,))),
    _p("logit_bias", Rule("ignored", _NO_SAMPLING.format("logit_bias"), harmless=({},))),
    _p(
        "functions",
        Rule("ignored", "legacy function calling is not translated, send the same schemas as tools"),
    ),
    _p("function_call", Rule("ignored", "legacy function calling is not translated, use tool_choice")),
    _p("service_tier", Rule("ignored", _TIER, harmless=("auto", "default"))),
    _p("modalities", Rule("ignored", "agents answer in text only", harmless=(["text"],))),
    _p("audio", Rule("ignored", "agents answer in text only")),
    _p("prediction", Rule("ignored", "predicted outputs are not available to agent runs")),
    _p("web_search_options", Rule("ignored", "give the agent a web search tool instead")),
    _p("reasoning_effort", Rule("ignored", "the agent's deployment decides it")),
    _p("verbosity", Rule("ignored", "the agent's deployment decides it")),
    _p("store", Rule("ignored", "the bridge stores no chat completions (the thread is Azure's)", harmless=(False,))),
    _p("metadata", Rule("ignored", "chat metadata tags stored completions, which the bridge keeps none of")),
    _p("user", Rule("ignored", _IDENTIFIER)),
    _p("safety_identifier", Rule("ignored", _IDENTIFIER)),
    _p("prompt_cache_key", Rule("ignored", "Azure caches agent prompts on its own")),
    _p("prompt_cache_retention", Rule("ignored", "Azure caches agent prompts on its own")),
    _p("prompt_cache_options", Rule("ignored", "Azure caches agent prompts on its own")),
    _p("moderation", Rule("ignored", "Azure's content filters apply")),
)

_RELAYED = Rule("mapped", "relayed to the agent")
_RELAYED_IGNORED = "not honoured on Assistants routes"

RESPONSES: tuple[Param, ...] = (
    _p("model", Rule("accepted", "picks the route"), Rule("accepted", "picks the route (sent as agent_reference)")),
    _p(
        "input",
        Rule(
            "mapped",
            "thread messages, tool results to the waiting run; an item_reference continues the response it names",
        ),
        _RELAYED,
    ),
    _p("instructions", Rule("mapped", "the run's additional instructions"), _V2_DROPPED),
    _p("previous_response_id", Rule("mapped", "continues that response's thread"), _RELAYED),
    _p("stream", Rule("accepted"), _RELAYED),
    _p("store", Rule("accepted", "store=false: the response is not kept for GET"), _RELAYED),
    _p("metadata", Rule("accepted", "kept with the response and echoed"), _RELAYED),
    _p("tools", Rule("mapped", "function tools only (others: 400)"), _V2_TOOLS),
    _p("tool_choice", Rule("mapped"), _V2_TOOL_CHOICE),
    _p("parallel_tool_calls", Rule("mapped"), _V2_PARALLEL),
    _p("temperature", Rule("mapped"), _V2_DROPPED),
    _p("top_p", Rule("mapped"), _V2_DROPPED),
    _p("max_output_tokens", Rule("mapped", "as the run's max_completion_tokens"), _RELAYED),
    _p("text", Rule("mapped", "text.format as the run's response_format"), _V2_DROPPED),
    _p(
        "truncation",
        Rule("ignored", "Assistants threads always truncate automatically ('auto')", harmless=("auto",)),
        _RELAYED,
    ),
    _p(
        "conversation",
        Rule("accepted", "a conversation the bridge holds, backed by a thread; owner-checked"),
        Rule("mapped", "relayed; the conversation id is owner-checked"),
    ),
    _p(
        "background",
        Rule("accepted", "the bridge runs the turn itself, its events kept in Redis (docs/background.md)"),
        Rule("mapped", "Azure's own background mode; retrieve, resume and cancel relayed (docs/background.md)"),
    ),
    _p(
        "stream_options",
        Rule("ignored", "no obfuscation to include", harmless=({}, {"include_obfuscation": False})),
        _RELAYED,
    ),
    _p("include", Rule("ignored", _RELAYED_IGNORED, harmless=([],)), _RELAYED),
    _p("max_tool_calls", Rule("ignored", _RELAYED_IGNORED), _RELAYED),
    _p("prompt", Rule("ignored", "prompt templates are not available to Assistants runs"), _RELAYED),
    _p("reasoning", Rule("ignored", "the agent's deployment decides it"), _V2_DROPPED),
    _p(
        "service_tier",
        Rule("ignored", "the agent's deployment decides its tier", harmless=("auto", "default")),
        _RELAYED,
    ),
    _p("top_logprobs", Rule("ignored", _NO_LOGPROBS, harmless=(0,)), _RELAYED),
    _p("user", Rule("ignored", _IDENTIFIER + " (echoed)"), _RELAYED),
    _p("safety_identifier", Rule("ignored", _IDENTIFIER + " (echoed)"), _RELAYED),
    _p("prompt_cache_key", Rule("ignored", "Azure caches agent prompts on its own (echoed)"), _RELAYED),
    _p("prompt_cache_retention", Rule("ignored", "Azure caches agent prompts on its own"), _RELAYED),
    _p("prompt_cache_options", Rule("ignored", "Azure caches agent prompts on its own"), _RELAYED),
    _p("context_management", Rule("ignored", _RELAYED_IGNORED), _RELAYED),
    _p("moderation", Rule("ignored", "Azure's content filters apply"), _RELAYED),
)

TABLES: dict[str, tuple[Param, ...]] = {"chat": CHAT, "responses": RESPONSES}

_WARNED: dict[tuple[str, str], dict[str, tuple[int, Rule]]] = {
    (endpoint, backend): {
        p.name: (index, p.rule(backend))
        for index, p in enumerate(table)
        if p.rule(backend).status in ("ignored", "dropped")
    }
    for endpoint, table in TABLES.items()
    for backend in ("assistants", "foundry")
}
"""Per endpoint and backend, the parameters it cannot honour: their place in the table (warnings keep
table order) and their rule."""


@dataclass(frozen=True, slots=True)
class ParamWarning:
    param: str
    status: Status
    note: str

    def __str__(self) -> str:
        verb = "dropped" if self.status == "dropped" else "ignored"
        reason = self.note.removeprefix("dropped: ")
        return f"{self.param} {verb}: {reason}"


def unhonoured(endpoint: Endpoint, backend: str, body: Any) -> tuple[ParamWarning, ...]:
    """The parameters `body` (a request model; extra fields are attributes too) sets that `backend`
    cannot honour on `endpoint`, in table order."""
    out: list[ParamWarning] = []
    # Declared fields live in __dict__, extra ones in __pydantic_extra__: a failed getattr on a
    # pydantic model builds an exception (about 20 us each), too dear for two dozen names per turn.
    declared: dict[str, Any] = getattr(body, "__dict__", {})
    extra: dict[str, Any] = getattr(body, "__pydantic_extra__", None) or {}
    # Only what the client sent can need a warning: a request sets a handful of the table's names.
    sent = getattr(body, "model_fields_set", None)
    names = declared.keys() if sent is None else sent | extra.keys()
    table = _WARNED[(endpoint, "assistants" if backend == "assistants" else "foundry")]
    for _index, name in sorted((table[n][0], n) for n in names if n in table):
        rule = table[name][1]
        value = declared.get(name, extra.get(name))
        if value is None or _harmless(value, rule.harmless):
            continue
        out.append(ParamWarning(name, rule.status, rule.note))
    return tuple(out)


def _harmless(value: Any, harmless: Iterable[Any]) -> bool:
    if hasattr(value, "model_dump"):
        value = value.model_dump(exclude_none=True)
    return any(value == h and isinstance(value, bool) == isinstance(h, bool) for h in harmless)


def header(warnings: Iterable[ParamWarning]) -> str:
    """The `x-agent-bridge-warning` value: one `param verb: reason` per parameter, joined by `; `."""
    return "; ".join(str(w) for w in warnings)


def table_markdown() -> str:
    """docs/api.md's parameter table (a test keeps the page equal to it)."""
    lines: list[str] = []
    for endpoint, table in TABLES.items():
        title = "POST /v1/chat/completions" if endpoint == "chat" else "POST /v1/responses"
        lines += [f"`{title}`", "", "| parameter | Assistants routes | Foundry v2 routes |", "|---|---|---|"]
        for p in table:
            lines.append(f"| `{p.name}` | {_cell(p.assistants)} | {_cell(p.foundry)} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _cell(rule: Rule) -> str:
    note = rule.note.removeprefix("dropped: ")
    return f"{rule.status}: {note}" if note else rule.status
