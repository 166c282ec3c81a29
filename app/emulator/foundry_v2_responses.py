"""Foundry v2 Responses: create (plain, streamed, background) with an agent, get, delete, cancel, list."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from app.emulator.filters import prompt_refused
from app.emulator.foundry_v2_background import EventLog, produce
from app.emulator.foundry_v2_code import CodeOutput, code_tool, echo_tool, run_code
from app.emulator.foundry_v2_items import check_call_ids, normalize_input, script_items
from app.emulator.foundry_v2_output import output_of, usage_of
from app.emulator.foundry_v2_rules import refuse_overrides, refuse_server_items
from app.emulator.foundry_v2_state import AgentVersion, Conversation, FoundryState, StoredResponse
from app.emulator.foundry_v2_stream import numbered_events, stream_events
from app.emulator.foundry_v2_tools import check_approvals, mcp_server
from app.emulator.hooks import EmulatorContext
from app.emulator.http import EmulatorHTTPError, list_params, new_id, now, page, read_json
from app.emulator.script import Plan, Usage, chunk_text, plan_turn, prompt_filtered, words

# Every CreateResponse field openai-python 3.x can send, plus Foundry's additions.
CREATE_FIELDS = frozenset(
    {
        "access_programs",
        "background",
        "background_options",
        "context_management",
        "conversation",
        "image",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "model",
        "moderation",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
        "agent_reference",
        "agent",
        "structured_inputs",
    }
)
_REF_KEYS = ("type", "name", "version")


def _invalid(message: str, param: str, code: str = "invalid_value") -> EmulatorHTTPError:
    return EmulatorHTTPError(400, message, param=param, code=code)


def _optional(body: dict[str, Any], key: str, kind: type | tuple[type, ...], label: str) -> Any:
    value = body.get(key)
    if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
        raise _invalid(f"Invalid type for '{key}': expected {label}.", key, "invalid_type")
    return value


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") == "code_interpreter":
        return echo_tool(tool)
    if tool.get("type") != "function":
        return dict(tool)
    return {
        **tool,
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict"),
    }


def _request_tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid("Invalid type for 'tools': expected an array of tools.", "tools", "invalid_type")
    for index, tool in enumerate(value):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _invalid(
                f"Invalid type for 'tools[{index}]': expected a tool object.",
                f"tools[{index}]",
                "invalid_type",
            )
        if tool["type"] == "function" and not isinstance(tool.get("name"), str):
            raise _invalid(
                f"Missing required parameter: 'tools[{index}].name'.",
                f"tools[{index}].name",
                "missing_required_parameter",
            )
    return list(value)


def _agent_id(body: dict[str, Any]) -> str | None:
    agent = body.get("agent")
    return f"{agent['name']}:{agent['version']}" if agent else None


@dataclass
class Turn:
    """A create request, resolved: its stored record, the plan, and where its items go."""

    stored: StoredResponse
    plan: Plan
    output: list[dict[str, Any]]
    conversation: Conversation | None
    store: bool


class ResponsesAPI:
    """Handlers of `/api/projects/{project}/openai/v1/responses...`."""

    def __init__(self, ctx: EmulatorContext, state: FoundryState) -> None:
        self.ctx = ctx
        self.state = state

    # -- request resolution

    def _agent(self, body: dict[str, Any]) -> AgentVersion | None:
        keys = [k for k in ("agent_reference", "agent") if body.get(k) is not None]
        if len(keys) > 1:
            raise _invalid(
                "Mutually exclusive parameters: provide only one of 'agent_reference' or 'agent'.",
                "agent",
                "mutually_exclusive_parameters",
            )
        if not keys:
            return None
        key = keys[0]
        ref = body[key]
        if not isinstance(ref, dict):
            raise _invalid(f"Invalid type for '{key}': expected an object.", key, "invalid_type")
        for field in ref:
            if field not in _REF_KEYS:
                raise _invalid(f"Unknown parameter: '{key}.{field}'.", f"{key}.{field}", "unknown_parameter")
        if ref.get("type") != "agent_reference":
            raise _invalid(
                f"Invalid value: '{ref.get('type')}'. Supported values are: 'agent_reference'.", f"{key}.type"
            )
        name, version = ref.get("name"), ref.get("version")
        if not isinstance(name, str) or not name:
            raise _invalid(f"Missing required parameter: '{key}.name'.", f"{key}.name", "missing_required_parameter")
        if version is not None and not isinstance(version, str):
            raise _invalid(f"Invalid type for '{key}.version': expected a string.", f"{key}.version", "invalid_type")
        agent = self.state.agents.get(name)
        if agent is None:
            raise EmulatorHTTPError(404, f"Agent '{name}' not found.", param=key, code="not_found")
        if version is None:
            return agent.latest
        found = agent.versions.get(version)
        if found is None:
            raise EmulatorHTTPError(404, f"Agent '{name}' version '{version}' not found.", param=key, code="not_found")
        return found

    def _history(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], Conversation | None]:
        previous = _optional(body, "previous_response_id", str, "a string")
        conv_value = body.get("conversation")
        if previous is not None and conv_value is not None:
            raise _invalid(
                "Mutually exclusive parameters: Ensure you are only providing one of: "
                "'previous_response_id' or 'conversation'.",
                "conversation",
                "mutually_exclusive_parameters",
            )
        if previous is not None:
            stored = self.state.responses.get(previous)
            if stored is None:
                raise _invalid(
                    f"Previous response with id '{previous}' not found.",
                    "previous_response_id",
                    "previous_response_not_found",
                )
            return copy.deepcopy(stored.full_context), None
        if conv_value is None:
            return [], None
        conv_id = conv_value.get("id") if isinstance(conv_value, dict) else conv_value
        if not isinstance(conv_id, str) or (isinstance(conv_value, dict) and set(conv_value) != {"id"}):
            raise _invalid(
                "Invalid type for 'conversation': expected a string or an object with an 'id'.",
                "conversation",
                "invalid_type",
            )
        conversation = self.state.conversation(conv_id, param="conversation")
        return copy.deepcopy(conversation.items), conversation

    def resolve(self, body: dict[str, Any]) -> Turn:
        agent = self._agent(body)
        definition = agent.definition if agent is not None else {}
        if agent is None:
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise _invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
        else:
            # The version's own model, instructions, tools and sampling: overrides are refused, not merged.
            refuse_overrides(body)
            refuse_server_items(body.get("input"))
            model = str(definition.get("model") or "")
        for key, label in (
            ("store", "a boolean"),
            ("stream", "a boolean"),
            ("background", "a boolean"),
            ("parallel_tool_calls", "a boolean"),
        ):
            _optional(body, key, bool, label)
        _optional(body, "instructions", str, "a string")
        _optional(body, "metadata", dict, "an object")
        _optional(body, "temperature", (int, float), "a number")
        _optional(body, "top_p", (int, float), "a number")
        store = body.get("store") is not False
        if body.get("background") and not store:
            raise _invalid("Background responses must be stored: 'background' requires 'store' to be true.", "store")
        history, conversation = self._history(body)
        lookup_pool = {i["id"]: i for i in history if isinstance(i.get("id"), str)}
        input_items = normalize_input(body.get("input"), lambda ref: lookup_pool.get(ref) or self.state.items.get(ref))
        check_call_ids(history, input_items)
        check_approvals(history, input_items)
        asked = [i.text for i in script_items(input_items) if i.kind == "user"]
        if asked and prompt_filtered(asked[-1]):
            raise prompt_refused()

        tools = [*agent.function_tools, *agent.hosted_tools] if agent else _request_tools(body.get("tools"))
        tool_names = {t["name"] for t in tools if t.get("type") == "function"}
        source = definition if agent is not None else body
        instructions = source.get("instructions") if isinstance(source.get("instructions"), str) else None
        server = mcp_server(agent.hosted_tools) if agent else None
        plan = plan_turn(agent.name if agent else None, script_items([*history, *input_items]), tool_names, server)
        plan, code = self._code(plan, agent, history, _optional(body, "include", list, "an array") or [])

        def pick(key: str, default: Any) -> Any:
            return source[key] if source.get(key) is not None else default

        skeleton: dict[str, Any] = {
            "id": new_id("resp"),
            "object": "response",
            "created_at": now(),
            "status": "in_progress",
            "background": bool(body.get("background")),
            "completed_at": None,
            "error": None,
            "incomplete_details": None,
            "instructions": instructions or None,
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": model,
            "output": [],
            "parallel_tool_calls": pick("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": pick("reasoning", None),
            "service_tier": "default",
            "store": store,
            "temperature": pick("temperature", 1.0),
            "text": pick("text", {"format": {"type": "text"}}),
            "tool_choice": pick("tool_choice", "auto"),
            "tools": [_echo_tool(t) for t in tools],
            "top_p": pick("top_p", 1.0),
            "truncation": body.get("truncation") or "disabled",
            "metadata": body.get("metadata") or {},
            "conversation": {"id": conversation.id} if conversation else None,
        }
        if isinstance(body.get("user"), str):
            skeleton["user"] = body["user"]
        if agent is not None:
            skeleton["agent"] = {"type": "agent_id", "name": agent.name, "version": agent.version}
        stored = StoredResponse(body=skeleton, history=history, input_items=input_items)
        return Turn(
            stored=stored, plan=plan, output=output_of(plan, history, code), conversation=conversation, store=store
        )

    def _code(
        self, plan: Plan, agent: AgentVersion | None, history: list[dict[str, Any]], include: list[Any]
    ) -> tuple[Plan, CodeOutput | None]:
        """Run the plan's code in the conversation's container, when the agent version has the tool."""
        if plan.code is None:
            return plan, None
        tool = code_tool(agent.hosted_tools) if agent is not None else None
        if tool is None:
            text = "I have no code interpreter tool."
            usage = Usage(plan.usage.prompt_tokens, words(text))
            return replace(plan, code=None, text=text, deltas=chunk_text(text), usage=usage), None
        containers = self.state.containers
        code = run_code(plan.code, containers.container_for(tool, history), containers, include)
        usage = Usage(plan.usage.prompt_tokens, words(code.text) + words(code.call["code"]))
        return replace(plan, text=code.text, deltas=code.deltas, usage=usage), code

    # -- lifecycle

    def _register(self, turn: Turn) -> None:
        if turn.store:
            self.state.responses[turn.stored.body["id"]] = turn.stored
            self.state.index(turn.stored.input_items)

    def finish(self, turn: Turn) -> dict[str, Any]:
        """Set the final status, output and usage; append to the conversation. Idempotent."""
        body = turn.stored.body
        if body["status"] in ("completed", "failed", "incomplete", "cancelled"):
            return body
        plan = turn.plan
        body["output"] = turn.output
        body["usage"] = usage_of(plan)
        if plan.kind == "fail":
            body["status"] = "failed"
            body["error"] = {"code": plan.error_code, "message": plan.error_message}
        elif plan.kind == "incomplete":
            body["status"] = "incomplete"
            reason = "content_filter" if plan.incomplete_reason == "content_filter" else "max_output_tokens"
            body["incomplete_details"] = {"reason": reason}
        else:
            body["status"] = "completed"
            body["completed_at"] = now()
        if turn.store:
            self.state.index(turn.output)
        if turn.conversation is not None and turn.conversation.id in self.state.conversations:
            added = copy.deepcopy([*turn.stored.input_items, *turn.output])
            turn.conversation.items.extend(added)
            self.state.index(added)
        return body

    def _start_background(self, turn: Turn) -> EventLog:
        """The work of a background response, in a task of its own that a hang-up never stops."""
        stored = turn.stored
        stored.body["status"] = "queued"
        log = stored.log = EventLog()
        events = numbered_events(self.ctx, stored.body, turn.plan, turn.output, lambda: self.finish(turn))
        task = asyncio.get_running_loop().create_task(produce(events, log, lambda: self.finish(turn)))
        stored.task = task
        self.state.spawn(task)
        return log

    @staticmethod
    def _sse(events: AsyncIterator[bytes]) -> StreamingResponse:
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-request-id": new_id("req")},
        )

    # -- handlers

    async def create(self, request: Request) -> Response:
        body = await read_json(request, allowed=CREATE_FIELDS)
        turn = self.resolve(body)
        self._register(turn)
        return await self.serve(body, turn)

    async def serve(self, body: dict[str, Any], turn: Turn) -> Response:
        """The answer to a resolved create: background, streamed or plain."""
        if body.get("background"):
            snapshot = copy.deepcopy({**turn.stored.body, "status": "queued"})
            log = self._start_background(turn)
            return self._sse(log.relay()) if body.get("stream") else JSONResponse(snapshot)
        if body.get("stream"):
            stored = turn.stored
            return self._sse(stream_events(self.ctx, stored.body, turn.plan, turn.output, lambda: self.finish(turn)))
        try:
            if turn.plan.sleep_ms > 0:
                await asyncio.sleep(turn.plan.sleep_ms / 1000)
        finally:
            self.finish(turn)  # even if the client hung up while the "model" was thinking
        return JSONResponse(copy.deepcopy(turn.stored.body))

    async def retrieve(self, request: Request) -> Response:
        """A stored response; `?stream=true[&starting_after=N]` replays a background response's events."""
        stored = self.state.response(request.path_params["response_id"])
        q = request.query_params
        if q.get("stream") != "true":
            return JSONResponse(stored.body)
        if stored.log is None:
            raise _invalid("Only responses created with background=true can be streamed.", "stream")
        try:
            after = int(q.get("starting_after", "-1"))
        except ValueError as exc:
            raise _invalid("Invalid 'starting_after': expected an integer.", "starting_after", "invalid_type") from exc
        return self._sse(stored.log.relay(after))

    async def delete(self, request: Request) -> Response:
        response_id = request.path_params["response_id"]
        stored = self.state.response(response_id)
        if stored.task is not None:
            stored.task.cancel()
        del self.state.responses[response_id]
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})

    async def cancel(self, request: Request) -> Response:
        """Background only (openai-openapi `cancelResponse`: "Only responses created with the `background`
        parameter set to `true` can be cancelled"). The exact message and code of Azure's refusal were not
        established; this is a 400 `invalid_request_error` naming the rule, like OpenAI's other refusals.
        Cancelling a cancelled response answers it again; one that already ended cannot be cancelled."""
        stored = self.state.response(request.path_params["response_id"])
        body = stored.body
        if not body.get("background"):
            raise _invalid("Only responses created with background=true can be cancelled.", "response_id")
        if body["status"] in ("queued", "in_progress"):
            body["status"] = "cancelled"  # first: the task's own ending must not finish it instead
            if stored.task is not None:
                stored.task.cancel()
            if stored.log is not None:
                stored.log.close()
        elif body["status"] != "cancelled":
            raise _invalid(f"Cannot cancel a response with status '{body['status']}'.", "response_id")
        return JSONResponse(body)

    async def input_items(self, request: Request) -> Response:
        stored = self.state.response(request.path_params["response_id"])
        return JSONResponse(page(stored.input_items, **list_params(request)))

    async def list(self, request: Request) -> Response:
        """Foundry's extension: stored responses, filtered by `agent_name`, `agent_id`, `conversation_id`."""
        q = request.query_params
        bodies = [s.body for s in self.state.responses.values()]
        if q.get("agent_name"):
            bodies = [b for b in bodies if (b.get("agent") or {}).get("name") == q["agent_name"]]
        if q.get("agent_id"):
            bodies = [b for b in bodies if _agent_id(b) == q["agent_id"]]
        if q.get("conversation_id"):
            bodies = [b for b in bodies if (b.get("conversation") or {}).get("id") == q["conversation_id"]]
        return JSONResponse(page(bodies, **list_params(request)))
