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
    history,
    ids,
    input_items,
    migration,
    ownership,
    responses_codec,
    responses_input,
)
from app.core.background import BackgroundTasks
from app.core.conversation import ConversationIndex
from app.core.endpoint_responses import EndpointResponse, EndpointStore, RelayedWork, chain_of
from app.core.files import FileIndex
from app.core.held_conversations import HeldLookup, conversation_id_of, held_for_turn, not_found
from app.core.lifetime import InFlight, Turn, Work
from app.core.metering import Account, Meter, has_tool_outputs
from app.core.ownership import Ref
from app.core.records import ConversationRecord, ResponseRecord
from app.core.relay_markers import MarkerRelay
from app.core.response_works import (
    AssistantsResponse,
    RecordedRelay,
    ResponseIndex,
    StreamEvent,
    output_ids,
)
from app.core.service import AgentBackend, route_for
from app.core.turn import TurnRequest
from app.errors import InvalidRequestError, NotFoundError
from app.settings import RouteSettings, Settings
from app.wire.responses import ResponsesRequest


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
        ids = output_ids(response)
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
        return AssistantsResponse(
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
        return RecordedRelay(
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
