"""The chat service: routes a model name to its backend and builds the chat turn the route opens and renders."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from app.core import approvals, chat_codec, conversation, migration
from app.core.annotations import rewritten
from app.core.background import BackgroundTasks
from app.core.conversation import ConversationIndex
from app.core.events import (
    ApprovalRequired,
    Cited,
    TextDelta,
    ThreadBound,
    ToolCallsRequired,
    TurnCompleted,
    TurnEvent,
)
from app.core.files import FileIndex, record_cited
from app.core.lifetime import InFlight, Turn, Work
from app.core.turn import Message, ToolCall, TurnRequest
from app.errors import InvalidRequestError, ModelNotFoundError
from app.settings import RouteSettings, Settings
from app.wire.chat import ChatCompletionRequest


def route_for(settings: Settings, model: str) -> RouteSettings:
    """The route behind a model name, or the 404 OpenAI gives for a model that does not exist."""
    route = settings.route(model)
    if route is None:
        raise ModelNotFoundError(f"The model '{model}' does not exist or you do not have access to it.", param="model")
    return route


class AgentBackend(Protocol):
    """Starts turns against Azure; each turn's work yields neutral events (see `app.core.events`)."""

    def turn(self, req: TurnRequest) -> Work[TurnEvent]: ...


@dataclass
class Reply:
    """What the agent said in a turn, accumulated from its events."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()

    def message(self) -> Message:
        return Message(role="assistant", text=self.text, tool_calls=self.tool_calls)


class _ChatWork:
    """A backend's turn (`req`), plus what the conversation index must learn when it completes."""

    def __init__(
        self,
        work: Work[TurnEvent],
        index: ConversationIndex,
        req: TurnRequest,
        *,
        conversation_id: str | None,
        files: FileIndex | None = None,
    ) -> None:
        self.files = files
        self.work = work
        self.index = index
        self.req = req
        self.conversation_id = conversation_id

    async def open(self) -> ThreadBound:
        return await self.work.open()

    async def close(self, ending: BaseException | None) -> None:
        await self.work.close(ending)

    async def events(self) -> AsyncIterator[TurnEvent]:
        """The backend's events; the conversation's new cursor is stored before the last one is yielded,
        and the file ids an event shows before it goes out (`app.core.files`)."""
        reply = Reply()
        parts: list[str] = []
        # The text as the client sees it (citations numbered) is what the conversation remembers.
        req = self.req
        async for event in rewritten(self.work.events(), req.route.citation_markers):
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, Cited):
                await record_cited(self.files, event, route=req.model, owner=req.owner)
            elif isinstance(event, ToolCallsRequired):
                reply.tool_calls = event.calls
            elif isinstance(event, ApprovalRequired):
                reply.tool_calls = tuple(approvals.as_tool_call(r) for r in event.requests)
            elif isinstance(event, TurnCompleted):
                reply.text = "".join(parts)
                await conversation.remember(
                    self.index,
                    owner=req.owner,
                    route=req.model,
                    items=req.items,
                    reply=reply.message(),
                    cursor=event.cursor,
                    conversation_id=self.conversation_id,
                    previous_cursor=req.cursor,
                    instructions=req.instructions,
                )
            yield event


class TurnService:
    """Routes a chat request to its backend and hands the route a `Turn` to open and render."""

    def __init__(
        self,
        settings: Settings,
        backends: Mapping[str, AgentBackend],
        index: ConversationIndex,
        *,
        tasks: BackgroundTasks,
        inflight: InFlight,
        files: FileIndex | None = None,
        carry: migration.Carry | None = None,
        calls: migration.CallIndex | None = None,
        tool_schemas: migration.ToolSchemas | None = None,
    ) -> None:
        self.tool_schemas = tool_schemas
        self.carry = carry
        self.calls = calls
        self.files = files
        self.settings = settings
        self.backends = backends
        self.index = index
        self.tasks = tasks
        self.inflight = inflight

    async def chat(self, req: ChatCompletionRequest, *, owner: str, conversation_id: str | None) -> Turn[TurnEvent]:
        """A chat turn, validated and placed in its conversation; the route opens it."""
        route = route_for(self.settings, req.model)
        limit = self.settings.limits.max_messages
        if len(req.messages) > limit:
            raise InvalidRequestError(
                f"Too many messages: {len(req.messages)}; this bridge accepts at most {limit}.",
                param="messages",
                code="too_many_messages",
            )
        parsed = chat_codec.parse_request(req)
        if self.tool_schemas is not None and route.backend == "assistants" and parsed.tools:
            await self.tool_schemas.note(req.model, parsed.tools)
        items = approvals.resolve(parsed.items)
        found = await conversation.resolve(
            self.index,
            owner=owner,
            route=req.model,
            items=items,
            conversation_id=conversation_id,
            # A migrating route's cursor may be a thread or a conversation: both only grow, so both are taken.
            claim=route.backend == "assistants" or route.migrate_from is not None,
            instructions=parsed.instructions,
        )
        deadline = time.monotonic() + route.timeout
        cursor, backend = found.cursor, route.backend
        if route.migrate_from is not None and self.carry is not None and self.calls is not None:
            source = route.source_route()
            if source is not None and await migration.chat_outputs_wait(self.calls, items, owner):
                route, backend = source, "assistants"  # the run finishes where it waits
            else:
                cursor = await migration.carried_cursor(
                    self.carry,
                    self.index,
                    cursor=cursor,
                    owner=owner,
                    route=req.model,
                    conversation_id=conversation_id,
                    deadline=deadline,
                )
        turn = TurnRequest(
            owner=owner,
            model=req.model,
            route=route,
            items=items,
            cursor=cursor,
            new_items=found.new_items,
            instructions=parsed.instructions,
            tools=parsed.tools,
            options=parsed.options,
            deadline=deadline,
            approvals=approvals.mode_for(route.mcp_approval, dialect="chat"),
        )
        work = _ChatWork(
            self.backends[backend].turn(turn), self.index, turn, conversation_id=conversation_id, files=self.files
        )
        return Turn(work, deadline=deadline, timeout_s=route.timeout, tasks=self.tasks, inflight=self.inflight)
