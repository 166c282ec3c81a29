"""The thread/run lifecycle of one turn: create or continue a thread, follow its run, hand out tool calls.

Invariants kept here (DESIGN §3): a thread is recorded in the registry the moment its id is known and
before anything reaches the client (if that fails, its run is cancelled, the thread deleted, and the
client gets 503); every tool call handed out resolves to its run; one turn at a time per thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from app.backends.assistants import mapping
from app.backends.assistants.client import AssistantsClient
from app.backends.polling import PollPolicy
from app.backends.upstream import SSEEvent
from app.core import approvals, failures
from app.core.background import BackgroundTasks
from app.core.events import ApprovalRequired, ThreadBound, ToolCallsRequired, TurnCompleted, TurnEvent
from app.core.turn import Item, Message, ToolCall, ToolResult, TurnRequest, pending_tool_results
from app.errors import (
    BridgeError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    StoreUnavailableError,
    ToolOutputsExpiredError,
    UpstreamError,
    UpstreamTimeoutError,
)
from app.metrics import Metrics
from app.state.store import CallRecord, RedisStore, ThreadRecord

BRIDGE_TAG = "agent-bridge"
_RUN_END_EVENTS = frozenset(
    {
        "thread.run.requires_action",
        "thread.run.completed",
        "thread.run.incomplete",
        "thread.run.failed",
        "thread.run.cancelled",
        "thread.run.expired",
    }
)
_AGENT_TTL_S = 300.0
_CALL_RECORD_MARGIN_S = 3600.0


@dataclass
class _TurnState:
    """What one turn has touched upstream, so that any ending can clean up after it."""

    thread_id: str | None = None
    run_id: str | None = None
    run_active: bool = False
    lock_token: str | None = None
    delete_thread: bool = False
    used_at: float | None = None
    """Set when a turn completed: the thread's last use, recorded when the lock is released."""
    created: bool = False
    """This turn created the thread: if it fails, nothing can continue the thread, so it goes."""


