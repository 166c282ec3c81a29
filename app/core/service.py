"""The service: routes a model name to its backend and plays a chat turn through the neutral core."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from app.core import approvals, chat_codec, conversation
from app.core.annotations import rewritten
from app.core.conversation import ConversationIndex
from app.core.events import ApprovalRequired, TextDelta, ToolCallsRequired, TurnCompleted, TurnEvent
from app.core.files import FileIndex, recorded
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
    """Plays one turn against Azure and yields neutral events (see `app.core.events`)."""

    def run_turn(self, req: TurnRequest) -> AsyncIterator[TurnEvent]: ...


@dataclass
class Reply:
    """What the agent said in a turn, accumulated from its events."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()

    def message(self) -> Message:
        return Message(role="assistant", text=self.text, tool_calls=self.tool_calls)


class TurnService:
    def __init__(
        self,
        settings: Settings,
        backends: Mapping[str, AgentBackend],
        index: ConversationIndex,
        files: FileIndex | None = None,
    ) -> None:
        self.files = files
        self.settings = settings
        self.backends = backends
        self.index = index

    async def chat(
        self, req: ChatCompletionRequest, *, owner: str, conversation_id: str | None
    ) -> AsyncIterator[TurnEvent]:
        """Play one chat turn; the conversation's new cursor is stored before the last event is yielded."""
        route = route_for(self.settings, req.model)
        limit = self.settings.limits.max_messages
        if len(req.messages) > limit:
            raise InvalidRequestError(
                f"Too many messages: {len(req.messages)}; this bridge accepts at most {limit}.",
                param="messages",
                code="too_many_messages",
            )
        parsed = chat_codec.parse_request(req)
        items = approvals.resolve(parsed.items)
        found = await conversation.resolve(
            self.index, owner=owner, route=req.model, items=items, conversation_id=conversation_id
        )
        turn = TurnRequest(
            owner=owner,
            model=req.model,
            route=route,
            items=items,
            cursor=found.cursor,
            new_items=found.new_items,
            instructions=parsed.instructions,
            tools=parsed.tools,
            options=parsed.options,
            deadline=time.monotonic() + route.timeout,
            approvals=approvals.mode_for(route.mcp_approval, dialect="chat"),
        )
        reply = Reply()
        parts: list[str] = []
        played = self.backends[route.backend].run_turn(turn)
        shown = recorded(rewritten(played, route.citation_markers), self.files, route=req.model, owner=owner)
        async for event in shown:
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, ToolCallsRequired):
                reply.tool_calls = event.calls
            elif isinstance(event, ApprovalRequired):
                reply.tool_calls = tuple(approvals.as_tool_call(r) for r in event.requests)
            elif isinstance(event, TurnCompleted):
                reply.text = "".join(parts)
                await conversation.remember(
                    self.index,
                    owner=owner,
                    route=req.model,
                    items=items,
                    reply=reply.message(),
                    cursor=event.cursor,
                    conversation_id=conversation_id,
                    previous_cursor=found.cursor,
                )
            yield event
