"""`/v1/responses` for any route: Assistants turns rendered as Responses, Foundry v2 relayed whole.

Response ids are owner-scoped: every id handed to a client is recorded with its owner before the
client sees it, and every lookup (`previous_response_id`, GET, DELETE) checks it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from app.core import approvals, conversation, failures, responses_codec
from app.core.annotations import parse_response_annotation
from app.core.conversation import ConversationIndex
from app.core.events import ApprovalRequired, Cited, TextDelta, ThreadBound, ToolCallsRequired, TurnCompleted, TurnEvent
from app.core.files import FileIndex, recorded, records_of
from app.core.records import ResponseRecord
from app.core.service import AgentBackend, route_for
from app.core.turn import Item, TurnRequest
from app.errors import BridgeError, InvalidRequestError, NotFoundError, RunFailedError
from app.settings import RouteSettings, Settings
from app.wire.responses import ResponsesRequest

StreamEvent = dict[str, Any]


class ResponseIndex(Protocol):
    async def save_response(self, rec: ResponseRecord) -> None: ...

    async def get_response(self, response_id: str, owner: str) -> ResponseRecord | None: ...

    async def delete_response(self, response_id: str) -> None: ...

    async def claim_conversation(self, conversation_id: str, owner: str) -> bool: ...


class ResponsesPassthrough(Protocol):
    """The Foundry v2 side: forwards a sanitized body with the route's agent_reference."""

    def stream(
        self, body: dict[str, Any], *, model: str, deadline: float
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]: ...

    async def get(self, response_id: str, model: str) -> dict[str, Any]: ...

    async def delete(self, response_id: str, model: str) -> dict[str, Any]: ...


_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def final_response(events: list[StreamEvent]) -> dict[str, Any]:
    """The Response a plain (non-streamed) request returns: the one the terminal event carries."""
    for event in reversed(events):
        if event.get("type") in _TERMINAL:
            response: dict[str, Any] = event["response"]
            if response.get("status") == "failed":
                error = response.get("error") or {}
                raise failures.run_failure(
                    error.get("code"), error.get("message") or "no reason given", what="response"
                )
            return response
    raise RunFailedError("The agent's response ended without a final status.", code="upstream_stream_ended")


