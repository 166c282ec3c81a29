"""Background responses (`background: true`): the work runs on its own, streamed or not, until it ends or is
cancelled.

The rules, from the Responses reference that Foundry's `/openai/v1/responses` follows (openai-openapi
`cancelResponse`: "Only responses created with the `background` parameter set to `true` can be
cancelled"; learn.microsoft.com "Migrate to the new agents developer experience" lists background
mode and durable streams for Foundry v2):
- the create call answers at once, the response `queued`; it moves to `in_progress`, then ends;
- `stream: true` with `background: true` streams the same events, but a client that goes away only
  stops its own relay, never the work; `GET /responses/{id}?stream=true&starting_after=N` resumes the
  stream after event N (openai-python `responses.retrieve(stream=True, starting_after=...)`);
- `POST /responses/{id}/cancel` stops queued or in-progress work and answers the response with
  `status: "cancelled"`; a streamed relay then ends without a terminal event (the Responses stream
  defines no `response.cancelled` event; what Azure sends there was not established).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from app.emulator.event_log import Log


class EventLog(Log[tuple[int, bytes]]):
    """Every event of one background response, as `(sequence_number, sse bytes)`, append-only."""

    def append(self, sequence: int, chunk: bytes) -> None:
        self.add((sequence, chunk))

    async def relay(self, after: int = -1) -> AsyncIterator[bytes]:
        """The events whose sequence number is above `after`, as they come, until the log closes."""
        index = 0
        while True:
            while index < len(self.events):
                sequence, chunk = self.events[index]
                index += 1
                if sequence > after:
                    yield chunk
            if self.closed:
                return
            await self.changed()


async def produce(events: AsyncIterator[tuple[int, bytes]], log: EventLog, on_end: Callable[[], Any]) -> None:
    """Run one background response: drain its event generator into `log`; close the log however it ends."""
    try:
        async for sequence, chunk in events:
            log.append(sequence, chunk)
    finally:
        on_end()
        log.close()
