"""The life of one turn: its two phases (`open`, `events`), its one deadline, and the one owner of its end.

A turn opens (validate, lock, find or create the thread, record it, start the run and see Azure's
first answer): until then every failure is a plain HTTP error. Then it streams its events. Whatever
ends it (completion, error, deadline, client hang-up, shutdown) ends it through `Turn.end`, which
runs the backend's `close` (cancel the run, release the lock, record the last use) in a task of its
own, so the cancellation that ended the request cannot interrupt it.

Endings that come from outside (the deadline, a hang-up, shutdown) are delivered by `abort`: the
task driving the turn is cancelled only while it waits on the backend, and the cancellation is turned
into the ending's error (`asyncio.timeout` does the same), so the route renders it like any other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Generic, Protocol, TypeVar

from app.core.background import BackgroundTasks
from app.core.events import ThreadBound
from app.errors import BridgeError, ShuttingDownError, UpstreamTimeoutError

log = logging.getLogger("agent_bridge.turn")

E = TypeVar("E")
T = TypeVar("T")
E_co = TypeVar("E_co", covariant=True)


class Work(Protocol[E_co]):
    """What a backend (or a service around it) does in a turn; `Turn` decides when and owns the end."""

    async def open(self) -> ThreadBound:
        """Everything up to Azure's first answer; raises plain errors (nothing has gone to the client)."""
        ...

    def events(self) -> AsyncIterator[E_co]:
        """The rest of the turn, once `open` returned."""
        ...

    async def close(self, ending: BaseException | None) -> None:
        """Leave nothing behind: cancel an active run, release the lock, record the last use.

        Called exactly once, in a task of its own, whatever happened (also when `open` never ran to
        its end); `ending` is what ended the turn (None when it completed)."""
        ...


class InFlight:
    """The turns in flight in this process, so that shutdown can end them all in OpenAI's format."""

    def __init__(self) -> None:
        self._turns: set[Turn[Any]] = set()
        self._stopping: asyncio.TimerHandle | None = None
        self.shutting_down = False

    def add(self, turn: Turn[Any]) -> None:
        self._turns.add(turn)

    def discard(self, turn: Turn[Any]) -> None:
        self._turns.discard(turn)

    def __len__(self) -> int:
        return len(self._turns)

    def begin_shutdown(self, grace_s: float) -> None:
        """Turns get `grace_s` to finish; then each still running ends with a 503 the client can retry."""
        if self.shutting_down:
            return
        self.shutting_down = True
        log.info("shutting down: %d turn(s) in flight get %.1f s to finish", len(self._turns), grace_s)
        self._stopping = asyncio.get_running_loop().call_later(grace_s, self.end_all)

    def end_all(self) -> None:
        for turn in list(self._turns):
            turn.abort(
                ShuttingDownError(
                    "The bridge is restarting and this turn could not finish within its shutdown grace; "
                    "its run was cancelled. Retry the request."
                )
            )

    def close(self) -> None:
        if self._stopping is not None:
            self._stopping.cancel()


