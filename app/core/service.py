"""The chat service: routes a model name to its backend and builds the chat turn the route opens and renders."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.core import approvals, chat_codec, conversation, history, ids, migration, ownership
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
from app.core.held_conversations import HeldLookup, conversation_id_of, held_for_turn, not_found
from app.core.lifetime import InFlight, Turn, Work
from app.core.metering import Account, Meter
from app.core.ownership import OwnerIndex
from app.core.turn import Item, Message, ToolCall, TurnRequest, pending_tool_results
from app.errors import InvalidRequestError, ModelNotFoundError
from app.settings import RouteSettings, Settings
from app.wire.chat import ChatCompletionRequest


def route_for(settings: Settings, model: str) -> RouteSettings:
    """The route behind a model name, or the 404 OpenAI gives for a model that does not exist."""
    route = settings.route(model)
    if route is None:
        raise ModelNotFoundError(f"The model '{model}' does not exist or you do not have access to it.", param="model")
    return route


class ItemIndex(OwnerIndex, Protocol):
    async def claim_items(self, item_ids: Sequence[str], owner: str) -> None: ...


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
        account: Account | None = None,
        remember: bool = True,
        previous_cursor: str | None = None,
        items: ItemIndex | None = None,
    ) -> None:
        self.items = items
        self.remember = remember
        """False when the turn's place needs no fingerprint (a bridge conversation, a stateless chat)."""
        self.previous_cursor = previous_cursor
        self.files = files
        self.account = account
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
                if self.account is not None:
                    self.account.finish_reason = event.finish_reason
                    if event.usage is not None:
                        self.account.used(event.usage.prompt_tokens, event.usage.completion_tokens)
                writes = []
                if self.remember:
                    reply.text = "".join(parts)
                    writes.append(
                        conversation.remember(
                            self.index,
                            owner=req.owner,
                            route=req.model,
                            items=req.items,
                            reply=reply.message(),
                            cursor=event.cursor,
                            conversation_id=self.conversation_id,
                            previous_cursor=self.previous_cursor,
                            instructions=req.instructions,
                        )
                    )
                if event.items and self.items is not None:
                    # Fail closed needs a record of every item a turn made: these are this owner's. Written
                    # alongside the conversation's cursor, so the turn waits for one round trip, not two.
                    writes.append(self.items.claim_items(event.items, req.owner))
                if writes:
                    await asyncio.gather(*writes)
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
        meter: Meter | None = None,
        held: HeldLookup | None = None,
        items: ItemIndex | None = None,
    ) -> None:
        self.items = items
        self.held = held
        self.tool_schemas = tool_schemas
        self.carry = carry
        self.calls = calls
        self.files = files
        self.meter = meter
        self.settings = settings
        self.rules = ids.rules_of(settings.limits)
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
        conversation_id = ids.conversation_name(conversation_id)
        _check_call_ids(req, self.rules)
        parsed = chat_codec.parse_request(req)
        if self.tool_schemas is not None and route.backend == "assistants" and parsed.tools:
            await self.tool_schemas.note(req.model, parsed.tools)
        items = approvals.resolve(parsed.items)
        named = (req.model_extra or {}).get("conversation")
        if named is not None:
            found, project_conversation = await self._named(req.model, route, named, items, owner, conversation_id)
            remember, previous_cursor = False, found.cursor
        elif route.backend == "endpoint":
            found, previous_cursor = await self._endpoint_place(req.model, items, owner, conversation_id)
            project_conversation, remember = None, conversation_id is not None
        else:
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
            project_conversation, remember, previous_cursor = None, True, found.cursor
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
            conversation=project_conversation,
        )
        meter = self.meter
        account = (
            None
            if meter is None
            else meter.account(
                owner,
                req.model,
                route,
                tool_round=bool(pending_tool_results(items)),
                conversation_id=conversation_id,
                store=getattr(req, "store", None),
            )
        )
        work: Work[TurnEvent] = _ChatWork(
            self.backends[backend].turn(turn),
            self.index,
            turn,
            conversation_id=conversation_id,
            files=self.files,
            account=account,
            remember=remember,
            previous_cursor=previous_cursor,
            items=self.items if self.settings.keys else None,
        )
        if meter is not None and account is not None:
            work = meter.wrap(work, account, operation="chat.completions")
        return Turn(work, deadline=deadline, timeout_s=route.timeout, tasks=self.tasks, inflight=self.inflight)

    async def _named(
        self, model: str, route: RouteSettings, named: object, items: tuple[Item, ...], owner: str, header: str | None
    ) -> tuple[conversation.Resolution, str | None]:
        """A chat turn in a conversation the client names (`conversation` in the body, as on `/v1/responses`):
        a thread or kept history the bridge holds, or a Foundry v2 project's conversation. The client sends
        its new messages (what follows its last assistant message), as with `X-Conversation-Id`. Returns
        where it continues and the conversation the backend must keep to (`TurnRequest.conversation`)."""
        if header is not None:
            raise InvalidRequestError(
                "Send either the X-Conversation-Id header or a conversation, not both.",
                param="conversation",
                code="mutually_exclusive_parameters",
            )
        conversation_id = ids.body_id(conversation_id_of(named), "conversation", self.rules.max_length)
        held = None
        if self.held is not None:
            held = await held_for_turn(
                self.held, self.settings, conversation_id, owner=owner, model=model, param="conversation"
            )
        new_items = conversation.after_last_assistant(items)
        if held is not None:
            cursor = held.thread_id or held.conversation_id
            found = conversation.Resolution(cursor=cursor, new_items=new_items, prefix_fingerprint=None)
            return found, conversation_id if held.thread_id is not None else None
        if route.backend != "foundry" or self.items is None:
            raise not_found(conversation_id, "conversation")
        await ownership.check(self.items, [ownership.Ref("conversation", conversation_id, "conversation")], owner=owner)
        return conversation.Resolution(cursor=None, new_items=new_items, prefix_fingerprint=None), conversation_id

    async def _endpoint_place(
        self, model: str, items: tuple[Item, ...], owner: str, header: str | None
    ) -> tuple[conversation.Resolution, str | None]:
        """Where a chat turn on an agent endpoint continues: nowhere (the client sends it all), or the
        history chain its `X-Conversation-Id` names, a new one on first use; and the chain the name
        was bound to before (None: the turn binds it)."""
        if header is None:
            return conversation.Resolution(cursor=None, new_items=items, prefix_fingerprint=None), None
        chain = await self.index.conversation_by_id(owner, model, header)
        if chain is None:
            fresh = conversation.Resolution(cursor=history.new_chain_id(), new_items=items, prefix_fingerprint=None)
            return fresh, None
        new_items = conversation.after_last_assistant(items)
        return conversation.Resolution(cursor=chain, new_items=new_items, prefix_fingerprint=None), chain


def _check_call_ids(req: ChatCompletionRequest, rules: ids.IdRules) -> None:
    """Tool-call ids (an assistant message's calls, a tool message's answer) follow the id grammar, and
    a request answers at most `max_referenced_ids` calls (each is looked up)."""
    answers = 0
    for i, message in enumerate(req.messages):
        for j, call in enumerate(message.tool_calls or ()):
            ids.body_id(call.id, f"messages[{i}].tool_calls[{j}].id", rules.max_length)
        if message.tool_call_id is not None:
            ids.body_id(message.tool_call_id, f"messages[{i}].tool_call_id", rules.max_length)
            answers += 1
    if answers > rules.max_referenced_ids:
        ids.too_many("referenced ids", answers, rules.max_referenced_ids, "messages")
