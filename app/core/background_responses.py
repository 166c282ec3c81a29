"""Background responses (`background: true`) on every route: create, progress, resume and cancel.

Assistants routes: the bridge runs the turn itself (`app.core.background_runs`): the create answers
once the run has started, the events go to Redis, any replica reports, resumes and cancels. Foundry v2
routes: Azure's own background mode: the create is relayed with `background: true`, the bridge stops
reading once Azure created the response (it runs on upstream), and retrieve, resume (`GET
/responses/{id}?stream=true&starting_after=N`) and cancel are relayed, owner-checked.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, runtime_checkable

from app.core.background import BackgroundTasks
from app.core.background_runs import BackgroundRuns
from app.core.lifetime import InFlight, Turn
from app.core.records import ResponseRecord
from app.core.relay_markers import MarkerRelay
from app.core.response_works import StreamEvent
from app.core.responses_service import ResponsesService
from app.core.service import route_for
from app.errors import InvalidRequestError
from app.wire.responses import ResponsesRequest

_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


@runtime_checkable
class Detachable(Protocol):
    """A relayed turn whose response can go on upstream without the bridge (Foundry v2)."""

    def detach(self) -> dict[str, Any]: ...


@runtime_checkable
class Runnable(Protocol):
    """A turn the bridge runs itself (Assistants; any backend whose upstream keeps no background work)."""

    def created(self) -> dict[str, Any]:
        """The Response as the create answers it (once the turn opened)."""
        ...

    def upstream(self) -> dict[str, str]:
        """What the backend's `Takeover` needs to follow the run from another replica."""
        ...


def is_background(record: ResponseRecord) -> bool:
    return bool(record.data.get("background")) or bool(record.data.get("response", {}).get("background"))


class BackgroundResponses:
    def __init__(self, responses: ResponsesService, runs: BackgroundRuns, tasks: BackgroundTasks) -> None:
        self.responses = responses
        self.runs = runs
        self.tasks = tasks
        self.inflight = InFlight()
        """Background turns are not the requests' turns: shutdown does not end them (another replica
        takes a run over when this one has gone)."""

    async def create(self, req: ResponsesRequest, body: dict[str, Any], *, owner: str) -> dict[str, Any]:
        """The Response, `queued` or `in_progress`, once the work has started upstream."""
        if req.store is False:
            raise InvalidRequestError("Background responses must be stored: store cannot be false.", param="store")
        route = route_for(self.responses.settings, req.model)
        deadline = time.monotonic() + route.timeout
        # Streamed inside, whatever the client asked: a failure then ends the log with response.failed.
        inner = req.model_copy(update={"stream": True})
        work = await self.responses.prepare(inner, route, body, owner, deadline)
        turn: Turn[StreamEvent] = Turn(
            work, deadline=deadline, timeout_s=route.timeout, tasks=self.tasks, inflight=self.inflight
        )
        bound = await turn.open()
        try:
            if isinstance(work, Detachable):
                response = work.detach()
                await turn.end(None)  # the stream closes; the response runs on upstream
                # Marked, so that resume and cancel (relayed) are for background responses only.
                await self.responses.index.save_response(
                    ResponseRecord(
                        response_id=str(response["id"]),
                        owner=owner,
                        route=req.model,
                        backend="foundry",
                        thread_id=None,
                        run_id=None,
                        upstream_id=str(response["id"]),
                        created_at=time.time(),
                        data={"background": True},
                    )
                )
                return response
            assert isinstance(work, Runnable)
            response = work.created()
            response_id = str(response["id"])
            await self.responses.index.save_response(
                ResponseRecord(
                    response_id=response_id,
                    owner=owner,
                    route=req.model,
                    backend=route.backend,
                    thread_id=bound.thread_id,
                    run_id=None,
                    upstream_id=None,
                    created_at=time.time(),
                    data={"background": True, "running": True},
                )
            )
            upstream = work.upstream()
            fields = {
                "id": response_id,
                "owner": owner,
                "route": req.model,
                "backend": route.backend,
                "request": json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                **upstream,
            }
            await self.runs.start(response_id, turn, response, fields, work=work)
            return response
        except BaseException as exc:
            await turn.end(exc)
            raise

    async def stream(self, response_id: str, *, owner: str, after: int) -> AsyncIterator[StreamEvent]:
        """Checked before the first event: another owner's id is a 404, a foreground response a 400."""
        record = await self.responses.owned(response_id, owner)
        if not is_background(record):
            raise InvalidRequestError("Only responses created with background=true can be streamed.", param="stream")
        if record.backend == "foundry":
            return self._relayed(record, after)
        return self.runs.follow(response_id, after)

    async def _relayed(self, record: ResponseRecord, after: int) -> AsyncIterator[StreamEvent]:
        relay = self.responses.passthrough
        assert relay is not None
        route = self.responses.settings.route(record.route)
        markers = MarkerRelay(route.citation_markers if route is not None else "numbered")
        items: list[str] = []
        # Rewriting citation markers renumbers the stream and depends on all of it: the bridge reads
        # Azure's stream from its start and numbers it as every stream of this response was numbered.
        upstream_after = after if markers.mode == "keep" else -1
        async for event in relay.stream(record.upstream_id or record.response_id, record.route, upstream_after):
            if event.get("type") == "response.output_item.done" and isinstance(event.get("item"), dict):
                items.append(str(event["item"].get("id")))
            elif event.get("type") in _TERMINAL and items and self.responses.settings.keys:
                await self.responses.index.claim_items(items, record.owner)
            for out in markers.events(event):
                if int(out.get("sequence_number", after + 1)) > after:
                    yield out

    async def cancel(self, response_id: str, *, owner: str) -> dict[str, Any]:
        record = await self.responses.owned(response_id, owner)
        if not is_background(record):
            raise InvalidRequestError(
                "Only responses created with background=true can be cancelled.", param="response_id"
            )
        if record.backend == "foundry":
            relay = self.responses.passthrough
            assert relay is not None
            cancelled = await relay.cancel(record.upstream_id or response_id, record.route)
            if self.responses.settings.keys:
                await self.responses.claim_output(cancelled, record.owner)
            route = self.responses.settings.route(record.route)
            return MarkerRelay(route.citation_markers).response(cancelled) if route is not None else cancelled
        if not record.data.get("running"):
            final: dict[str, Any] = record.data.get("response", {})
            if final.get("status") != "cancelled":
                raise InvalidRequestError(
                    f"Cannot cancel a response with status '{final.get('status')}'.", param="response_id"
                )
            return final
        return await self.runs.cancel(response_id)


class FinalResponses:
    """Where an ended background response stays once its log expires: its `resp:` record."""

    def __init__(self, responses: ResponsesService) -> None:
        self.responses = responses

    async def final(self, state: Mapping[str, str], response: dict[str, Any]) -> None:
        await self.responses.index.save_response(
            ResponseRecord(
                response_id=state["id"],
                owner=state["owner"],
                route=state["route"],
                backend=state.get("backend", "assistants"),
                thread_id=state.get("thread_id"),
                run_id=None,
                upstream_id=None,
                created_at=time.time(),
                data={"response": response},
            )
        )
