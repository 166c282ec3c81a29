"""An agent's own endpoint: `POST {project}/agents/{agent_name}/endpoint/protocols/openai/responses`.

Each v2 agent has a stable endpoint of its own with protocol settings (`responses`, `activity`, `a2a`,
...; learn.microsoft.com azure/foundry/agents/how-to/configure-agent and migrate-agent-applications;
Azure/azure-rest-api-specs#43460). Its Responses API is stateless: a request with `conversation` is a
400 "Endpoint-scoped response APIs are stateless and do not support conversation context. Remove the
'conversation' property." (Azure/azure-dev#7507, 2026-04-05; the error's `code` is not quoted there:
this answers `invalid_value` with `param: "conversation"`). Agent Applications published before it
served stateless Responses only (MicrosoftDocs publish-responses.md, 2026-02-13).

What the sources leave open, decided here (docs/reference/agent-endpoints.md says so too):
- `previous_response_id` is conversation context too: refused the same way, naming that property
  (the message by analogy with the quoted one);
- nothing is kept: the response is not stored whatever `store` says (so it cannot be fetched, continued
  or cancelled, and a `background` request is refused as one that cannot be stored);
- the path names the agent (its latest version); an `agent_reference` or `agent` in the body is ignored.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.emulator.foundry_v2_responses import CREATE_FIELDS, ResponsesAPI
from app.emulator.http import EmulatorHTTPError, read_json

STATELESS = (
    "Endpoint-scoped response APIs are stateless and do not support conversation context. "
    "Remove the '{property}' property."
)


class AgentEndpointAPI:
    def __init__(self, responses: ResponsesAPI) -> None:
        self.responses = responses

    async def create(self, request: Request) -> Response:
        body = await read_json(request, allowed=CREATE_FIELDS)
        for context in ("conversation", "previous_response_id"):
            if body.get(context) is not None:
                raise EmulatorHTTPError(400, STATELESS.format(property=context), param=context, code="invalid_value")
        name = request.path_params["agent_name"]
        body.pop("agent", None)
        body["agent_reference"] = {"type": "agent_reference", "name": name}
        body["store"] = False  # what this endpoint does with every response: keep nothing
        turn = self.responses.resolve(body)
        return await self.responses.serve(body, turn)