class Turn(Generic[E]):
    """One turn, from `open` to its one end. Drive it from one task at a time (open, then events)."""

    __slots__ = (
        "_cancelled",
        "_closing",
        "_deadline",
        "_driver",
        "_ending",
        "_inflight",
        "_opened",
        "_tasks",
        "_timeout_s",
        "_timer",
        "_waiting",
        "_work",
    )  # fmt: skip

    def __init__(
        self, work: Work[E], *, deadline: float, timeout_s: float, tasks: BackgroundTasks, inflight: InFlight
    ) -> None:
        self._work = work
        self._deadline = deadline
        self._timeout_s = timeout_s
        self._tasks = tasks
        self._inflight = inflight
        self._driver: asyncio.Task[Any] | None = None
        self._waiting = False
        """The driver waits on the backend: an ending may cancel it there (never in the route's code)."""
        self._ending: BridgeError | None = None
        self._cancelled = False
        self._timer: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[Any] | None = None
        self._opened = False

    # -- the two phases ----------------------------------------------------------------------------

    async def open(self) -> ThreadBound:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(self._deadline, self._expire)  # the one deadline, set once
        self._inflight.add(self)
        try:
            if self._inflight.shutting_down:
                self.abort(ShuttingDownError("The bridge is restarting; retry the request."))
            bound = await self._wait(self._work.open())
            self._opened = True
            return bound
        except BaseException as exc:
            await self.end(exc)
            raise

    async def events(self) -> AsyncIterator[E]:
        """The turn's events; its end (however it comes) is owned here, in this generator's `finally`.

        `_wait`, inlined: a coroutine per event is a call per event. One task drives the events
        from the first to the last, so the driver is looked up once."""
        ending: BaseException | None = None
        source = self._work.events()
        driver = asyncio.current_task()
        try:
            while True:
                if self._ending is not None:
                    raise self._ending
                self._driver = driver
                self._waiting = True
                try:
                    event = await anext(source)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    self._raise_ending()
                    raise
                finally:
                    self._waiting = False
                yield event
        except BaseException as exc:
            ending = exc
            raise
        finally:
            await self.end(ending)

    async def _wait(self, step: Awaitable[T]) -> T:
        if self._ending is not None:
            close = getattr(step, "close", None)
            if close is not None:
                close()  # never awaited: say so to the coroutine, not to the warnings
            raise self._ending
        self._driver = asyncio.current_task()
        self._waiting = True
        try:
            return await step
        except asyncio.CancelledError:
            self._raise_ending()
            raise
        finally:
            self._waiting = False

    def _raise_ending(self) -> None:
        """Cancelled while waiting on the backend by an ending: that ending's error instead."""
        if self._cancelled and self._ending is not None and self._driver is not None:
            self._cancelled = False
            self._driver.uncancel()
            raise self._ending from None

    # -- endings from outside ----------------------------------------------------------------------

    def _expire(self) -> None:
        if self._opened:
            message = (
                f"The agent did not finish within the route's timeout of {self._timeout_s:g} s; "
                "the bridge cancels its run."
            )
        else:
            # Azure may still act on a request it has not answered: say what the bridge does about it.
            message = (
                f"Azure did not start the turn within the route's timeout of {self._timeout_s:g} s; "
                "a run or thread it starts late is cancelled and deleted by the bridge."
            )
        self.abort(UpstreamTimeoutError(message))

    def abort(self, error: BridgeError) -> None:
        """End the turn with `error` now if it waits on Azure, else at its next step."""
        if self._ending is not None or self._closing is not None:
            return
        self._ending = error
        if self._waiting and self._driver is not None and not self._cancelled:
            self._cancelled = True
            self._driver.cancel()
        elif self._opened:
            # The driver is not waiting on Azure: it is handing an event to the client, and a client
            # that stopped reading holds it there as long as it likes. The turn's deadline is the
            # stream's write deadline: the turn ends now all the same (its run cancelled, its lock
            # freed); the driver meets the ending at its next step, if the write ever returns.
            self._close(error)

    @property
    def ended_by(self) -> BridgeError | None:
        return self._ending

    # -- the one end -------------------------------------------------------------------------------

    def _close(self, ending: BaseException | None) -> asyncio.Task[Any]:
        """The backend's clean-up, started once, in a task of its own."""
        if self._closing is None:
            if self._timer is not None:
                self._timer.cancel()
            self._inflight.discard(self)
            self._closing = self._tasks.spawn(self._work.close(self._ending or ending), name="turn-close")
        return self._closing

    async def end(self, ending: BaseException | None = None) -> None:
        """Idempotent. Starts the backend's clean-up in its own task and waits for it unless cancelled."""
        closing = self._close(ending)
        if closing.done():
            closing.result()  # ended already (the route's `finally` after the events' own): as awaiting it would
            return
        # Cancelled while waiting (a hang-up), this raises; the clean-up goes on in its own task.
        await asyncio.shield(closing)
