"""`/v1/responses` for any route: Assistants turns rendered as Responses, Foundry v2 relayed whole.

Response ids are owner-scoped: every id handed to a client is recorded with its owner before the
client sees it, and every lookup (`previous_response_id`, an `item_reference`, GET, DELETE) checks it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from app.core import (
    approvals,
    conversation,
    failures,
    history,
    ids,
    input_items,
    migration,
    ownership,
    responses_codec,
    responses_input,
)
from app.core.annotations import MarkerMode, parse_response_annotation
from app.core.background import BackgroundTasks
from app.core.conversation import ConversationIndex
from app.core.endpoint_responses import EndpointResponse, EndpointStore, RelayedWork, chain_of
from app.core.events import ApprovalRequired, Cited, TextDelta, ThreadBound, ToolCallsRequired, TurnCompleted, TurnEvent
from app.core.files import FileIndex, recorded, records_of
from app.core.held_conversations import HeldLookup, conversation_id_of, held_for_turn, not_found
from app.core.lifetime import InFlight, Turn, Work
from app.core.metering import Account, Meter, account_response, has_tool_outputs
from app.core.ownership import OwnerIndex, Ref
from app.core.records import ConversationRecord, ResponseRecord
from app.core.relay_markers import MarkerRelay
from app.core.service import AgentBackend, route_for
from app.core.turn import Item, TurnRequest
from app.errors import BridgeError, InvalidRequestError, NotFoundError, RunFailedError
from app.settings import RouteSettings, Settings
from app.wire.responses import ResponsesRequest

StreamEvent = dict[str, Any]


class ResponseIndex(OwnerIndex, Protocol):
    async def save_response(self, rec: ResponseRecord) -> None: ...

    async def get_response(self, response_id: str, owner: str) -> ResponseRecord | None: ...

    async def get_responses(self, response_ids: Sequence[str], owner: str) -> list[ResponseRecord | None]: ...

    async def delete_response(self, response_id: str) -> None: ...

    async def claim_items(self, item_ids: Sequence[str], owner: str) -> None: ...


class HeldHistories(EndpointStore, HeldLookup, Protocol):
    """Conversations the bridge holds and the histories it keeps (the Redis store)."""

    async def item_responses(self, item_ids: Sequence[str]) -> list[str | None]: ...


class Progress(Protocol):
    async def snapshot(self, response_id: str) -> dict[str, Any]: ...

    async def cancel(self, response_id: str) -> dict[str, Any]: ...


class ResponsesRelay(Protocol):
    """The Foundry v2 side: a sanitized body with the route's agent_reference, relayed whole."""

    def relay(self, body: dict[str, Any], *, model: str, deadline: float) -> RelayedWork: ...

    async def get(self, response_id: str, model: str) -> dict[str, Any]: ...

    async def delete(self, response_id: str, model: str) -> dict[str, Any]: ...

    async def input_items(self, response_id: str, model: str, params: dict[str, str]) -> dict[str, Any]: ...

    def stream(self, response_id: str, model: str, after: int) -> AsyncIterator[StreamEvent]: ...

    async def cancel(self, response_id: str, model: str) -> dict[str, Any]: ...


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


class _AssistantsResponse:
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


class _RecordedRelay:
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
                    self._items += _output_ids(upstream.get("response"))
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


