"""One Assistants turn as an object: what it touched upstream, its two phases, and how it leaves nothing behind.

`open` locks the thread (or creates and records it), starts the run and reads Azure's first answer;
`events` follows the run through one seam (`_run_events`) that streams or polls and yields the same
run events either way; `close` (called once by the turn's owner, `app.core.lifetime.Turn`) cancels a
run left active, deletes a thread that never reached the client or the registry, and releases the
lease. A thread create is never abandoned: it runs in a task of its own, bounded by its own deadline,
and `close` waits for its answer to record or delete the thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Protocol

from app.backends.assistants import mapping
from app.backends.lease import Lease, LeasePolicy
from app.core import approvals, failures
from app.core.events import ApprovalRequired, ThreadBound, ToolCallsRequired, TurnCompleted, TurnEvent
from app.core.records import CallRecord, ThreadRecord
from app.core.turn import Item, Message, ToolCall, ToolResult, TurnRequest, Usage, pending_tool_results
from app.errors import (
    BridgeError,
    ClientDisconnectedError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    ShuttingDownError,
    ToolOutputsExpiredError,
    UpstreamError,
    UpstreamTimeoutError,
)

if TYPE_CHECKING:
    from app.backends.assistants.backend import AssistantsBackend

log = logging.getLogger("agent_bridge.assistants")
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
_CALL_RECORD_MARGIN_S = 3600.0
_CLEANUP_WITHIN_S = 10.0


class RunEvent(Protocol):
    """A run event, streamed (an SSE event) or made from a polled run: a name and its JSON payload."""

    @property
    def event(self) -> str: ...

    def json(self) -> Any: ...


class _Polled:
    __slots__ = ("_payload", "event")

    def __init__(self, event: str, payload: Any) -> None:
        self.event = event
        self._payload = payload

    def json(self) -> Any:
        return self._payload


class AssistantsTurn:
    """Everything one turn of an `asst_*` agent does and has touched upstream."""

    def __init__(self, backend: AssistantsBackend, req: TurnRequest) -> None:
        self.b = backend
        self.client = backend.clients[req.model]
        self.req = req
        self.streamed = req.route.upstream == "stream"
        self.thread_id: str | None = None
        self.run_id: str | None = None
        self.run_active = False
        self.recorded = False
        self.lease: Lease | None = None
        self.policy = LeasePolicy.for_ttl(req.lock_ttl_s) if req.lock_ttl_s else backend.lease
        self.used_at: float | None = None
        """Set when the turn completed: the thread's last use, recorded when the lease is released."""
        self.bound = False
        """The thread reached the client (x-thread-id): a turn that fails later keeps it."""
        self.results: tuple[ToolResult, ...] = ()
        self._live = AsyncExitStack()
        self._source: AsyncIterator[RunEvent] | None = None
        self._early: list[RunEvent] = []
        self._creating: asyncio.Task[None] | None = None
        self._answered = False
        self._reported = mapping.NO_USAGE  # the run's usage its earlier turns gave (kept with its calls)
        self._seen: Usage | None = None  # the run's completed steps so far (streamed, or listed when polled)

    # -- open: up to Azure's first answer --------------------------------------------------------

    async def open(self) -> ThreadBound:
        req = self.req
        self.results = pending_tool_results(req.items)
        if self.results:
            await self._open_tool_round()
        elif req.conversation is not None and req.cursor:
            await self._open_held(req.conversation, req.cursor)
        elif req.cursor and _appendable(req.new_items) and await self._open_known(req.cursor):
            await self._start_run()
        else:
            await self.b.store.ping()  # a store that is down now would not take the new thread's record
            self._creating = asyncio.get_running_loop().create_task(self._create())
            # Shielded: the deadline (or a hang-up) ends the wait, never the create; `close` finishes it.
            await asyncio.shield(self._creating)
        self.bound = True
        return ThreadBound(thread_id=self.thread_id)

    async def _open_held(self, conversation_id: str, thread_id: str) -> None:
        """A turn in a conversation the bridge holds: its thread or nothing (never a new thread in its place)."""
        if not _appendable(self.req.new_items):
            raise InvalidRequestError(
                "A turn in a conversation adds messages to it: send the new message(s), or the outputs of the "
                "agent's pending tool calls.",
                param="input",
            )
        if not await self._open_known(thread_id):  # its thread was deleted (the janitor, an admin)
            raise NotFoundError(f"Conversation with id '{conversation_id}' not found.", param="conversation")
        await self._start_run()

    async def _open_known(self, thread_id: str) -> bool:
        record, token = await self.b.store.open_thread(thread_id, self.req.owner, ttl_ms=self.policy.ttl_ms)
        if record is None:
            return False
        self.thread_id = thread_id
        if record.route != self.req.model:
            if token is not None:
                await self.b.store.close_turn(thread_id, token, now=None)
            self.thread_id = None
            return False
        self.recorded = True
        if token is None:
            await self._lock()
        else:
            self.lease = Lease(self.b.store, self.b.tasks, self.policy, thread_id, token)
        return True

    async def _create(self) -> None:
        """A new conversation: one request creates the thread with the history and starts the run."""
        req, client = self.req, self.client
        body = await self.b.run_body(client, req, stream=self.streamed)
        extra = body.pop("additional_instructions", None)
        if extra:
            # Creating a thread and its run takes no additional_instructions: append the system text
            # to the agent's own instructions instead of replacing them.
            own = (await self.b.assistant_of(client, req)).get("instructions") or ""
            body["instructions"] = f"{own}\n\n{extra}" if own else extra
        body["thread"] = {
            "messages": [mapping.message_param(item) for item in req.items],
            "metadata": {"created_by": BRIDGE_TAG, "owner": req.owner[:512], "route": req.model[:512]},
        }
        deadline = req.deadline + self.b.create_grace_s
        if self.streamed:
            self._source = await self._live.enter_async_context(client.create_thread_and_run_stream(body, deadline))
            await self._read_start(expect_thread=True)
            return
        run = await client.create_thread_and_run(body, deadline)
        self.run_id, self.run_active = run["id"], True
        await self._record(run["thread_id"])
        self._source = self._polled(run)

    async def _start_run(self) -> None:
        """The next turn on a known thread: one request adds the new messages and starts the run."""
        req, client = self.req, self.client
        assert self.thread_id is not None
        body = await self.b.run_body(client, req, stream=self.streamed)
        body["additional_messages"] = [mapping.message_param(item) for item in req.new_items]
        for attempt in (1, 2):
            try:
                if self.streamed:
                    self._source = await self._live.enter_async_context(
                        client.create_run_stream(self.thread_id, body, req.deadline)
                    )
                    await self._read_start(expect_thread=False)
                    return
                run = await client.create_run(self.thread_id, body, req.deadline)
                break
            except InvalidRequestError as exc:
                # A run left waiting (the client abandoned its tool calls) blocks the thread: cancel it.
                stale = mapping.active_run_id(exc.message)
                if attempt == 2 or stale is None:
                    raise
                await self._cancel_and_wait(stale)
        self.run_id, self.run_active = run["id"], True
        self._source = self._polled(run)

    async def _open_tool_round(self) -> None:
        """The client's function results go to the run that waits for them, in one submit."""
        req, client, results = self.req, self.client, self.results
        records = await self.b.store.get_calls([r.call_id for r in results], req.owner)
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
        self.thread_id, self.run_id, self.recorded = first.thread_id, first.run_id, True
        self._reported = first.reported or mapping.NO_USAGE
        await self._lock()
        outputs = mapping.submit_body(results, approvals.answers_of(results))
        if self.b.metrics is not None:
            self.b.metrics.tool_rounds.labels("assistants").inc()
        try:
            if self.streamed:
                self.run_active = True
                self._source = await self._live.enter_async_context(
                    client.submit_tool_outputs_stream(first.thread_id, first.run_id, outputs, req.deadline)
                )
                return
            run = await client.submit_tool_outputs(first.thread_id, first.run_id, outputs, req.deadline)
            self.run_active = True
            self._source = self._polled(run)
        except InvalidRequestError as exc:
            self.run_active = False
            run = await client.get_run(first.thread_id, first.run_id, req.deadline)
            if run.get("status") == "expired":
                await self.b.store.delete_calls(first.sibling_ids)
                raise _too_late() from exc
            raise

    async def _read_start(self, *, expect_thread: bool) -> None:
        """Read the stream up to its run: the thread is recorded and the run known before `open` returns."""
        assert self._source is not None
        async for sse in self._source:
            name = sse.event
            if name == "thread.created":
                await self._record(sse.json()["id"])
            elif name == "thread.run.created":
                run = sse.json()
                self.run_id, self.run_active = run["id"], True
                if self.thread_id is None:
                    self.thread_id = run.get("thread_id")
                return
            elif name == "error":
                _raise_stream_error(sse)
            else:
                self._early.append(sse)
        raise UpstreamError("The run's event stream ended before the run started.", code="upstream_stream_ended")

    # -- events: the one seam, streamed or polled ------------------------------------------------

    async def events(self) -> AsyncIterator[TurnEvent]:
        # One generator follows the run (and, once the route answered its approvals, the run on): each
        # layer of generators is a call per event.
        while True:
            concluded = False
            async for sse in self._run_events():
                name = sse.event
                if name == "thread.message.delta":
                    for part in mapping.delta_events(sse.json()):
                        yield part
                elif name == "thread.run.step.completed":
                    step = sse.json()
                    usage = mapping.usage_of(step)  # Azure completes a step once
                    if usage is not None:
                        self._seen = mapping.added(self._seen or self._reported, usage)
                elif name in _RUN_END_EVENTS:
                    for event in await self._conclude(sse.json()):
                        yield event
                    concluded = True
                    break
                elif name == "thread.run.created":
                    self.run_id, self.run_active = sse.json()["id"], True
                elif name == "error":
                    _raise_stream_error(sse)
                elif name == "done":
                    break
            if not concluded:
                raise UpstreamError("The run's event stream ended before the run did.", code="upstream_stream_ended")
            if not self._answered:
                return
            self._answered = False  # the route answered the run's approvals: follow the run on

    def _run_events(self) -> AsyncIterator[RunEvent]:
        """The run's events: those `open` read past the run's start first, then the rest of the stream."""
        assert self._source is not None
        if not self._early:
            return self._source  # nearly always: no layer in between
        return self._early_then_source()

    async def _early_then_source(self) -> AsyncIterator[RunEvent]:
        early, self._early = self._early, []
        for sse in early:
            yield sse
        assert self._source is not None
        async for sse in self._source:
            yield sse

    async def _polled(self, run: dict[str, Any]) -> AsyncIterator[RunEvent]:
        """The fallback mode as run events: poll with adaptive backoff, then the run's text and its end."""
        delays = self.b.poll.delays()
        while run.get("status") not in mapping.TERMINAL:
            await asyncio.sleep(next(delays))
            run = await self.client.get_run(run["thread_id"], run["id"], self.req.deadline)
        if run.get("status") == "requires_action" and run.get("usage") is None:
            await self._list_steps(run)
        if run.get("status") in ("completed", "incomplete"):
            messages = await self.client.run_messages(run["thread_id"], run["id"], self.req.deadline)
            for message in messages:
                if message.get("role") == "assistant":
                    # A whole message as one delta: its text, citations and images alike.
                    yield _Polled("thread.message.delta", {"delta": {"content": message.get("content") or []}})
        yield _Polled(f"thread.run.{run.get('status')}", run)

    async def _list_steps(self, run: dict[str, Any]) -> None:
        """A waiting run has no usage yet; its completed steps (earlier rounds, built-in tools) have."""
        try:
            steps = await self.client.run_steps(run["thread_id"], run["id"], self.req.deadline)
        except (UpstreamTimeoutError, ClientDisconnectedError, ShuttingDownError):
            raise
        except BridgeError as exc:
            # The calls still reach the client; what this turn leaves uncounted goes to the run's next turn.
            log.warning("could not read the usage of run %s's steps: %s", run["id"], exc.message)
        else:
            self._seen = mapping.steps_usage(steps)

    async def _conclude(self, run: dict[str, Any]) -> list[TurnEvent]:
        self.run_active = False
        assert self.thread_id is not None
        if self.b.metrics is not None:
            self.b.metrics.runs.labels("assistants", str(run.get("status"))).inc()
        tool_round = bool(self.results)
        if tool_round:
            # The outputs reached the run; those calls are answered whatever the run did next.
            await self.b.store.delete_calls(tuple(r.call_id for r in self.results))
        reason = mapping.outcome(run, tool_round=tool_round)
        events: list[TurnEvent] = []
        requests = mapping.approvals_of(run) if reason == "tool_calls" else ()
        if requests and self.req.approvals in ("approve", "deny"):
            await self._answer_approvals(run, self.req.approvals == "approve")
            return []
        usage = self._usage(run)  # before the calls are saved: they keep the run's figure so far
        if requests:
            if self.req.approvals == "refuse":
                self.run_active = True  # `close` cancels the waiting run
                raise approvals.refused(self.req.model, requests)
            await self._save_calls(run, tuple(approvals.as_tool_call(r) for r in requests))
            events.append(ApprovalRequired(requests=requests))
        elif reason == "tool_calls":
            calls = mapping.tool_calls_of(run)
            await self._save_calls(run, calls)
            events.append(ToolCallsRequired(calls=calls))
        self.used_at = time.time()
        events.append(TurnCompleted(finish_reason=reason, usage=usage, cursor=self.thread_id))
        return events

    def _usage(self, run: dict[str, Any]) -> Usage:
        """This turn's share of the run's usage; the run's figure so far is kept for its next turn."""
        seen = self._seen or self._reported
        usage, self._reported = mapping.turn_usage(run, reported=self._reported, seen=seen)
        return usage

    async def _answer_approvals(self, run: dict[str, Any], approve: bool) -> None:
        """The route answers the run's approval requests; `events` then follows the run on."""
        answers = mapping.submit_body((), {r.id: approve for r in mapping.approvals_of(run)})
        self.run_active = True
        if self.streamed:
            await self._live.aclose()
            self._live = AsyncExitStack()
            self._source = await self._live.enter_async_context(
                self.client.submit_tool_outputs_stream(run["thread_id"], run["id"], answers, self.req.deadline)
            )
        else:
            followed = await self.client.submit_tool_outputs(run["thread_id"], run["id"], answers, self.req.deadline)
            self._source = self._polled(followed)
        self._answered = True

    def upstream(self) -> dict[str, str]:
        """What another replica needs to follow this turn's run: its thread, run and the lock's token."""
        ids = {"thread_id": self.thread_id, "run_id": self.run_id, "lock": self.lease.token if self.lease else None}
        return {k: v for k, v in ids.items() if v}

    def hand_over(self) -> None:
        """This replica is stopping and another will follow the (background) run: `close` then leaves
        the run going, the thread recorded and its lock held (its token is in the background state)."""
        self.run_active = False
        self.bound = True
        if self.lease is not None:
            self.lease.abandon()

    # -- close: leave nothing behind ------------------------------------------------------------

    async def close(self, ending: BaseException | None) -> None:
        client = self.client
        try:
            if self._creating is not None and not self._creating.done():
                # Azure may still answer the create: wait for it (bounded by the create's own deadline).
                await asyncio.wait([self._creating])
            if self._creating is not None and not self._creating.cancelled():
                self._creating.exception()  # seen (it reached `open`, or nobody waits for it any more)
            await self._live.aclose()
            within = time.monotonic() + _CLEANUP_WITHIN_S
            if self.run_active and self.thread_id and self.run_id:
                self.run_active = False
                try:
                    await client.cancel_run(self.thread_id, self.run_id, within)
                except BridgeError:
                    pass  # it may have ended meanwhile; nothing else to do
            if self.thread_id and self._creating is not None and (not self.bound or _failed(ending, self.used_at)):
                # A new thread that never reached the client, or whose first turn failed: nobody can
                # continue it (a client's retry starts a new one), so it goes now.
                await client.delete_thread(self.thread_id, within)
                if self.recorded:
                    await self.b.store.forget_thread(self.thread_id)
                    self.recorded = False
        finally:
            if self.lease is not None:
                await self.lease.release(self.used_at)
            elif self.thread_id and self.used_at and self.recorded:
                await self.b.store.close_turn(self.thread_id, None, now=self.used_at)

    # -- registry and locks ----------------------------------------------------------------------

    async def _record(self, thread_id: str) -> None:
        self.thread_id = thread_id
        now = time.time()
        await self.b.store.record_thread(
            ThreadRecord(
                thread_id=thread_id,
                route=self.req.model,
                backend="assistants",
                owner=self.req.owner,
                created_at=now,
                last_used_at=now,
            )
        )
        self.recorded = True
        if self.b.metrics is not None:
            self.b.metrics.threads_created.inc()
        await self._lock()

    async def _lock(self) -> None:
        assert self.thread_id is not None
        policy = self.policy
        token = await self.b.store.acquire_lock(self.thread_id, ttl_ms=policy.ttl_ms, wait_s=self.b.lock_wait_s)
        if token is None:
            raise ConflictError(
                "This conversation is busy with another turn; retry when it has finished.",
                headers={"Retry-After": "1"},
            )
        self.lease = Lease(self.b.store, self.b.tasks, policy, self.thread_id, token)

    async def _save_calls(self, run: dict[str, Any], calls: tuple[ToolCall, ...]) -> None:
        assert self.thread_id is not None
        now = time.time()
        expires_at = float(run["expires_at"]) if run.get("expires_at") else None
        ttl = (expires_at - now if expires_at else 600.0) + _CALL_RECORD_MARGIN_S
        ids = tuple(c.id for c in calls)
        await self.b.store.save_calls(
            [
                CallRecord(
                    call_id=c.id,
                    thread_id=self.thread_id,
                    run_id=run["id"],
                    route=self.req.model,
                    owner=self.req.owner,
                    sibling_ids=ids,
                    created_at=now,
                    expires_at=expires_at,
                    reported=self._reported,
                )
                for c in calls
            ],
            ttl_s=max(ttl, 60.0),
        )

    async def _cancel_and_wait(self, run_id: str) -> None:
        assert self.thread_id is not None
        client, deadline = self.client, self.req.deadline
        try:
            run = await client.cancel_run(self.thread_id, run_id, deadline)
        except InvalidRequestError:
            run = await client.get_run(self.thread_id, run_id, deadline)
        delays = self.b.poll.delays()
        while run.get("status") in mapping.ACTIVE:
            await asyncio.sleep(next(delays))
            run = await client.get_run(self.thread_id, run_id, deadline)


def _raise_stream_error(sse: RunEvent) -> None:
    data = sse.json()
    error = data.get("error", data) if isinstance(data, dict) else {}
    raise failures.stream_error(error.get("code"), error.get("message") or str(data))


def _failed(ending: BaseException | None, used_at: float | None) -> bool:
    """The turn failed on its own account (not a hang-up or a shutdown) before it completed."""
    return (
        used_at is None
        and isinstance(ending, BridgeError)
        and not isinstance(ending, ClientDisconnectedError | ShuttingDownError)
    )


def _appendable(items: tuple[Item, ...]) -> bool:
    """New items a thread can take as plain messages (no tool traffic to replay)."""
    return bool(items) and all(isinstance(i, Message) and not i.tool_calls for i in items)


def _too_late() -> ToolOutputsExpiredError:
    return ToolOutputsExpiredError(
        "The tool outputs came too late: the agent's run expired while waiting for them. "
        "Send the conversation again to start a new run."
    )