class AssistantsBackend:
    """Plays turns of `asst_*` agents. One client per route; the store is the thread registry."""

    def __init__(
        self,
        clients: Mapping[str, AssistantsClient],
        store: RedisStore,
        tasks: BackgroundTasks,
        *,
        lock_wait_s: float,
        poll: PollPolicy | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.clients = clients
        self.store = store
        self.tasks = tasks
        self.lock_wait_s = lock_wait_s
        self.poll = poll or PollPolicy()
        self._assistants: dict[str, tuple[float, dict[str, Any]]] = {}

    async def run_turn(self, req: TurnRequest) -> AsyncIterator[TurnEvent]:
        client = self.clients[req.model]
        state = _TurnState()
        try:
            async with asyncio.timeout_at(req.deadline):
                async for event in self._play(client, req, state):
                    yield event
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away: clean up in a task of its own, outside this request's cancel scope.
            self.tasks.spawn(self._release(client, state), name=f"release-{state.thread_id}")
            raise
        except TimeoutError as exc:
            await self._release(client, state)
            raise UpstreamTimeoutError(
                f"The agent did not finish within the route's timeout of {req.route.timeout:g} s; "
                "its run was cancelled."
            ) from exc
        except BridgeError:
            if state.created and state.used_at is None:
                # A failed first turn: no conversation points at its thread, and a client's retry
                # starts a new one, so delete it now rather than leave it to the janitor.
                state.delete_thread = True
            await self._release(client, state)
            raise
        except BaseException:
            await self._release(client, state)
            raise
        await self._release(client, state)

    # -- the three kinds of turn ----------------------------------------------------------------

    async def _play(self, client: AssistantsClient, req: TurnRequest, state: _TurnState) -> AsyncIterator[TurnEvent]:
        results = pending_tool_results(req.items)
        if results:
            async for event in self._tool_round(client, req, state, results):
                yield event
            return
        record = None
        if req.cursor and _appendable(req.new_items):
            record, state.lock_token = await self.store.open_thread(req.cursor, req.owner, ttl_ms=_lock_ttl_ms(req))
            if record is not None and record.route != req.model:
                await self.store.close_turn(record.thread_id, state.lock_token, now=None)
                record, state.lock_token = None, None
        if record is not None:
            async for event in self._continue(client, req, state, record.thread_id):
                yield event
        else:
            async for event in self._start(client, req, state):
                yield event

    async def _start(self, client: AssistantsClient, req: TurnRequest, state: _TurnState) -> AsyncIterator[TurnEvent]:
        """A new conversation: one request creates the thread with the history and starts the run."""
        stream = req.route.upstream == "stream"
        body = await self._run_body(client, req, stream=stream)
        extra = body.pop("additional_instructions", None)
        if extra:
            # Creating a thread and its run takes no additional_instructions: append the system text
            # to the agent's own instructions instead of replacing them.
            own = (await self._assistant_of(client, req)).get("instructions") or ""
            body["instructions"] = f"{own}\n\n{extra}" if own else extra
        body["thread"] = {
            "messages": [mapping.message_param(item) for item in req.items],
            "metadata": {"created_by": BRIDGE_TAG, "owner": req.owner[:512], "route": req.model[:512]},
        }
        if stream:
            async with client.create_thread_and_run_stream(body, req.deadline) as events:
                async for event in self._follow(client, req, state, events, tool_round=False):
                    yield event
            return
        run = await client.create_thread_and_run(body, req.deadline)
        state.run_id, state.run_active = run["id"], True
        await self._record(client, req, state, run["thread_id"])
        yield ThreadBound(thread_id=run["thread_id"])
        async for event in self._poll(client, req, state, run, tool_round=False):
            yield event

    async def _continue(
        self, client: AssistantsClient, req: TurnRequest, state: _TurnState, thread_id: str
    ) -> AsyncIterator[TurnEvent]:
        """The next turn on a known thread: one request adds the new messages and starts the run."""
        state.thread_id = thread_id
        if state.lock_token is None:
            await self._lock(req, state)
        yield ThreadBound(thread_id=thread_id)
        stream = req.route.upstream == "stream"
        body = await self._run_body(client, req, stream=stream)
        body["additional_messages"] = [mapping.message_param(item) for item in req.new_items]
        for attempt in (1, 2):
            try:
                if stream:
                    async with client.create_run_stream(thread_id, body, req.deadline) as events:
                        async for event in self._follow(client, req, state, events, tool_round=False):
                            yield event
                    return
                run = await client.create_run(thread_id, body, req.deadline)
                break
            except InvalidRequestError as exc:
                # A run left waiting (the client abandoned its tool calls) blocks the thread: cancel it.
                stale = mapping.active_run_id(exc.message)
                if attempt == 2 or stale is None or state.run_id is not None:
                    raise
                await self._cancel_and_wait(client, req, thread_id, stale)
        state.run_id, state.run_active = run["id"], True
        async for event in self._poll(client, req, state, run, tool_round=False):
            yield event

    async def _tool_round(
        self, client: AssistantsClient, req: TurnRequest, state: _TurnState, results: tuple[ToolResult, ...]
    ) -> AsyncIterator[TurnEvent]:
        """The client's function results go to the run that waits for them, in one submit."""
        records = await self.store.get_calls([r.call_id for r in results], req.owner)
        known: list[CallRecord] = []
        for result, record in zip(results, records, strict=True):
            if record is None:
                raise InvalidRequestError(
                    f"Unknown tool_call_id '{result.call_id}': no tool call waits for this output "
                    "(it was answered already, or belongs to another conversation).",
                    param="messages",
                    code="unknown_tool_call_id",
                )
            known.append(record)
        first = known[0]
        if any(r.run_id != first.run_id for r in known):
            raise InvalidRequestError("The tool outputs answer calls of different runs.", param="messages")
        missing = sorted(set(first.sibling_ids) - {r.call_id for r in results})
        if missing:
            raise InvalidRequestError(
                f"Tool outputs are missing for tool call ids {missing}: answer every call in one request.",
                param="messages",
                code="tool_outputs_missing",
            )
        if first.expires_at is not None and first.expires_at <= time.time():
            raise _too_late()
        state.thread_id, state.run_id = first.thread_id, first.run_id
        await self._lock(req, state)
        yield ThreadBound(thread_id=first.thread_id)
        answers = mapping.submit_body(results, approvals.answers_of(results))
        state.run_active = True
        if self.metrics is not None:
            self.metrics.tool_rounds.labels("assistants").inc()
        try:
            if req.route.upstream == "stream":
                async with client.submit_tool_outputs_stream(
                    first.thread_id, first.run_id, answers, req.deadline
                ) as ev:
                    async for event in self._follow(client, req, state, ev, tool_round=True):
                        yield event
            else:
                run = await client.submit_tool_outputs(first.thread_id, first.run_id, answers, req.deadline)
                async for event in self._poll(client, req, state, run, tool_round=True):
                    yield event
        except InvalidRequestError as exc:
            state.run_active = False
            run = await client.get_run(first.thread_id, first.run_id, req.deadline)
            if run.get("status") == "expired":
                await self.store.delete_calls(first.sibling_ids)
                raise _too_late() from exc
            raise

    # -- following a run ------------------------------------------------------------------------

    async def _follow(
        self,
        client: AssistantsClient,
        req: TurnRequest,
        state: _TurnState,
        events: AsyncIterator[SSEEvent],
        *,
        tool_round: bool,
    ) -> AsyncIterator[TurnEvent]:
        record_error: StoreUnavailableError | None = None
        async for sse in events:
            name = sse.event
            if name == "thread.message.delta":
                for part in mapping.delta_events(sse.json()):
                    yield part
            elif name in _RUN_END_EVENTS:
                async for event in self._conclude(client, req, state, sse.json(), tool_round=tool_round):
                    yield event
                return
            elif name == "thread.created":
                try:
                    await self._record(client, req, state, sse.json()["id"])
                except StoreUnavailableError as exc:
                    record_error = exc
                    continue
                yield ThreadBound(thread_id=state.thread_id)
            elif name == "thread.run.created":
                run = sse.json()
                state.run_id, state.run_active = run["id"], True
                if record_error is not None:
                    break
            elif name == "error":
                data = sse.json()
                error = data.get("error", data) if isinstance(data, dict) else {}
                raise failures.stream_error(error.get("code"), error.get("message") or str(data))
            elif name == "done":
                break
        if record_error is not None:
            await self._release(client, state)  # cancels the run and deletes the unrecorded thread
            raise record_error
        raise UpstreamError("The run's event stream ended before the run did.", code="upstream_stream_ended")

    async def _poll(
        self, client: AssistantsClient, req: TurnRequest, state: _TurnState, run: dict[str, Any], *, tool_round: bool
    ) -> AsyncIterator[TurnEvent]:
        """The fallback mode: follow the run by polling with adaptive backoff, then read its messages."""
        delays = self.poll.delays()
        while run.get("status") not in mapping.TERMINAL:
            await asyncio.sleep(next(delays))
            run = await client.get_run(run["thread_id"], run["id"], req.deadline)
        if run.get("status") in ("completed", "incomplete"):
            messages = await client.run_messages(run["thread_id"], run["id"], req.deadline)
            for message in messages:
                if message.get("role") == "assistant":
                    for part in mapping.message_events(message):
                        yield part
        async for event in self._conclude(client, req, state, run, tool_round=tool_round):
            yield event

    async def _conclude(
        self, client: AssistantsClient, req: TurnRequest, state: _TurnState, run: dict[str, Any], *, tool_round: bool
    ) -> AsyncIterator[TurnEvent]:
        state.run_active = False
        assert state.thread_id is not None
        if self.metrics is not None:
            self.metrics.runs.labels("assistants", str(run.get("status"))).inc()
        if tool_round:
            # The outputs reached the run; those calls are answered whatever the run did next.
            await self.store.delete_calls(tuple(r.call_id for r in pending_tool_results(req.items)))
        result = mapping.outcome(run, tool_round=tool_round)
        requests = mapping.approvals_of(run) if result.finish_reason == "tool_calls" else ()
        if requests and req.approvals in ("approve", "deny"):
            async for event in self._answer_approvals(client, req, state, run, req.approvals == "approve"):
                yield event
            return
        if requests:
            if req.approvals == "refuse":
                state.run_active = True  # _release cancels it
                raise approvals.refused(req.model, requests)
            await self._save_calls(req, state, run, tuple(approvals.as_tool_call(r) for r in requests))
            yield ApprovalRequired(requests=requests)
        elif result.finish_reason == "tool_calls":
            calls = mapping.tool_calls_of(run)
            await self._save_calls(req, state, run, calls)
            yield ToolCallsRequired(calls=calls)
        state.used_at = time.time()
        yield TurnCompleted(
            finish_reason=result.finish_reason,
            usage=result.usage,
            cursor=state.thread_id,
        )

    async def _answer_approvals(
        self, client: AssistantsClient, req: TurnRequest, state: _TurnState, run: dict[str, Any], approve: bool
    ) -> AsyncIterator[TurnEvent]:
        """The route answers the run's approval requests itself, and the turn follows the run on."""
        answers = mapping.submit_body((), {r.id: approve for r in mapping.approvals_of(run)})
        state.run_active = True
        if req.route.upstream == "stream":
            async with client.submit_tool_outputs_stream(run["thread_id"], run["id"], answers, req.deadline) as ev:
                async for event in self._follow(client, req, state, ev, tool_round=False):
                    yield event
            return
        followed = await client.submit_tool_outputs(run["thread_id"], run["id"], answers, req.deadline)
        async for event in self._poll(client, req, state, followed, tool_round=False):
            yield event

    # -- registry, locks, clean-up --------------------------------------------------------------

    async def _record(self, client: AssistantsClient, req: TurnRequest, state: _TurnState, thread_id: str) -> None:
        state.thread_id = thread_id
        now = time.time()
        try:
            await self.store.record_thread(
                ThreadRecord(
                    thread_id=thread_id,
                    route=req.model,
                    backend="assistants",
                    owner=req.owner,
                    created_at=now,
                    last_used_at=now,
                )
            )
        except StoreUnavailableError:
            state.delete_thread = True
            raise
        state.created = True
        if self.metrics is not None:
            self.metrics.threads_created.inc()
        await self._lock(req, state)

    async def _save_calls(
        self, req: TurnRequest, state: _TurnState, run: dict[str, Any], calls: tuple[ToolCall, ...]
    ) -> None:
        assert state.thread_id is not None
        now = time.time()
        expires_at = float(run["expires_at"]) if run.get("expires_at") else None
        ttl = (expires_at - now if expires_at else 600.0) + _CALL_RECORD_MARGIN_S
        ids = tuple(c.id for c in calls)
        await self.store.save_calls(
            [
                CallRecord(
                    call_id=c.id,
                    thread_id=state.thread_id,
                    run_id=run["id"],
                    route=req.model,
                    owner=req.owner,
                    sibling_ids=ids,
                    created_at=now,
                    expires_at=expires_at,
                )
                for c in calls
            ],
            ttl_s=max(ttl, 60.0),
        )

    async def _lock(self, req: TurnRequest, state: _TurnState) -> None:
        assert state.thread_id is not None
        token = await self.store.acquire_lock(state.thread_id, ttl_ms=_lock_ttl_ms(req), wait_s=self.lock_wait_s)
        if token is None:
            raise ConflictError(
                "This conversation is busy with another turn; retry when it has finished.",
                headers={"Retry-After": "1"},
            )
        state.lock_token = token

    async def _release(self, client: AssistantsClient, state: _TurnState) -> None:
        """Cancel a run left active, delete a thread the registry could not take, free the lock."""
        try:
            if state.run_active and state.thread_id and state.run_id:
                state.run_active = False
                try:
                    await client.cancel_run(state.thread_id, state.run_id, time.monotonic() + 10)
                except BridgeError:
                    pass  # it may have ended meanwhile; nothing else to do
            if state.delete_thread and state.thread_id:
                state.delete_thread = False
                await client.delete_thread(state.thread_id, time.monotonic() + 10)
                if state.created:
                    with contextlib.suppress(StoreUnavailableError):  # the janitor finds it gone later
                        await self.store.forget_thread(state.thread_id)
        finally:
            if state.thread_id and (state.lock_token or state.used_at):
                token, state.lock_token = state.lock_token, None
                used_at, state.used_at = state.used_at, None
                try:
                    await self.store.close_turn(state.thread_id, token, now=used_at)
                except StoreUnavailableError:
                    pass  # the lock expires on its own (PX); the janitor sees an older last use

    async def _cancel_and_wait(self, client: AssistantsClient, req: TurnRequest, thread_id: str, run_id: str) -> None:
        try:
            run = await client.cancel_run(thread_id, run_id, req.deadline)
        except InvalidRequestError:
            run = await client.get_run(thread_id, run_id, req.deadline)
        delays = self.poll.delays()
        while run.get("status") in mapping.ACTIVE:
            await asyncio.sleep(next(delays))
            run = await client.get_run(thread_id, run_id, req.deadline)

    async def _run_body(self, client: AssistantsClient, req: TurnRequest, *, stream: bool) -> dict[str, Any]:
        tools = approvals.without_reserved(req.tools)
        agent_tools = (await self._assistant_of(client, req)).get("tools") if tools is not None else None
        return mapping.run_params(
            assistant_id=req.route.assistant_id or "",
            instructions=req.instructions,
            tools=approvals.without_reserved(req.tools),
            agent_tools=agent_tools,
            options=req.options,
            stream=stream,
        )

    async def _assistant_of(self, client: AssistantsClient, req: TurnRequest) -> dict[str, Any]:
        """The agent's definition (cached a few minutes): its instructions and built-in tools."""
        cached = self._assistants.get(req.model)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            assistant = await client.get_assistant(req.route.assistant_id or "")
        except NotFoundError as exc:
            raise UpstreamError(
                f"The agent {req.route.assistant_id} of route '{req.model}' does not exist upstream; "
                "check the bridge's configuration.",
                code="agent_not_found",
            ) from exc
        self._assistants[req.model] = (time.monotonic() + _AGENT_TTL_S, assistant)
        return assistant


def _lock_ttl_ms(req: TurnRequest) -> int:
    """A turn's lock outlives its deadline a little, and expires on its own if the bridge dies."""
    return int((req.route.timeout + 30.0) * 1000)


def _appendable(items: tuple[Item, ...]) -> bool:
    """New items a thread can take as plain messages (no tool traffic to replay)."""
    return bool(items) and all(isinstance(i, Message) and not i.tool_calls for i in items)


def _too_late() -> ToolOutputsExpiredError:
    return ToolOutputsExpiredError(
        "The tool outputs came too late: the agent's run expired while waiting for them. "
        "Send the conversation again to start a new run."
    )
