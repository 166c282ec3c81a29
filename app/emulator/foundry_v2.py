"""Foundry v2 ("new Foundry"): Responses with `agent_reference`, Conversations, and versioned agents.

Routes, relative to a project endpoint `/api/projects/{project}`:
- `/openai/v1/responses[...]` and `/openai/v1/conversations[...]` (OpenAI shapes, no api-version);
- `/agents[...]` (Foundry shapes, `?api-version=v1` required);
- `/agents/{name}/endpoint/protocols/openai/responses`: the agent's own stateless endpoint (`foundry_v2_endpoint`).
Preloaded unless `options.empty`: prompt agents `demo-agent`, `flights-demo`, `mcp-agent` and `code-agent`,
version "1" each (flights-demo's definition declares the seed's two function tools; mcp-agent's an `mcp`
tool "docs" with `require_approval: "always"`, whose items are `foundry_v2_tools`; code-agent's a
`code_interpreter` tool, whose calls, cited files and `/containers/...` files are `foundry_v2_code`).
What a request next to an agent may not carry: `foundry_v2_rules`; background responses (cancel, streams
that resume): `foundry_v2_background`; who may call a project at all: `hooks._authorised` (Entra only).
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route

from app.emulator.foundry_v2_agents import AgentsAPI
from app.emulator.foundry_v2_conversations import ConversationsAPI
from app.emulator.foundry_v2_endpoint import AgentEndpointAPI
from app.emulator.foundry_v2_responses import ResponsesAPI
from app.emulator.foundry_v2_state import FoundryState
from app.emulator.hooks import EmulatorContext

PROJECT = "/api/projects/{project}"


def build(ctx: EmulatorContext) -> list[BaseRoute]:
    state = FoundryState()
    state.reset(seed=not ctx.options.empty)
    ctx.resets.append(lambda: state.reset(seed=not ctx.options.empty))

    responses = ResponsesAPI(ctx, state)
    conversations = ConversationsAPI(state)
    agents = AgentsAPI(state)
    endpoint = AgentEndpointAPI(responses)
    openai_v1 = [
        Route("/responses", responses.create, methods=["POST"]),
        Route("/responses", responses.list, methods=["GET"]),
        Route("/responses/{response_id}", responses.retrieve, methods=["GET"]),
        Route("/responses/{response_id}", responses.delete, methods=["DELETE"]),
        Route("/responses/{response_id}/cancel", responses.cancel, methods=["POST"]),
        Route("/responses/{response_id}/input_items", responses.input_items, methods=["GET"]),
        *state.containers.routes(),
        Route("/conversations", conversations.create, methods=["POST"]),
        Route("/conversations/{conversation_id}", conversations.retrieve, methods=["GET"]),
        Route("/conversations/{conversation_id}", conversations.update, methods=["POST"]),
        Route("/conversations/{conversation_id}", conversations.delete, methods=["DELETE"]),
        Route("/conversations/{conversation_id}/items", conversations.add_items, methods=["POST"]),
        Route("/conversations/{conversation_id}/items", conversations.list_items, methods=["GET"]),
        Route("/conversations/{conversation_id}/items/{item_id}", conversations.retrieve_item, methods=["GET"]),
        Route("/conversations/{conversation_id}/items/{item_id}", conversations.delete_item, methods=["DELETE"]),
    ]
    agent_routes = [
        Route("/{agent_name}", agents.get_agent, methods=["GET"]),
        Route("/{agent_name}", agents.update_agent, methods=["POST"]),
        Route("/{agent_name}", agents.delete_agent, methods=["DELETE"]),
        Route("/{agent_name}/versions", agents.create_version, methods=["POST"]),
        Route("/{agent_name}/versions", agents.list_versions, methods=["GET"]),
        Route("/{agent_name}/versions/{agent_version}", agents.get_version, methods=["GET"]),
        Route("/{agent_name}/versions/{agent_version}", agents.delete_version, methods=["DELETE"]),
        Route("/{agent_name}/endpoint/protocols/openai/responses", endpoint.create, methods=["POST"]),
    ]
    return [
        Mount(f"{PROJECT}/openai/v1", routes=openai_v1),
        # `/agents` itself is a plain route: a Mount only matches paths below its prefix.
        Route(f"{PROJECT}/agents", agents.list_agents, methods=["GET"]),
        Route(f"{PROJECT}/agents", agents.create_agent, methods=["POST"]),
        Mount(f"{PROJECT}/agents", routes=agent_routes),
    ]
