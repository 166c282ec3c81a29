"""The bridge's own background runner: a turn run in a task the app owns, its events kept where any replica reads them.

Generic over backends: it drives any turn whose events are Responses stream events, and writes them
(batched: one write per burst) with the Response so far to a `RunLog` (Redis: `app.state.run_log`),
bounded (`max_events`) and with a TTL. Retrieve, resume and cancel read that log, so they work from
any replica. The replica running a response holds a lease on it, renewed while it runs; a replica
that finds the lease free while the response has not ended (its runner died) takes it over: the
backend's `Takeover` follows the run upstream from the ids the state keeps, and its events continue
the log's numbering.

Ending: the log's end mark is written once, with the final status; a cancelled response ends with no
terminal event (OpenAI's stream defines none for it), its status `cancelled`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from app.core.background import BackgroundTasks
from app.core.lifetime import Turn
from app.errors import BridgeError, InvalidRequestError, ResponseCancelledError

log = logging.getLogger("agent_bridge.background_runs")

StreamEvent = dict[str, Any]
ENDED = frozenset({"completed", "incomplete", "failed", "cancelled"})
_TERMINAL_EVENTS = {"response.completed": "completed", "response.incomplete": "incomplete", "response.failed": "failed"}
_FOLLOW_BLOCK_MS = 1000
_CANCEL_WAIT_S = 10.0


class RunLog(Protocol):
    async def create(self, response_id: str, fields: Mapping[str, str], lease_ms: int) -> str: ...

    async def write(
        self, response_id: str, events: list[StreamEvent], fields: Mapping[str, str], *, end: bool = False
    ) -> None: ...

    async def state(self, response_id: str) -> dict[str, str]: ...

    async def set_fields(self, response_id: str, fields: Mapping[str, str]) -> None: ...

    async def cancelling(self, response_id: str) -> bool:
        """Whether a cancel was asked for (the state's `cancel` mark)."""
        ...

    async def read(self, response_id: str, after: int, *, block_ms: int | None) -> tuple[list[StreamEvent], bool]: ...

    async def all_events(self, response_id: str) -> list[StreamEvent]: ...

    async def take_runner(self, response_id: str, lease_ms: int) -> str | None: ...

    async def renew_runner(self, response_id: str, token: str, lease_ms: int) -> bool: ...

    async def release_runner(self, response_id: str, token: str) -> None: ...


class Takeover(Protocol):
    """A backend's way to go on with a run another replica started (and lost)."""

    def follow(self, state: Mapping[str, str], emitted: list[StreamEvent]) -> AsyncIterator[StreamEvent]:
        """The rest of the response's events, numbered after the last of `emitted`; leaves the run's
        thread unlocked and its calls recorded when it ends."""
        ...

    async def cancel(self, state: Mapping[str, str], *, release: bool) -> None:
        """Stop the run upstream; with `release` (its runner is gone), free what it holds (the thread's lock)."""
        ...


class FinalRecords(Protocol):
    async def final(self, state: Mapping[str, str], response: dict[str, Any]) -> None:
        """Keep the ended response where `GET /v1/responses/{id}` finds it once the log has expired."""
        ...


class _Run:
    """One response being run by this replica: events to the log in batches, the Response so far kept."""

    def __init__(
        self, runs: BackgroundRuns, response_id: str, token: str, state: Mapping[str, str], *, written: int
    ) -> None:
        self.runs = runs
        self.id = response_id
        self.token = token
        self.state = dict(state)
        self.response: dict[str, Any] = json.loads(state.get("response") or "{}")
        self.written = written
        self.status = self.response.get("status") or "in_progress"
        self.turn: Turn[StreamEvent] | None = None
        self.work: Any = None
        self.task: asyncio.Task[Any] | None = None
        self.handed_over = False
        self.cancel_requested = False
        self._pending: list[StreamEvent] = []
        self._changed = False
        self._writer: asyncio.Task[None] | None = None
        self._renewer: asyncio.TimerHandle | None = None

    # -- the Response so far ------------------------------------------------------------------------

    def _note(self, event: StreamEvent) -> None:
        kind = event.get("type")
        response = event.get("response")
        if isinstance(response, dict):
            self.response = response
            self._changed = True
        elif kind in ("response.output_item.added", "response.output_item.done"):
            index, item = event.get("output_index"), event.get("item")
            output = self.response.setdefault("output", [])
            if isinstance(index, int) and isinstance(item, dict):
                while len(output) <= index:
                    output.append(None)
                output[index] = item
                self._changed = True
        if kind in _TERMINAL_EVENTS:
            self.status = _TERMINAL_EVENTS[str(kind)]

    def _fields(self) -> dict[str, str]:
        fields = {"status": self.status}
        if self._changed:
            fields["response"] = json.dumps(self.response, separators=(",", ":"), ensure_ascii=False)
            self._changed = False
        return fields

    # -- writing --------------------------------------------------------------------------------

    def _push(self, event: StreamEvent) -> None:
        self._note(event)
        if self.written < self.runs.max_events or event.get("type") in _TERMINAL_EVENTS:
            self._pending.append(event)
            self.written += 1
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending or self._changed:
            batch, self._pending = self._pending, []
            try:
                await self.runs.log.write(self.id, batch, self._fields())
            except BridgeError as exc:
                log.warning("background response %s: events not kept: %s", self.id, exc.message)

    def _renew(self) -> None:
        self.runs.tasks.spawn(self._extend(), name=f"renew-bg-{self.id}")
        self._renewer = asyncio.get_running_loop().call_later(self.runs.lease_s / 3, self._renew)

    async def _extend(self) -> None:
        try:
            await self.runs.log.renew_runner(self.id, self.token, self.runs.lease_ms)
            # A cancel that reached another replica is only a mark in the state: a turn whose upstream cannot
            # be stopped from there (an agent endpoint's stream is this replica's) ends when its runner sees it.
            if self.turn is not None and not self.cancel_requested and await self.runs.log.cancelling(self.id):
                self.cancel_requested = True
                self.turn.abort(ResponseCancelledError("The response was cancelled."))
        except BridgeError:
            pass  # the next renewal tries again

    # -- the run --------------------------------------------------------------------------------

    async def drive(self, events: AsyncIterator[StreamEvent]) -> None:
        self._renewer = asyncio.get_running_loop().call_later(self.runs.lease_s / 3, self._renew)
        try:
            async for event in events:
                if event.get("type") in ("response.failed", "error") and await self._cancelled():
                    continue  # the failure a cancel causes: the response ends cancelled instead
                self._push(event)
        except BridgeError as exc:
            if not await self._cancelled():
                log.warning("background response %s failed: %s", self.id, exc.message)
                self.status = "failed"
                self.response["error"] = {"code": "server_error", "message": exc.message}
        except Exception:
            log.exception("background response %s failed", self.id)
            self.status = "failed"
            self.response["error"] = {"code": "server_error", "message": "The bridge failed to run the response."}
        finally:
            await self._end()

    async def _cancelled(self) -> bool:
        if not self.cancel_requested:
            try:
                self.cancel_requested = (await self.runs.log.state(self.id)).get("cancel") == "1"
            except BridgeError:
                pass
        if self.cancel_requested:
            self.status = "cancelled"
        return self.cancel_requested

    async def _end(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
        if self._writer is not None:
            await asyncio.shield(self._writer)
        if self.handed_over:
            await self._leave()
            return
        if self.status not in ENDED:
            self.status = "failed"
            self.response.setdefault("error", {"code": "server_error", "message": "The response ended early."})
        self.response["status"] = self.status
        self.response["output"] = [item for item in self.response.get("output") or [] if item is not None]
        self._changed = True
        try:
            await self.runs.log.write(self.id, self._pending, self._fields(), end=True)
            if self.status not in ("completed", "incomplete") or self.state.get("taken_over") == "1":
                await self.runs.records.final(self.state, self.response)
        except BridgeError as exc:
            log.warning("background response %s: its end was not kept: %s", self.id, exc.message)
        finally:
            await self._leave()

    async def _leave(self) -> None:
        self.runs.local.pop(self.id, None)
        try:
            await self.runs.log.release_runner(self.id, self.token)
        except BridgeError:
            pass  # it expires on its own

    async def hand_over(self) -> None:
        """Stop following the run and leave it, its lock and its state to the replica that takes it over."""
        self.handed_over = True
        hand_over = getattr(self.work, "hand_over", None)
        if hand_over is not None:
            hand_over()
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task])


