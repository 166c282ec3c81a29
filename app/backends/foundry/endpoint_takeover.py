"""A background response on an agent-endpoint route whose replica died: it cannot be followed, so it ends `failed`.

The bridge runs such a response itself (`app.core.endpoint_responses`): the endpoint is stateless, so
the only live copy of the run is the replica's stream from it (docs/reference/agent-endpoints.md).
Once that replica is gone, no other one can read the rest: the response ends `failed` with an error
saying so, numbered on after the events already emitted; the chain is left as it was (the turn never
completed, as a foreground turn cut off). A cancel has nothing upstream to stop.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from app.core.responses_codec import failed_events

StreamEvent = dict[str, Any]

LOST = (
    "The bridge replica running this background response stopped before it ended, and the agent endpoint "
    "keeps no state to resume it from. Create the response again."
)


class EndpointTakeover:
    """`Takeover` for agent-endpoint routes (`app.core.background_runs`)."""

    async def follow(self, state: Mapping[str, str], emitted: list[StreamEvent]) -> AsyncIterator[StreamEvent]:
        response: dict[str, Any] = json.loads(state.get("response") or "{}")
        response["output"] = [item for item in response.get("output") or [] if item is not None]
        response["background"] = True
        numbers = [e["sequence_number"] for e in emitted if isinstance(e.get("sequence_number"), int)]
        for event in failed_events(response, "server_error", LOST, max(numbers, default=-1) + 1):
            yield event

    async def cancel(self, state: Mapping[str, str], *, release: bool) -> None:
        """Nothing to stop upstream: the endpoint's stream ended with the replica that read it, and no thread
        lock is held (the chain is written only when a turn completes)."""
