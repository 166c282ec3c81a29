"""Chat turns on an agent's own endpoint (route `agent.endpoint_scoped`): the whole conversation every turn.

The endpoint is stateless (docs/reference/agent-endpoints.md): it refuses `conversation` and keeps no
response to continue from. A chat client that resends its history gets it sent as it is. With
`X-Conversation-Id` or a bridge conversation (`conversation`), the turn's cursor is a history chain
the bridge keeps (`app.core.history`): the kept items and the new ones go up, and when the turn
completes the new items and the agent's output are appended to the chain.
`/v1/responses` on such a route is the Foundry pass-through with the history put in
(`app.core.endpoint_responses`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from app.backends.foundry import mapping
from app.backends.foundry.backend import FoundryBackend, FoundryChatTurn
from app.core import history
from app.core.events import ThreadBound, TurnCompleted, TurnEvent
from app.core.history import HistoryStore
from app.core.turn import TurnRequest


class EndpointChatTurn(FoundryChatTurn):
    """One chat turn on an agent endpoint; `req.cursor` is the history chain (None: the client sends it all)."""

    def __init__(self, backend: EndpointBackend, req: TurnRequest) -> None:
        super().__init__(backend.foundry, req)
        self.store = backend.store
        self.max_items = backend.max_items
        self.new: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None

    async def open(self) -> ThreadBound:
        req = self.req
        tools = [mapping.tool_param(t) for t in req.tools or ()]
        await self.b.definitions.check_tools(req.model, mapping.agent_reference(req.route)["name"], self.client, tools)
        kept: list[dict[str, Any]] = []
        if req.cursor is not None:
            kept = await self.store.load_history(req.cursor)
            self.new = history.input_items(mapping.input_items(req.new_items), param="messages")
            history.check_bound(len(kept), len(self.new), self.max_items, param="messages")
        else:
            self.new = mapping.input_items(req.items)
        body = self.b.body(req, previous_response_id=None)
        body.pop("agent_reference", None)  # the endpoint's path names the agent
        body["input"] = [*kept, *self.new]
        created = await self.reader.open(body, req.deadline)
        return ThreadBound(thread_id=None, response_id=str(created["response"]["id"]))

    def _finish(self, response: dict[str, Any]) -> list[TurnEvent]:
        self.final = response
        return super()._finish(response)

    async def events(self) -> AsyncIterator[TurnEvent]:
        chain = self.req.cursor
        async for event in self._read():
            if isinstance(event, TurnCompleted) and chain is not None:
                output = history.replayable((self.final or {}).get("output"))
                await self.store.append_history(chain, [*self.new, *output], expect=None)
                event = TurnCompleted(finish_reason=event.finish_reason, usage=event.usage, cursor=chain)
            yield event


class EndpointBackend:
    """Starts chat turns on agent endpoints; the Foundry backend's clients, definitions and reader underneath."""

    def __init__(self, foundry: FoundryBackend, store: HistoryStore, *, max_items: int) -> None:
        self.foundry = foundry
        self.store = store
        self.max_items = max_items

    def turn(self, req: TurnRequest) -> EndpointChatTurn:
        return EndpointChatTurn(self, req)