class BackgroundRuns:
    """Background responses run by the bridge (Assistants routes): start, progress, resume, cancel."""

    def __init__(
        self,
        log: RunLog,
        records: FinalRecords,
        tasks: BackgroundTasks,
        takeovers: Mapping[str, Takeover],
        *,
        lease_s: float,
        max_events: int,
    ) -> None:
        self.log = log
        self.records = records
        self.tasks = tasks
        self.takeovers = takeovers
        self.lease_s = lease_s
        self.max_events = max_events
        self.local: dict[str, _Run] = {}

    @property
    def lease_ms(self) -> int:
        return int(self.lease_s * 1000)

    async def start(
        self,
        response_id: str,
        turn: Turn[StreamEvent],
        response: dict[str, Any],
        fields: Mapping[str, str],
        *,
        work: Any = None,
    ) -> None:
        """Run an opened turn in the background, from its first event; `response` is the Response as the
        create answers it (kept as the progress until the events say more)."""
        state = {
            **fields,
            "status": str(response.get("status") or "in_progress"),
            "response": json.dumps(response, separators=(",", ":"), ensure_ascii=False),
        }
        token = await self.log.create(response_id, state, self.lease_ms)
        run = _Run(self, response_id, token, state, written=0)
        run.turn, run.work = turn, work
        self.local[response_id] = run
        run.task = self.tasks.spawn(run.drive(turn.events()), name=f"background-{response_id}")

    async def hand_over(self) -> None:
        """Shutdown: every run this replica follows is left to another replica (none is cancelled)."""
        runs = list(self.local.values())
        if runs:
            log.info("handing %d background response(s) over to the other replicas", len(runs))
        await asyncio.gather(*(run.hand_over() for run in runs), return_exceptions=True)

    async def snapshot(self, response_id: str) -> dict[str, Any]:
        state = await self._state(response_id)
        response: dict[str, Any] = json.loads(state.get("response") or "{}")
        response["status"] = state.get("status", response.get("status"))
        response["output"] = [item for item in response.get("output") or [] if item is not None]
        return response

    async def follow(self, response_id: str, after: int) -> AsyncIterator[StreamEvent]:
        """The events after sequence number `after`, then live ones until the response ends."""
        while True:
            events, ended = await self.log.read(response_id, after, block_ms=_FOLLOW_BLOCK_MS)
            for event in events:
                after = int(event["sequence_number"])
                yield event
            if ended:
                return
            if not events:
                state = await self._state(response_id)  # no news for a while: is anyone still running it?
                if state.get("status") in ENDED:
                    events, _ = await self.log.read(response_id, after, block_ms=None)
                    for event in events:
                        yield event
                    return

    async def cancel(self, response_id: str) -> dict[str, Any]:
        """Cancel a running response (its run upstream too); a cancelled one answers again; one that
        ended otherwise cannot be cancelled (400), as on Foundry v2."""
        status = (await self._kept(response_id)).get("status")
        if status in ENDED:
            if status != "cancelled":
                raise InvalidRequestError(f"Cannot cancel a response with status '{status}'.", param="response_id")
            return await self.snapshot(response_id)
        # Marked before it is looked at: a run nobody follows any more is then taken over to be cancelled
        # (not followed first, which on a backend that cannot follow it would end it `failed`).
        await self.log.set_fields(response_id, {"cancel": "1"})
        followed = response_id in self.local
        state = await self._state(response_id)
        run = self.local.get(response_id)
        if run is not None and run.turn is not None:
            run.cancel_requested = True
            run.turn.abort(ResponseCancelledError("The response was cancelled."))
        elif followed or run is None:
            takeover = self.takeovers.get(state.get("backend", ""))
            if takeover is not None:
                try:
                    await takeover.cancel(state, release=False)
                except BridgeError as exc:
                    log.warning("background response %s: cancelling its run failed: %s", response_id, exc.message)
            elif (token := await self.log.take_runner(response_id, self.lease_ms)) is not None:
                # Nobody runs it and nobody can follow it: it ends cancelled here.
                orphan = _Run(self, response_id, token, state, written=0)
                self.local[response_id] = orphan
                orphan.status = "cancelled"
                await orphan._end()
        give_up = time.monotonic() + _CANCEL_WAIT_S
        while time.monotonic() < give_up:
            state = await self._state(response_id)
            if state.get("status") in ENDED:
                break
            await asyncio.sleep(0.05)
        return await self.snapshot(response_id)

    async def _kept(self, response_id: str) -> dict[str, str]:
        state = await self.log.state(response_id)
        if not state:
            raise InvalidRequestError(
                "This background response's progress is no longer kept; retrieve it once it has ended.",
                param="response_id",
            )
        return state

    async def _state(self, response_id: str) -> dict[str, str]:
        """The response's state; one nobody runs any more (its replica died) is taken over here."""
        state = await self._kept(response_id)
        if state.get("status") in ENDED or response_id in self.local:
            return state
        takeover = self.takeovers.get(state.get("backend", ""))
        if takeover is None:
            return state
        token = await self.log.take_runner(response_id, self.lease_ms)
        if token is None:
            return state  # another replica runs it
        log.info("background response %s: taking over its run from a replica that is gone", response_id)
        state["taken_over"] = "1"
        written = len(await self.log.all_events(response_id))
        run = _Run(self, response_id, token, state, written=written)
        self.local[response_id] = run
        if state.get("cancel") == "1":
            run.cancel_requested = True
            self.tasks.spawn(self._cancel_orphan(run, takeover), name=f"cancel-bg-{response_id}")
        else:
            emitted = await self.log.all_events(response_id)
            run.task = self.tasks.spawn(run.drive(takeover.follow(state, emitted)), name=f"takeover-{response_id}")
        return state

    async def _cancel_orphan(self, run: _Run, takeover: Takeover) -> None:
        try:
            await takeover.cancel(run.state, release=True)
        except BridgeError as exc:
            log.warning("background response %s: cancelling its run failed: %s", run.id, exc.message)
        run.status = "cancelled"
        await run._end()