class ResponsesService:
    def __init__(
        self,
        settings: Settings,
        backends: Mapping[str, AgentBackend],
        index: ResponseIndex,
        relay: ResponsesRelay | None,
        conversations: ConversationIndex,
        *,
        tasks: BackgroundTasks,
        inflight: InFlight,
        files: FileIndex | None = None,
        carry: migration.Carry | None = None,
        calls: migration.CallIndex | None = None,
        tool_schemas: migration.ToolSchemas | None = None,
        meter: Meter | None = None,
        held: HeldHistories | None = None,
    ) -> None:
        self.held = held
        self.tool_schemas = tool_schemas
        self.carry = carry
        self.calls = calls
        self.files = files
        self.meter = meter
        self.conversations = conversations
        self.settings = settings
        self.backends = backends
        self.index = index
        self.passthrough = relay
        self.tasks = tasks
        self.inflight = inflight
        self.rules = ids.rules_of(settings.limits)
        self.background: Progress | None = None
        """Background responses the bridge runs itself (set when the app is built)."""

    async def claim_output(self, response: dict[str, Any], owner: str) -> None:
        ids = _output_ids(response)
        if ids:
            await self.index.claim_items(ids, owner)

    async def owned(self, response_id: str, owner: str) -> ResponseRecord:
        return await self._owned(response_id, owner)

    async def _previous(self, req: ResponsesRequest, owner: str) -> ResponseRecord | None:
        if req.previous_response_id is None:
            return None
        ids.body_id(req.previous_response_id, "previous_response_id", self.rules.max_length)
        record = await self.index.get_response(req.previous_response_id, owner)
        if record is None or record.route != req.model:
            raise NotFoundError(
                f"Previous response with id '{req.previous_response_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return record

    async def respond(self, req: ResponsesRequest, body: dict[str, Any], *, owner: str) -> Turn[StreamEvent]:
        """The turn of one request, whatever the backend; its events are Responses stream events
        (first: response.created)."""
        route = route_for(self.settings, req.model)
        deadline = time.monotonic() + route.timeout
        work = await self.prepare(req, route, body, owner, deadline)
        return Turn(work, deadline=deadline, timeout_s=route.timeout, tasks=self.tasks, inflight=self.inflight)

    async def prepare(
        self, req: ResponsesRequest, route: RouteSettings, body: dict[str, Any], owner: str, deadline: float
    ) -> Work[StreamEvent]:
        """What a turn of `req` does on its route's backend (checked, nothing sent upstream yet)."""
        ownership.tool_ids(req.tools, self.rules)
        held: ConversationRecord | None = None
        if req.conversation is not None:
            if req.previous_response_id:
                raise InvalidRequestError(
                    "Mutually exclusive parameters: Ensure you are only providing one of: "
                    "'previous_response_id' or 'conversation'.",
                    param="conversation",
                    code="mutually_exclusive_parameters",
                )
            conversation_id = conversation_id_of(req.conversation)
            ownership.conversation_of(req.conversation, self.rules)  # the grammar, before any lookup
            if self.held is not None:
                held = await held_for_turn(
                    self.held, self.settings, conversation_id, owner=owner, model=req.model, param="conversation"
                )
            if held is None and route.backend != "foundry":
                raise not_found(conversation_id, "conversation")
        account = None
        if self.meter is not None:
            named = req.conversation if isinstance(req.conversation, str) else None
            account = self.meter.account(
                owner,
                req.model,
                route,
                tool_round=has_tool_outputs(body.get("input")),
                conversation_id=named,
                store=req.store,
            )
        work: Work[StreamEvent]
        if route.backend == "foundry":
            work = await self._relay(req, route, body, owner, deadline, account)
        elif route.backend == "endpoint":
            work = await self._endpoint(req, body, owner, deadline, held, account)
        else:
            work = await self._assistants(req, route, owner, deadline, held, account)
        if account is not None and self.meter is not None:
            work = self.meter.wrap(work, account, operation="responses")
        return work

    async def _endpoint(
        self,
        req: ResponsesRequest,
        body: dict[str, Any],
        owner: str,
        deadline: float,
        held: ConversationRecord | None,
        account: Account | None = None,
    ) -> Work[StreamEvent]:
        """An agent-endpoint turn: the history the bridge keeps, then the new input (`app.core.endpoint_responses`)."""
        assert self.passthrough is not None and self.held is not None
        previous = await self._previous(req, owner)
        anchor, after = await self._anchor(req, owner) if previous is None and held is None else (None, 0)
        previous = previous or anchor
        new = history.input_items(req.input[after:] if isinstance(req.input, list) else req.input)
        chain: str | None = None
        if held is not None:
            chain = held.conversation_id
            kept = await self.held.load_history(chain)
        elif previous is not None:
            chain, length = chain_of(previous)
            kept = await self.held.load_history(chain, length)
            if len(kept) < length:  # the history expired before the response record did
                raise NotFoundError(
                    f"Previous response with id '{previous.response_id}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
        else:
            kept = []
        history.check_bound(len(kept), len(new), self.settings.limits.max_history_items, param="input")
        upstream = {k: v for k, v in body.items() if k not in ("previous_response_id", "conversation")}
        upstream["input"] = [*kept, *new]
        return EndpointResponse(
            self.passthrough.relay(upstream, model=req.model, deadline=deadline),
            self.held,
            owner=owner,
            model=req.model,
            chain=chain,
            base=len(kept),
            new=new,
            conversation=held.conversation_id if held is not None else None,
            previous_id=req.previous_response_id,
            keep=req.store is not False,
            account=account,
            background=bool(req.background),
        )

    async def _anchor(self, req: ResponsesRequest, owner: str) -> tuple[ResponseRecord | None, int]:
        """On an agent-endpoint route, the response whose output the last `item_reference` names, and where the
        input after it starts: a client that resends earlier output by reference continues that response's
        chain, as `previous_response_id` would (what the references and the items before them say, the chain
        holds already)."""
        assert self.held is not None
        refs = responses_input.item_references(req)
        if not refs:
            return None, 0
        pointers = await self.held.item_responses([item_id for _, item_id in refs])
        records = await self.index.get_responses([p or "-" for p in pointers], owner)
        for (i, item_id), record in zip(refs, records, strict=True):
            if record is None or record.route != req.model or record.backend != "endpoint":
                raise InvalidRequestError(f"Item with id '{item_id}' not found.", param=f"input[{i}].id")
        return records[-1], refs[-1][0] + 1

    async def _assistants(
        self,
        req: ResponsesRequest,
        route: RouteSettings,
        owner: str,
        deadline: float,
        conv: ConversationRecord | None = None,
        account: Account | None = None,
    ) -> Work[StreamEvent]:
        # Grammar and bounds only: an Assistants route sends Azure text, never an id the client named.
        ownership.input_refs(req.input, "input", self.rules, stored_items=False)
        referenced, anchor = await self._referenced(req, owner)
        items, instructions, held = responses_input.parse_input(req, referenced)
        # An item_reference continues the response it names, as previous_response_id does; what it
        # and the items before it say, the thread holds already.
        previous = await self._previous(req, owner) or anchor
        if conv is not None:
            cursor, new_items = conv.thread_id, items[held:]
        elif previous is not None:
            cursor, new_items = previous.thread_id, items[held:]
        else:
            # A client that resends the whole input (the Agents SDK does) is followed like a chat client.
            found = await conversation.resolve(
                self.conversations,
                owner=owner,
                route=req.model,
                items=items,
                conversation_id=None,
                instructions=instructions,
            )
            cursor, new_items = found.cursor, found.new_items
        tools = responses_codec.parse_tools(req)
        if self.tool_schemas is not None and tools:
            await self.tool_schemas.note(req.model, tools)
        turn = TurnRequest(
            owner=owner,
            model=req.model,
            route=route,
            items=items,
            cursor=cursor,
            new_items=new_items,
            instructions=instructions,
            tools=tools,
            options=responses_codec.parse_options(req),
            deadline=deadline,
            approvals=approvals.mode_for(route.mcp_approval, dialect="responses"),
            conversation=conv.conversation_id if conv is not None else None,
            # A background turn holds its thread until its deadline, whichever replica follows it.
            lock_ttl_s=route.timeout if req.background else None,
        )
        return _AssistantsResponse(
            self.backends["assistants"].turn(turn),
            req,
            owner=owner,
            items=items,
            previous=previous,
            index=self.index,
            conversations=self.conversations,
            files=self.files,
            markers=route.citation_markers,
            account=account,
            held=conv.conversation_id if conv is not None else None,
            instructions=instructions,
        )

    async def _referenced(
        self, req: ResponsesRequest, owner: str
    ) -> tuple[dict[int, dict[str, Any]], ResponseRecord | None]:
        """The item each `item_reference` names (by input index), and the response of the last one.

        The bridge's item ids name their response (`responses_codec.output_item_id`), so a reference
        is looked up in that response's record: the caller's, on this route, holding that item."""
        refs = responses_input.item_references(req)
        if not refs:
            return {}, None
        wanted = sorted({r for _, item_id in refs if (r := responses_codec.response_of_item(item_id))})
        records = dict(zip(wanted, await self.index.get_responses(wanted, owner), strict=True))
        referenced: dict[int, dict[str, Any]] = {}
        last: ResponseRecord | None = None
        for i, item_id in refs:
            record = records.get(responses_codec.response_of_item(item_id) or "")
            item = _item_in(record, item_id) if record is not None and record.route == req.model else None
            if item is None:
                raise InvalidRequestError(f"Item with id '{item_id}' not found.", param=f"input[{i}].id")
            referenced[i] = item
            last = record
        return referenced, last

    async def _relay(
        self,
        req: ResponsesRequest,
        route: RouteSettings,
        body: dict[str, Any],
        owner: str,
        deadline: float,
        account: Account | None = None,
    ) -> Work[StreamEvent]:
        assert self.passthrough is not None
        # Every id the body names, checked against the grammar, then owner-checked in one round trip:
        # Azure resolves them across the whole project, so an id with no record of the caller's is
        # answered as unknown and never relayed (`app.core.ownership`).
        refs: list[Ref] = []
        if req.previous_response_id is not None:
            previous_id = ids.body_id(req.previous_response_id, "previous_response_id", self.rules.max_length)
            refs.append(Ref("response", previous_id, "previous_response_id"))
        conversation_ref = ownership.conversation_of(req.conversation, self.rules)
        if conversation_ref is not None:
            refs.append(conversation_ref)
        # One owner (no client keys) has no one to be kept apart from: no item or file records.
        keyed = bool(self.settings.keys)
        refs += [r for r in ownership.input_refs(req.input, "input", self.rules) if keyed]
        await ownership.check(self.index, refs, owner=owner, route=req.model)
        carried: str | None = None
        previous = await self._previous(req, owner) if route.migrate_from is not None else None
        if previous is not None:
            if previous.backend == "assistants":
                carried = await self._carried(req, previous, body, owner, deadline)
                if carried is None:  # tool outputs for a run that waits on the Assistants side: it finishes there
                    source = route.source_route()
                    assert source is not None
                    return await self._assistants(req, source, owner, deadline)
            else:
                found = previous.data.get("conversation")
                carried = str(found) if found else None
            if carried is not None:
                body = {k: v for k, v in body.items() if k != "previous_response_id"} | {"conversation": carried}
        keyed = bool(self.settings.keys)
        refs += [r for r in ownership.input_refs(req.input, "input", self.rules) if keyed]
        await ownership.check(self.index, refs, owner=owner, route=req.model)
        work = self.passthrough.relay(body, model=req.model, deadline=deadline)
        return _RecordedRelay(
            work,
            owner=owner,
            model=req.model,
            index=self.index,
            files=self.files,
            markers=route.citation_markers,
            record_items=keyed and req.store is not False,
            conversation=carried,
            account=account,
        )

    async def _carried(
        self,
        req: ResponsesRequest,
        previous: ResponseRecord,
        body: dict[str, Any],
        owner: str,
        deadline: float,
    ) -> str | None:
        """The conversation an Assistants-era previous_response_id continues on a migrating route (its thread
        carried first); None when the request's tool outputs answer a run still waiting on the Assistants side."""
        if self.calls is not None and await migration.waiting_on_source(
            self.calls, migration.output_call_ids(body), owner
        ):
            return None
        conversation_id = None
        if previous.thread_id and self.carry is not None:
            thread_id = previous.thread_id
            conversation_id = await self.carry.ensure(thread_id, owner=owner, route=req.model, deadline=deadline)
        if conversation_id is None:
            raise NotFoundError(
                f"Previous response with id '{req.previous_response_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return conversation_id

    async def get(self, response_id: str, *, owner: str) -> dict[str, Any]:
        record = await self._owned(response_id, owner)
        if record.data.get("running") and self.background is not None:
            return await self.background.snapshot(response_id)
        if record.backend == "foundry":
            assert self.passthrough is not None
            relayed = await self.passthrough.get(record.upstream_id or response_id, record.route)
            if record.data.get("background") and self.settings.keys:
                # A background response's items reach a client that polls it: they are its owner's.
                await self.claim_output(relayed, record.owner)
            route = self.settings.route(record.route)
            return MarkerRelay(route.citation_markers).response(relayed) if route is not None else relayed
        response: dict[str, Any] = record.data.get("response", {})
        return response

    async def delete(self, response_id: str, *, owner: str) -> dict[str, Any]:
        record = await self._owned(response_id, owner)
        if record.data.get("running") and self.background is not None:
            # A running background response stops first (its run too), so nothing writes it back.
            with contextlib.suppress(InvalidRequestError):
                await self.background.cancel(response_id)
        if record.backend == "foundry":
            assert self.passthrough is not None
            await self.passthrough.delete(record.upstream_id or response_id, record.route)
        await self.index.delete_response(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def input_items(self, response_id: str, *, owner: str, params: dict[str, str]) -> dict[str, Any]:
        """The items a response was made from: relayed on Foundry routes, kept with the record on Assistants ones."""
        record = await self._owned(response_id, owner)
        params = ids.list_params(dict(params), self.rules.max_length)
        if record.backend == "foundry":
            assert self.passthrough is not None
            listed = await self.passthrough.input_items(record.upstream_id or response_id, record.route, params)
            if self.settings.keys:
                # The owner may name these later (an item_reference): they are the owner's.
                found = ownership.listed(listed, self.rules.max_length)
                if found:
                    await self.index.claim_items(found, owner)
            return listed
        # A background response on an agent-endpoint route has its inputs in the chain once it completed.
        if record.backend == "endpoint" and "inputs" in record.data:
            assert self.held is not None
            start, count = record.data["inputs"]
            kept = await self.held.load_history(str(record.data["chain"]), int(start) + int(count))
            rendered = kept[int(start) :]
        else:
            rendered = input_items.render(response_id, record.data.get("input") or [])
        limit = ids.list_limit(params.get("limit"))
        return input_items.page(rendered, limit=limit, order=params.get("order", "desc"), after=params.get("after"))

    async def _owned(self, response_id: str, owner: str) -> ResponseRecord:
        ids.path_id(response_id, self.rules.max_length, _response_not_found)
        record = await self.index.get_response(response_id, owner)
        if record is None:
            raise _response_not_found(response_id)
        return record


def _response_not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"Response with id '{response_id}' not found.", param="response_id")


def _output_ids(response: Any) -> list[str]:
    output = response.get("output") if isinstance(response, dict) else None
    if not isinstance(output, list):
        return []
    return [item["id"] for item in output if isinstance(item, dict) and isinstance(item.get("id"), str)]


def _item_in(record: ResponseRecord, item_id: str) -> dict[str, Any] | None:
    """An item of an Assistants response record: one of its output items, or one its input listing shows."""
    if record.backend != "assistants":
        return None
    for item in record.data.get("response", {}).get("output", []):
        if item.get("id") == item_id:
            return dict(item)
    for item in input_items.render(record.response_id, record.data.get("input") or []):
        if item.get("id") == item_id:
            return item
    return None
