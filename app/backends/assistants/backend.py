"""The Assistants backend: what every turn of an `asst_*` agent shares (clients, registry, policies, agent cache).

Each turn is an `AssistantsTurn` (`app.backends.assistants.turn`). Invariants kept there (DESIGN §3):
a thread is recorded in the registry the moment its id is known and before anything reaches the
client (if that fails, its run is cancelled, the thread deleted, and the client gets 503); every
tool call handed out resolves to its run; one turn at a time per thread (a renewed lease).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from app.backends.assistants import mapping
from app.backends.assistants.client import AssistantsClient
from app.backends.assistants.turn import AssistantsTurn
from app.backends.lease import LeasePolicy
from app.backends.polling import PollPolicy
from app.core import approvals
from app.core.background import BackgroundTasks
from app.core.turn import TurnRequest
from app.errors import NotFoundError, UpstreamError
from app.metrics import Metrics
from app.state.store import RedisStore

_AGENT_TTL_S = 300.0


class AssistantsBackend:
    """Starts turns of `asst_*` agents. One client per route; the store is the thread registry."""

    def __init__(
        self,
        clients: Mapping[str, AssistantsClient],
        store: RedisStore,
        tasks: BackgroundTasks,
        *,
        lock_wait_s: float,
        poll: PollPolicy | None = None,
        lease: LeasePolicy | None = None,
        metrics: Metrics | None = None,
        create_grace_s: float = 30.0,
    ) -> None:
        self.metrics = metrics
        self.clients = clients
        self.store = store
        self.tasks = tasks
        self.lock_wait_s = lock_wait_s
        self.poll = poll or PollPolicy()
        self.lease = lease or LeasePolicy()
        self.create_grace_s = create_grace_s
        """How long past the turn's deadline the answer to a thread create is still awaited (to record
        or delete the thread Azure made)."""
        self._assistants: dict[str, tuple[float, dict[str, Any]]] = {}

    def turn(self, req: TurnRequest) -> AssistantsTurn:
        return AssistantsTurn(self, req)

    async def run_body(self, client: AssistantsClient, req: TurnRequest, *, stream: bool) -> dict[str, Any]:
        tools = approvals.without_reserved(req.tools)
        agent_tools = (await self.assistant_of(client, req)).get("tools") if tools is not None else None
        return mapping.run_params(
            assistant_id=req.route.assistant_id or "",
            instructions=req.instructions,
            tools=tools,
            agent_tools=agent_tools,
            options=req.options,
            stream=stream,
        )

    async def assistant_of(self, client: AssistantsClient, req: TurnRequest) -> dict[str, Any]:
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
