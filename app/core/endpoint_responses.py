"""`/v1/responses` on an agent-endpoint route: the pass-through, with the conversation the bridge keeps put in.

The endpoint refuses `conversation` and keeps nothing to continue from (`app.core.history`), so the
bridge takes both off the request, sends the kept items and the new ones as `input`, and, when the
response completes, appends the new items and the replayable output to the chain and records the
response (owner, route, chain and its length then: what `previous_response_id`, GET and input_items
need). The Response the client sees names its `previous_response_id` and `conversation` as the client
gave them, and `store` as the bridge honours it.

In the background (`background: true`) the bridge runs the turn itself (`app.core.background_runs`),
as on Assistants routes: the endpoint has no background mode of its own (it refuses one), so the
response is a `Runnable` whose Response and every event say `background: true`, and the chain is
written at its end as for a foreground turn. An agent endpoint keeps nothing a replica could follow
the run with: `app.backends.foundry.endpoint_takeover` ends a run whose replica died.
"""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from app.core import history
from app.core.events import ThreadBound
from app.core.history import HistoryStore
from app.core.lifetime import Work
from app.core.metering import Account, account_response
from app.core.records import ResponseRecord
from app.errors import InvalidRequestError

StreamEvent = dict[str, Any]
_KEPT_ENDINGS = ("response.completed", "response.incomplete")
_TERMINAL = (*_KEPT_ENDINGS, "response.failed")


class RelayedWork(Work[StreamEvent], Protocol):
    """A relayed response's work (`FoundryRelayTurn`)."""

    def response(self) -> dict[str, Any]:
        """The Response as Azure created it (once `open` returned)."""
        ...


class EndpointStore(HistoryStore, Protocol):
    async def save_response(self, rec: ResponseRecord) -> None: ...

    async def point_items(self, item_ids: Sequence[str], response_id: str) -> None: ...


def chain_of(previous: ResponseRecord) -> tuple[str, int]:
    """The chain a recorded response continues, and its length then. A background response has none
    until it completed: one still running, failed or cancelled cannot be continued (a clear 400)."""
    if "chain" not in previous.data:
        response = previous.data.get("response") or {}
        status = "in_progress" if previous.data.get("running") else response.get("status", "unknown")
        raise InvalidRequestError(
            f"Previous response with id '{previous.response_id}' has status '{status}': only a completed "
            "response can be continued on this route (the agent endpoint keeps no history; the bridge keeps "
            "a response's once it completed).",
            param="previous_response_id",
        )
    return str(previous.data["chain"]), int(previous.data["length"])


class EndpointResponse:
    """One response on an agent endpoint; `chain` at length `base` is what it continues (None: nothing)."""

    def __init__(
        self,
        work: RelayedWork,
        store: EndpointStore,
        *,
        owner: str,
        model: str,
        chain: str | None,
        base: int,
        new: Sequence[dict[str, Any]],
        conversation: str | None,
        previous_id: str | None,
        keep: bool,
        account: Account | None = None,
        background: bool = False,
    ) -> None:
        self.background = background
        self.account = account
        self.work = work
        self.store = store
        self.owner = owner
        self.model = model
        self.chain = chain
        self.base = base
        self.new = list(new)
        self.conversation = conversation
        self.previous_id = previous_id
        self.keep = keep

    async def open(self) -> ThreadBound:
        return await self.work.open()

    async def close(self, ending: BaseException | None) -> None:
        await self.work.close(ending)

    def created(self) -> dict[str, Any]:
        """The Response a background create answers (`queued` or `in_progress`, as the endpoint created it)."""
        response = copy.deepcopy(self.work.response())
        self._relabel(response)
        return response

    def upstream(self) -> dict[str, str]:
        """Nothing: the endpoint keeps no run another replica could follow (the state names the route)."""
        return {}

    def _relabel(self, response: dict[str, Any]) -> None:
        response["previous_response_id"] = self.previous_id
        response["conversation"] = {"id": self.conversation} if self.conversation else None
        response["store"] = self.keep
        if self.background:
            response["background"] = True  # the endpoint ran it in the foreground; the client asked for this

    async def events(self) -> AsyncIterator[StreamEvent]:
        async for event in self.work.events():
            response = event.get("response")
            if isinstance(response, dict):
                self._relabel(response)
                if self.account is not None and event.get("type") in _TERMINAL:
                    account_response(self.account, response)
                if event.get("type") in _KEPT_ENDINGS:
                    await self._remember(response)
            yield event

    async def _remember(self, response: dict[str, Any]) -> None:
        items = [*self.new, *history.replayable(response.get("output"))]
        if self.conversation is not None:
            length = await self.store.append_history(self.conversation, items, expect=None)
            chain = self.conversation
        elif not self.keep:
            return
        elif self.chain is None:
            chain = history.new_chain_id()
            length = await self.store.append_history(chain, items, expect=0)
        else:
            chain = self.chain
            length = await self.store.append_history(chain, items, expect=self.base)
            if length < 0:
                # The chain went on from this point already: this turn is a branch, in a chain of its own.
                kept = await self.store.load_history(chain, self.base)
                chain = history.new_chain_id()
                length = await self.store.append_history(chain, [*kept, *items], expect=0)
        if not self.keep:
            return
        await self.store.save_response(
            ResponseRecord(
                response_id=str(response["id"]),
                owner=self.owner,
                route=self.model,
                backend="endpoint",
                thread_id=None,
                run_id=None,
                upstream_id=None,
                created_at=time.time(),
                data={
                    "chain": chain,
                    "length": length,
                    "inputs": [length - len(items), len(self.new)],
                    "response": response,
                },
            )
        )
        # The ids a client may send back as `item_reference` (the Vercel AI SDK does) instead of the items.
        output_ids = [str(i["id"]) for i in items[len(self.new) :] if "id" in i]
        await self.store.point_items(output_ids, str(response["id"]))
