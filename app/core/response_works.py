"""The works of a `/v1/responses` turn: an Assistants run rendered as a Response, a Foundry v2 response
relayed and recorded (its id, its output items and files, as the owner's, before the client sees them)."""

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from app.core import (
    conversation,
    failures,
    input_items,
    responses_codec,
)
from app.core.annotations import MarkerMode, parse_response_annotation
from app.core.conversation import ConversationIndex
from app.core.events import ApprovalRequired, Cited, TextDelta, ThreadBound, ToolCallsRequired, TurnCompleted, TurnEvent
from app.core.files import FileIndex, recorded, records_of
from app.core.lifetime import Work
from app.core.metering import Account, account_response
from app.core.ownership import OwnerIndex
from app.core.records import ResponseRecord
from app.core.relay_markers import MarkerRelay
from app.core.turn import Item
from app.errors import BridgeError, RunFailedError
from app.wire.responses import ResponsesRequest

StreamEvent = dict[str, Any]


class ResponseIndex(OwnerIndex, Protocol):
    async def save_response(self, rec: ResponseRecord) -> None: ...

    async def get_response(self, response_id: str, owner: str) -> ResponseRecord | None: ...

    async def get_responses(self, response_ids: Sequence[str], owner: str) -> list[ResponseRecord | None]: ...

    async def delete_response(self, response_id: str) -> None: ...

    async def claim_items(self, item_ids: Sequence[str], owner: str) -> None: ...


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


class AssistantsResponse:
    """An Assistants turn rendered as Responses stream events; the response is recorded before its end goes out."""

    def __init__(
        self,
        work: Work[TurnEvent],
        req: ResponsesRequest,
        *,
        owner: str,
        items: tuple[Item, ...],
        previous: ResponseRecord | None,
        index: ResponseIndex,
        conversations: ConversationIndex,
        files: FileIndex | None = None,
        markers: MarkerMode = "numbered",
        account: Account | None = None,
        held: str | None = None,
        instructions: str | None = None,
    ) -> None:
        self.held = held
        """The bridge conversation (a thread) the turn continues: it knows its place, no fingerprint needed."""
        self.files = files
        self.account = account
        self.work = work
        self.req = req
        self.owner = owner
        self.items = items
        self.instructions = instructions
        """The request's system and developer text and `instructions`: part of its fingerprint."""
        self.previous = previous
        self.index = index
        self.conversations = conversations
        self.builder = responses_codec.ResponseBuilder(req, markers=markers)

    async def open(self) -> ThreadBound:
        bound = await self.work.open()
        return ThreadBound(thread_id=bound.thread_id, response_id=self.builder.id)

    async def close(self, ending: BaseException | None) -> None:
        await self.work.close(ending)

    def hand_over(self) -> None:
        """Leave the run to another replica (`app.core.background_runs`): `close` then leaves it going."""
        hand_over = getattr(self.work, "hand_over", None)
        if hand_over is not None:
            hand_over()

    def created(self) -> dict[str, Any]:
        return self.builder.response()

    def upstream(self) -> dict[str, str]:
        """The ids another replica needs to follow this turn's run (`app.core.background_runs`)."""
        upstream = getattr(self.work, "upstream", None)
        return upstream() if upstream is not None else {}

    async def events(self) -> AsyncIterator[StreamEvent]:
        for out in self.builder.start():
            yield out
        try:
            async for out in self._play():
                yield out
        except BridgeError as exc:
            if not self.req.stream:
                raise
            # A streamed Response that fails ends with response.failed (SDKs wait for a terminal event).
            if self.account is not None:
                self.account.failed = type(exc).default_code
            for out in self.builder.fail(exc):
                yield out

    async def _play(self) -> AsyncIterator[StreamEvent]:
        req, builder = self.req, self.builder
        async for event in recorded(self.work.events(), self.files, route=req.model, owner=self.owner):
            if isinstance(event, TextDelta):
                for out in builder.text(event.text):
                    yield out
            elif isinstance(event, Cited):
                for out in builder.cite(event.annotations):
                    yield out
            elif isinstance(event, ApprovalRequired):
                for out in builder.approvals(event.requests):
                    yield out
            elif isinstance(event, ToolCallsRequired):
                for out in builder.tool_calls(event.calls):
                    yield out
            elif isinstance(event, TurnCompleted):
                if self.account is not None:
                    self.account.finish_reason = event.finish_reason
                    if event.usage is not None:
                        self.account.used(event.usage.prompt_tokens, event.usage.completion_tokens)
                final = builder.finish(event.finish_reason, event.usage)
                if self.previous is None and self.held is None:
                    await conversation.remember(
                        self.conversations,
                        owner=self.owner,
                        route=req.model,
                        items=self.items,
                        reply=builder.reply(),
                        cursor=event.cursor,
                        conversation_id=None,
                        instructions=self.instructions,
                    )
                if req.store is not False:
                    await self.index.save_response(
                        ResponseRecord(
                            response_id=builder.id,
                            owner=self.owner,
                            route=req.model,
                            backend="assistants",
                            thread_id=event.cursor,
                            run_id=None,
                            upstream_id=None,
                            created_at=time.time(),
                            # `input` (compact) answers GET /v1/responses/{id}/input_items.
                            data={"response": builder.response(), "input": input_items.compact(self.items)},
                        )
                    )
                for out in final:
                    yield out