class ResponsesService:
    def __init__(
        self,
        settings: Settings,
        backends: Mapping[str, AgentBackend],
        index: ResponseIndex,
        passthrough: ResponsesPassthrough | None,
        conversations: ConversationIndex,
        files: FileIndex | None = None,
    ) -> None:
        self.files = files
        self.conversations = conversations
        self.settings = settings
        self.backends = backends
        self.index = index
        self.passthrough = passthrough

    async def _previous(self, req: ResponsesRequest, owner: str) -> ResponseRecord | None:
        if not req.previous_response_id:
            return None
        record = await self.index.get_response(req.previous_response_id, owner)
        if record is None or record.route != req.model:
            raise NotFoundError(
                f"Previous response with id '{req.previous_response_id}' not found.",
                param="previous_response_id",
            )
        return record

    def respond(self, req: ResponsesRequest, body: dict[str, Any], *, owner: str) -> AsyncIterator[StreamEvent]:
        """Responses stream events for one request, whatever the backend (first event: response.created)."""
        route = route_for(self.settings, req.model)
        if route.backend == "foundry":
            return self._relay(req, body, route, owner)
        return self._assistants(req, route, owner)

    async def _assistants(self, req: ResponsesRequest, route: RouteSettings, owner: str) -> AsyncIterator[StreamEvent]:
        if req.conversation is not None:
            raise InvalidRequestError(
                "conversation is available on Foundry v2 routes; on Assistants routes continue a "
                "conversation with previous_response_id.",
                param="conversation",
            )
        items, instructions = responses_codec.parse_input(req)
        previous = await self._previous(req, owner)
        if previous is not None:
            cursor, new_items = previous.thread_id, items
        else:
            # A client that resends the whole input (the Agents SDK does) is followed like a chat client.
            found = await conversation.resolve(
                self.conversations, owner=owner, route=req.model, items=items, conversation_id=None
            )
            cursor, new_items = found.cursor, found.new_items
        turn = TurnRequest(
            owner=owner,
            model=req.model,
            route=route,
            items=items,
            cursor=cursor,
            new_items=new_items,
            instructions=instructions,
            tools=responses_codec.parse_tools(req),
            options=responses_codec.parse_options(req),
            deadline=time.monotonic() + route.timeout,
            approvals=approvals.mode_for(route.mcp_approval, dialect="responses"),
        )
        builder = responses_codec.ResponseBuilder(req, markers=route.citation_markers)
        events = recorded(self.backends["assistants"].run_turn(turn), self.files, route=req.model, owner=owner)
        try:
            async for out in self._play(req, builder, events, items, previous, owner):
                yield out
        except BridgeError as exc:
            if not req.stream or not builder.started:
                raise
            # A streamed Response that fails ends with response.failed (SDKs wait for a terminal event).
            for out in builder.fail(exc):
                yield out

    async def _play(
        self,
        req: ResponsesRequest,
        builder: responses_codec.ResponseBuilder,
        events: AsyncIterator[TurnEvent],
        items: tuple[Item, ...],
        previous: ResponseRecord | None,
        owner: str,
    ) -> AsyncIterator[StreamEvent]:
        async for event in events:
            if isinstance(event, ThreadBound):
                for out in builder.start():
                    yield out
            elif isinstance(event, TextDelta):
                for out in builder.text(event.text):
                    yield out
            elif isinstance(event, Cited):
                for out in builder.cite(event.annotations):
                    yield out
            elif isinstance(event, ToolCallsRequired):
                for out in builder.tool_calls(event.calls):
                    yield out
            elif isinstance(event, ApprovalRequired):
                for out in builder.approvals(event.requests):
                    yield out
            elif isinstance(event, TurnCompleted):
                final = builder.finish(event.finish_reason, event.usage)
                if previous is None:
                    await conversation.remember(
                        self.conversations,
                        owner=owner,
                        route=req.model,
                        items=items,
                        reply=builder.reply(),
                        cursor=event.cursor,
                        conversation_id=None,
                    )
                if req.store is not False:
                    await self.index.save_response(
                        ResponseRecord(
                            response_id=builder.id,
                            owner=owner,
                            route=req.model,
                            backend="assistants",
                            thread_id=event.cursor,
                            run_id=None,
                            upstream_id=None,
                            created_at=time.time(),
                            data={"response": builder.response()},
                        )
                    )
                for out in final:
                    yield out

    async def _relay(
        self, req: ResponsesRequest, body: dict[str, Any], route: RouteSettings, owner: str
    ) -> AsyncIterator[StreamEvent]:
        assert self.passthrough is not None
        await self._previous(req, owner)
        if req.conversation is not None:
            conversation_id = req.conversation if isinstance(req.conversation, str) else req.conversation.get("id")
            if not isinstance(conversation_id, str) or not await self.index.claim_conversation(conversation_id, owner):
                raise NotFoundError(f"Conversation '{conversation_id}' not found.", param="conversation")
        async for name, data in self.passthrough.stream(
            body, model=req.model, deadline=time.monotonic() + route.timeout
        ):
            if name == "response.created":
                upstream_id = data["response"]["id"]
                await self.index.save_response(
                    ResponseRecord(
                        response_id=upstream_id,
                        owner=owner,
                        route=req.model,
                        backend="foundry",
                        thread_id=None,
                        run_id=None,
                        upstream_id=upstream_id,
                        created_at=time.time(),
                    )
                )
            elif name == "response.output_text.annotation.added" and self.files is not None:
                annotation = parse_response_annotation(data.get("annotation"))
                if annotation is not None and annotation.file_id:
                    await self.files.save_files(records_of([annotation], route=req.model, owner=owner))
            yield data

    async def get(self, response_id: str, *, owner: str) -> dict[str, Any]:
        record = await self._owned(response_id, owner)
        if record.backend == "foundry":
            assert self.passthrough is not None
            return await self.passthrough.get(record.upstream_id or response_id, record.route)
        response: dict[str, Any] = record.data.get("response", {})
        return response

    async def delete(self, response_id: str, *, owner: str) -> dict[str, Any]:
        record = await self._owned(response_id, owner)
        if record.backend == "foundry":
            assert self.passthrough is not None
            await self.passthrough.delete(record.upstream_id or response_id, record.route)
        await self.index.delete_response(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def _owned(self, response_id: str, owner: str) -> ResponseRecord:
        record = await self.index.get_response(response_id, owner)
        if record is None:
            raise NotFoundError(f"Response with id '{response_id}' not found.", param="response_id")
        return record
