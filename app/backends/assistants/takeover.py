"""Going on with a background response whose replica died: follow its run by polling, from the ids Redis keeps.

The state (`app.core.background_runs`) names the thread, the run and the token of the thread's lock
(held for the turn's deadline, so nobody else used the thread meanwhile). The run is polled to its
end; the Response is rebuilt from the request and the events already emitted, and the rest is
emitted: the message's remaining text, the calls the client must answer (recorded, so the next
request's outputs reach the run), the end. Then the lock is released, as the dead replica would have.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from app.backends.assistants import mapping
from app.backends.lease import Lease, LeasePolicy
from app.core import approvals
from app.core.events import TextDelta
from app.core.records import CallRecord
from app.core.responses_codec import ResponseBuilder
from app.errors import BridgeError, InvalidRequestError, UpstreamError
from app.settings import Settings
from app.wire.responses import ResponsesRequest

if TYPE_CHECKING:
    from app.backends.assistants.backend import AssistantsBackend

StreamEvent = dict[str, Any]
_CALL_RECORD_MARGIN_S = 3600.0


class AssistantsTakeover:
    """`Takeover` for Assistants routes (`app.core.background_runs`)."""

    def __init__(self, backend: AssistantsBackend, settings: Settings) -> None:
        self.b = backend
        self.settings = settings

    def _route(self, state: Mapping[str, str]) -> tuple[Any, float]:
        route = self.settings.route(state["route"])
        if route is None or state["route"] not in self.b.clients:
            raise UpstreamError(f"The route '{state['route']}' of this response is no longer configured.")
        return self.b.clients[state["route"]], route.timeout

    def _lease(self, state: Mapping[str, str], timeout: float) -> Lease | None:
        token = state.get("lock")
        if not token:
            return None
        return Lease(self.b.store, self.b.tasks, LeasePolicy.for_ttl(timeout), state["thread_id"], token)

    async def follow(self, state: Mapping[str, str], emitted: list[StreamEvent]) -> AsyncIterator[StreamEvent]:
        client, timeout = self._route(state)
        thread_id, run_id = state["thread_id"], state["run_id"]
        deadline = time.monotonic() + timeout
        lease = self._lease(state, timeout)
        used_at: float | None = None
        try:
            req = ResponsesRequest.model_validate(json.loads(state["request"]))
            route = self.settings.route(state["route"])
            builder = ResponseBuilder(
                req, response_id=state["id"], markers=route.citation_markers if route else "numbered"
            )
            builder.replay(emitted)
            try:
                run = await client.get_run(thread_id, run_id, deadline)
                delays = self.b.poll.delays()
                while run.get("status") not in mapping.TERMINAL:
                    await asyncio.sleep(next(delays))
                    run = await client.get_run(thread_id, run_id, deadline)
            except BridgeError:
                # Past the deadline (or Azure failing): the run must not go on with nobody following it.
                with contextlib.suppress(BridgeError):
                    await client.cancel_run(thread_id, run_id, time.monotonic() + 10)
                raise
            status = run.get("status")
            usage, _ = mapping.turn_usage(run, reported=mapping.NO_USAGE, seen=mapping.NO_USAGE)
            try:
                reason = mapping.outcome(run, tool_round=False)
            except BridgeError as exc:
                for event in builder.fail(exc):
                    yield event
                return
            if status in ("completed", "incomplete"):
                said = "".join(
                    str(e.get("delta") or "") for e in emitted if e.get("type") == "response.output_text.delta"
                )
                text = "".join(
                    e.text
                    for message in await client.run_messages(thread_id, run_id, deadline)
                    if message.get("role") == "assistant"
                    for e in mapping.message_events(message)
                    if isinstance(e, TextDelta)
                )
                for event in builder.text(text[len(said) :] if text.startswith(said) else text):
                    yield event
            elif requests := mapping.approvals_of(run):
                # The client answers them (a route that approves or denies on its own does so only for
                # the turns it follows from their start).
                await self._save_calls(state, run, tuple(approvals.as_tool_call(r).id for r in requests))
                for event in builder.approvals(requests):
                    yield event
            elif reason == "tool_calls":
                calls = mapping.tool_calls_of(run)
                await self._save_calls(state, run, tuple(c.id for c in calls))
                for event in builder.tool_calls(calls):
                    yield event
            used_at = time.time()
            for event in builder.finish(reason, usage):
                yield event
        except asyncio.CancelledError:
            if lease is not None:
                lease.abandon()  # handed over (this replica stops): the lock stays the run's
            raise
        finally:
            if lease is not None:
                await lease.release(used_at)

    async def _save_calls(self, state: Mapping[str, str], run: dict[str, Any], ids: tuple[str, ...]) -> None:
        now = time.time()
        expires_at = float(run["expires_at"]) if run.get("expires_at") else None
        ttl = (expires_at - now if expires_at else 600.0) + _CALL_RECORD_MARGIN_S
        records = [
            CallRecord(
                call_id=call_id,
                thread_id=state["thread_id"],
                run_id=run["id"],
                route=state["route"],
                owner=state["owner"],
                sibling_ids=ids,
                created_at=now,
                expires_at=expires_at,
            )
            for call_id in ids
        ]
        await self.b.store.save_calls(records, ttl_s=max(ttl, 60.0))

    async def cancel(self, state: Mapping[str, str], *, release: bool) -> None:
        """Cancel the run and wait until Azure no longer counts it active; with `release`, free the thread's
        lock (the runner is gone: nobody else will)."""
        client, timeout = self._route(state)
        thread_id, run_id = state.get("thread_id"), state.get("run_id")
        if not thread_id or not run_id:
            return
        deadline = time.monotonic() + min(timeout, 30.0)
        try:
            try:
                run = await client.cancel_run(thread_id, run_id, deadline)
            except InvalidRequestError:
                run = await client.get_run(thread_id, run_id, deadline)  # it ended meanwhile
            delays = self.b.poll.delays()
            while run.get("status") in mapping.ACTIVE:
                await asyncio.sleep(next(delays))
                run = await client.get_run(thread_id, run_id, deadline)
        finally:
            if release and state.get("lock"):
                await self.b.store.close_turn(thread_id, state["lock"], now=None)