class RecordedRelay:
    """A Foundry pass-through whose response id is recorded with its owner before the client sees it, its
    citation markers shown as the route says, and each file it cites recorded before the citation goes out."""

    def __init__(
        self,
        work: Work[StreamEvent],
        *,
        owner: str,
        model: str,
        index: ResponseIndex,
        files: FileIndex | None,
        markers: MarkerMode = "numbered",
        record_items: bool = True,
        conversation: str | None = None,
        account: Account | None = None,
    ) -> None:
        self.conversation = conversation
        """The carried conversation this response continued (a later previous_response_id continues it too)."""
        self.account = account
        self.record_items = record_items
        self._items: list[str] = []  # output item ids the client has seen, not yet recorded
        self.markers = MarkerRelay(markers)
        self.files = files
        self.work = work
        self.owner = owner
        self.model = model
        self.index = index

    async def open(self) -> ThreadBound:
        bound = await self.work.open()
        assert bound.response_id is not None
        await self.index.save_response(
            ResponseRecord(
                response_id=bound.response_id,
                owner=self.owner,
                route=self.model,
                backend="foundry",
                thread_id=None,
                run_id=None,
                upstream_id=bound.response_id,
                created_at=time.time(),
                data={"conversation": self.conversation} if self.conversation else {},
            )
        )
        return bound

    async def events(self) -> AsyncIterator[StreamEvent]:
        account = self.account
        async for upstream in self.work.events():
            if account is not None and upstream.get("type") in _TERMINAL:
                account_response(account, upstream.get("response"))
            if self.record_items:
                # Azure resolves an item_reference across the whole project: the bridge remembers whose
                # turn produced each output item and refuses other owners' references to it
                # (`ResponsesService._relay`). Ids are gathered as they stream and written once, at
                # the end of the response or of the turn, whichever comes first.
                kind = upstream.get("type")
                if kind == "response.output_item.added":
                    item = upstream.get("item")
                    if isinstance(item, dict) and isinstance(item.get("id"), str):
                        self._items.append(item["id"])
                elif kind in _TERMINAL:
                    self._items += output_ids(upstream.get("response"))
                    await self._record_items()
            for data in self.markers.events(upstream):
                if self.files is not None and data.get("type") == "response.output_text.annotation.added":
                    annotation = parse_response_annotation(data.get("annotation"))
                    if annotation is not None and annotation.file_id:
                        await self.files.save_files(records_of([annotation], route=self.model, owner=self.owner))
                yield data

    def detach(self) -> dict[str, Any]:
        """Leave a background response running upstream (its stream closes, it is not cancelled); the
        Response as Azure created it."""
        detach = getattr(self.work, "detach", None)
        assert detach is not None
        return self.markers.response(detach())

    async def _record_items(self) -> None:
        ids, self._items = list(dict.fromkeys(self._items)), []
        if ids:
            await self.index.claim_items(ids, self.owner)

    async def close(self, ending: BaseException | None) -> None:
        try:
            await self._record_items()  # a client that left mid-stream has seen ids too
        finally:
            await self.work.close(ending)


def output_ids(response: Any) -> list[str]:
    output = response.get("output") if isinstance(response, dict) else None
    if not isinstance(output, list):
        return []
    return [item["id"] for item in output if isinstance(item, dict) and isinstance(item.get("id"), str)]
