"""What Foundry v2 refuses in a Responses request: per-request overrides of an agent, and server-side items.

**Overrides next to `agent_reference` (or the legacy `agent`).** A response made by an agent version
takes that version's model, instructions, tools and sampling; the service refuses a request that
carries its own. Sources, all quoting Azure's 400:

- `temperature`, `top_p`: microsoft/agent-framework#2573 (Dec 2025), both refused in one body:
  `{"error": {"code": "invalid_payload", "message": "Invalid payload", "param": null,
  "type": "invalid_request_error", "details": [{"code": "ValidationError", "message": "Not allowed
  when agent is specified.", "param": "temperature", "type": "error"}, {... "param": "top_p" ...}],
  "additionalInfo": {"request_id": "..."}}}`.
- `tools`: microsoft/agent-framework#5130 (Apr 2026) and #6657 (Jun 2026), refused alone:
  `{"error": {"code": "invalid_payload", "message": "Not allowed when agent is specified.",
  "param": "tools", "type": "invalid_request_error", "details": [], "additionalInfo": {...}}}`;
  #5087 reports the same refusal. So the two sources show two shapes: one refused parameter is
  reported at the top level with empty `details`; several are reported as "Invalid payload" with one
  `details[]` entry each. The emulator answers both ways, by that count.
- `tool_choice`, `parallel_tool_calls`: agent-framework's fix for #5087 (PR #5101, and PR #6644 for
  the preview path) strips them together with `tools`, "the tool schemas must live on the agent
  version"; no source quotes their refusal on its own. Thin, so the stricter reading: refused.
- `instructions`, `text` and `reasoning`: no Microsoft source; public third-party code written
  against Foundry says the service answers "Not allowed when agent is specified" for an
  `instructions` override (`param: instructions`), for `text` (the response format) and for a
  `reasoning` override (the agent version's own reasoning applies). Thin, so the stricter reading:
  refused.
- `model` is not refused: all Foundry REST examples omit it and whether a differing `model` is
  refused was not established (docs/reference/azure-wire.md §3.2); it is ignored next to an agent.
  Sampling and output limits that no source names (`max_output_tokens`, `truncation`, ...) are
  accepted.

**Server-side output items resent as input** (`mcp_list_tools`, `web_search_call`, `reasoning`,
...): microsoft/agent-framework#5338 quotes `{"error": {"code": "invalid_payload", "message": "The
provided data does not match the expected schema", "param": "/", "type": "invalid_request_error",
"details": [], "additionalInfo": {...}}}` for a hand-off that forwarded another agent's `output[]`
(web search, file search, code interpreter, MCP, Fabric). The emulator refuses every item type that
only the service produces: the hosted tools' calls, MCP tool listings, calls and approval requests,
and reasoning items. What the client produces (`message`, `function_call`, `function_call_output`,
`mcp_approval_response`, `item_reference`) stays valid input.
"""

from __future__ import annotations

from typing import Any

from app.emulator.http import EmulatorHTTPError, new_id

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
"""Request fields refused next to an agent reference, in the order their refusals are listed."""

NOT_ALLOWED = "Not allowed when agent is specified."

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


def _request_info() -> dict[str, Any]:
    return {"additionalInfo": {"request_id": new_id("req").removeprefix("req_")}}


def refuse_overrides(body: dict[str, Any]) -> None:
    """A 400 `invalid_payload` naming every override present (a JSON `null` counts as absent)."""
    refused = [key for key in AGENT_OVERRIDES if body.get(key) is not None]
    if not refused:
        return
    if len(refused) == 1:
        raise EmulatorHTTPError(
            400, NOT_ALLOWED, param=refused[0], code="invalid_payload", extra={"details": [], **_request_info()}
        )
    details = [{"code": "ValidationError", "message": NOT_ALLOWED, "param": key, "type": "error"} for key in refused]
    raise EmulatorHTTPError(
        400, "Invalid payload", param=None, code="invalid_payload", extra={"details": details, **_request_info()}
    )


def refuse_server_items(raw_items: Any) -> None:
    """A 400 `invalid_payload` if `input` resends an item that only the service produces."""
    if not isinstance(raw_items, list):
        return
    for item in raw_items:
        if isinstance(item, dict) and item.get("type") in SERVER_SIDE_ITEMS:
            raise EmulatorHTTPError(
                400,
                "The provided data does not match the expected schema",
                param="/",
                code="invalid_payload",
                extra={"details": [], **_request_info()},
            )
