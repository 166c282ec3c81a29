"""`migrate-agent`: the v2 agent version a route names, made (or checked) from the Assistants agent it served before.

Model, instructions, sampling and built-in tools come from the Assistants agent; function tools from its
definition and from the schemas clients sent on the route while it served Assistants (Assistants took
tools per run, a v2 agent declares them: `CarryStore.record_tools`). What has no v2 equivalent here is
reported, not guessed. Field names: docs/reference/carry.md (Microsoft's v1-to-v2 migration sample).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from app.errors import InvalidRequestError, NotFoundError

MAPPED_TOOLS = ("function", "code_interpreter", "file_search")


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    """Assistants' nested function (`{"type","function":{...}}`) or a recorded schema, as v2's flat tool."""
    nested = tool.get("function")
    inner: dict[str, Any] = nested if isinstance(nested, dict) else tool
    out: dict[str, Any] = {"type": "function", "name": inner.get("name")}
    for key in ("description", "parameters", "strict"):
        if inner.get(key) is not None:
            out[key] = inner[key]
    return out


def definition_of(assistant: dict[str, Any], recorded: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The prompt-agent definition, and what could not be mapped."""
    lost: list[str] = []
    definition: dict[str, Any] = {"kind": "prompt", "model": assistant.get("model")}
    for key in ("instructions", "temperature", "top_p"):
        if assistant.get(key) is not None:
            definition[key] = assistant[key]
    if assistant.get("response_format") not in (None, "auto"):
        lost.append(f"response_format {assistant['response_format']!r} (set text.format on the v2 agent by hand)")
    tools: list[dict[str, Any]] = []
    names: set[str] = set()
    resources = assistant.get("tool_resources") or {}
    for tool in assistant.get("tools") or []:
        kind = tool.get("type")
        if kind == "function":
            mapped = _function(tool)
            names.add(str(mapped["name"]))
            tools.append(mapped)
        elif kind == "code_interpreter":
            files = (resources.get("code_interpreter") or {}).get("file_ids") or []
            tools.append({"type": "code_interpreter", "container": {"type": "auto", "file_ids": files}})
        elif kind == "file_search":
            stores = (resources.get("file_search") or {}).get("vector_store_ids") or []
            if stores:
                tools.append({"type": "file_search", "vector_store_ids": stores})
            else:
                lost.append("file_search without a vector store")
        else:
            lost.append(f"tool {kind} (configure its connection on the v2 agent by hand)")
    for name, schema in recorded.items():
        if name not in names:
            tools.append(_function(schema))
    if tools:
        definition["tools"] = tools
    return definition, lost


def _differences(want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(want) | set(have)):
        if key == "tools":
            a = sorted(str(t.get("name") or t.get("type")) for t in want.get("tools") or [])
            b = sorted(str(t.get("name") or t.get("type")) for t in have.get("tools") or [])
            if a != b:
                out.append(f"tools: want {a}, the agent has {b}")
        elif want.get(key) != have.get(key):
            out.append(f"{key}: want {want.get(key)!r}, the agent has {have.get(key)!r}")
    return out


async def migrate_agent(built: Any, route_name: str, *, dry_run: bool) -> dict[str, Any]:
    """Read the Assistants agent, then create the v2 version (or report how the existing one differs)."""
    route = built.settings.route(route_name)
    if route is None or route.migrate_from is None or route.agent is None:
        raise InvalidRequestError(f"Route '{route_name}' is not a Foundry v2 route with migrate_from.", param="route")
    source = built.assistants_clients[route_name]
    target = built.foundry_clients[route_name]
    assistant = await source.get_assistant(route.migrate_from.assistant_id)
    want, lost = definition_of(assistant, await built.carry_store.tools(route_name))
    name = route.agent.name
    base = f"{target.project}/agents/{quote(name, safe='')}"
    params = {"api-version": "v1"}
    report: dict[str, Any] = {"route": route_name, "agent": name, "definition": want, "not_mapped": lost}
    try:
        path = base + (f"/versions/{quote(route.agent.version, safe='')}" if route.agent.version else "")
        existing = await target.upstream.request("GET", path, params=params, operation="get_agent_version")
        if not route.agent.version:
            existing = (existing.get("versions") or {}).get("latest") or {}
    except NotFoundError:
        existing = None
    if existing is not None:
        differences = _differences(want, existing.get("definition") or {})
        report.update(version=existing.get("version"), exists=True, differences=differences, ok=not differences)
        return report
    report.update(exists=False, differences=[])
    if dry_run:
        report.update(ok=True, created=False)
        return report
    body = {"definition": want, "metadata": {"migrated_from": route.migrate_from.assistant_id}}
    made = await target.upstream.request(
        "POST", base + "/versions", params=params, json=body, idempotent=False, operation="create_agent_version"
    )
    report.update(ok=True, created=True, version=made.get("version"))
    if route.agent.version and str(made.get("version")) != route.agent.version:
        report["note"] = f"created version {made.get('version')}; the route names {route.agent.version}: update it"
    return report
