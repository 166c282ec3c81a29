"""Foundry v2 agents (`/api/projects/{project}/agents...?api-version=v1`): named agents and their versions."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.emulator.foundry_v2_state import FoundryState
from app.emulator.http import EmulatorHTTPError, list_params, page, read_json

API_VERSIONS = ("v1", "2025-05-01", "2025-05-15-preview", "2025-11-15-preview")
AGENT_KINDS = ("prompt", "hosted", "workflow", "external", "voice")
VERSION_FIELDS = (
    "definition",
    "description",
    "metadata",
    "blueprint_reference",
    "draft",
    "digital_worker_type",
)
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def check_api_version(request: Request) -> None:
    """Azure's project data-plane needs `?api-version=`; azure-ai-projects 2.x sends `v1`."""
    version = request.query_params.get("api-version")
    if not version:
        raise EmulatorHTTPError(
            400,
            "The api-version query parameter (?api-version=) is required for all requests.",
            param="api-version",
            code="MissingApiVersionParameter",
        )
    if version not in API_VERSIONS:
        supported = ", ".join(f"'{v}'" for v in API_VERSIONS)
        raise EmulatorHTTPError(
            400,
            f"Unsupported api-version '{version}'. The supported api-versions are {supported}.",
            param="api-version",
            code="UnsupportedApiVersion",
        )


def _bad(message: str, param: str, code: str = "invalid_value") -> EmulatorHTTPError:
    return EmulatorHTTPError(400, message, param=param, code=code)


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise _bad(
            f"Invalid agent name '{name}': it must start and end with a letter or digit, may contain hyphens "
            "in between, and must not exceed 63 characters.",
            "agent_name",
        )
    return name


def check_definition(definition: Any) -> dict[str, Any]:
    if not isinstance(definition, dict):
        raise _bad("Invalid type for 'definition': expected an object.", "definition", "invalid_type")
    kind = definition.get("kind")
    if kind not in AGENT_KINDS:
        allowed = ", ".join(f"'{k}'" for k in AGENT_KINDS)
        raise _bad(f"Invalid value: '{kind}'. Supported values are: {allowed}.", "definition.kind")
    if kind == "prompt" and not isinstance(definition.get("model"), str):
        raise _bad(
            "Missing required parameter: 'definition.model'.",
            "definition.model",
            "missing_required_parameter",
        )
    if definition.get("instructions") is not None and not isinstance(definition["instructions"], str):
        raise _bad(
            "Invalid type for 'definition.instructions': expected a string.",
            "definition.instructions",
            "invalid_type",
        )
    tools = definition.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _bad("Invalid type for 'definition.tools': expected an array.", "definition.tools", "invalid_type")
    for index, tool in enumerate(tools or []):
        where = f"definition.tools[{index}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _bad(f"Invalid type for '{where}': expected a tool object.", where, "invalid_type")
        if tool["type"] == "function":
            if "function" in tool:
                # Assistants' nested shape; v2 function tools are flat (`{"type","name","parameters",...}`).
                raise _bad(f"Unknown parameter: '{where}.function'.", f"{where}.function", "unknown_parameter")
            if not isinstance(tool.get("name"), str):
                raise _bad(
                    f"Missing required parameter: '{where}.name'.",
                    f"{where}.name",
                    "missing_required_parameter",
                )
    return definition


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _bad("Invalid type for 'metadata': expected an object of strings.", "metadata", "invalid_type")
    return dict(value)


def _description(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _bad("Invalid type for 'description': expected a string.", "description", "invalid_type")
    return value


class AgentsAPI:
    """Handlers of the agents routes; every one checks `api-version` first."""

    def __init__(self, state: FoundryState) -> None:
        self.state = state

    async def list_agents(self, request: Request) -> Response:
        check_api_version(request)
        kind = request.query_params.get("kind")
        agents = [a for a in self.state.agents.values() if kind is None or a.latest.definition.get("kind") == kind]
        return JSONResponse(page([a.as_dict() for a in agents], **list_params(request)))

    async def create_agent(self, request: Request) -> Response:
        """Legacy (pre-v1) `POST /agents` with `{"name", "definition"}`: a first or a new version."""
        check_api_version(request)
        body = await read_json(request, allowed=("name", *VERSION_FIELDS), required=("name", "definition"))
        name = check_name(body["name"])
        self.state.add_version(
            name,
            check_definition(body["definition"]),
            _description(body.get("description")),
            _metadata(body.get("metadata")),
        )
        return JSONResponse(self.state.agents[name].as_dict())

    async def get_agent(self, request: Request) -> Response:
        check_api_version(request)
        return JSONResponse(self.state.agent(request.path_params["agent_name"]).as_dict())

    async def update_agent(self, request: Request) -> Response:
        """Legacy `POST /agents/{name}`: a new version only if something changed."""
        check_api_version(request)
        agent = self.state.agent(request.path_params["agent_name"])
        body = await read_json(request, allowed=VERSION_FIELDS, required=("definition",))
        definition = check_definition(body["definition"])
        description, metadata = _description(body.get("description")), _metadata(body.get("metadata"))
        latest = agent.latest
        if (definition, description, metadata) != (latest.definition, latest.description, latest.metadata):
            self.state.add_version(agent.name, definition, description, metadata)
        return JSONResponse(agent.as_dict())

    async def delete_agent(self, request: Request) -> Response:
        check_api_version(request)
        agent = self.state.agent(request.path_params["agent_name"])
        del self.state.agents[agent.name]
        return JSONResponse({"object": "agent.deleted", "name": agent.name, "deleted": True})

    async def create_version(self, request: Request) -> Response:
        check_api_version(request)
        name = check_name(request.path_params["agent_name"])
        body = await read_json(request, allowed=VERSION_FIELDS, required=("definition",))
        version = self.state.add_version(
            name,
            check_definition(body["definition"]),
            _description(body.get("description")),
            _metadata(body.get("metadata")),
        )
        return JSONResponse(version.as_dict())

    async def list_versions(self, request: Request) -> Response:
        check_api_version(request)
        agent = self.state.agent(request.path_params["agent_name"])
        return JSONResponse(page([v.as_dict() for v in agent.versions.values()], **list_params(request)))

    async def get_version(self, request: Request) -> Response:
        check_api_version(request)
        p = request.path_params
        return JSONResponse(self.state.version(p["agent_name"], p["agent_version"]).as_dict())

    async def delete_version(self, request: Request) -> Response:
        check_api_version(request)
        p = request.path_params
        version = self.state.version(p["agent_name"], p["agent_version"])
        agent = self.state.agents[version.name]
        del agent.versions[version.version]
        if not agent.versions:
            del self.state.agents[agent.name]
        return JSONResponse(
            {
                "object": "agent.version.deleted",
                "name": version.name,
                "version": version.version,
                "deleted": True,
            }
        )
