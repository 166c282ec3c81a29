"""Background responses through the official client: polling to an end, and a stream cut after N events then resumed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import openai

ENDED = ("completed", "failed", "cancelled", "incomplete")


def poll(client: openai.OpenAI, response_id: str, within_s: float = 15, every_s: float = 0.05) -> Any:
    """The response once it has ended (fails the test if it has not within `within_s`)."""
    deadline = time.monotonic() + within_s
    while True:
        response = client.responses.retrieve(response_id)
        if response.status in ENDED:
            return response
        assert time.monotonic() < deadline, f"still {response.status}"
        time.sleep(every_s)


@dataclass
class Resumed:
    cut: int
    """The sequence number of the last event the cut stream delivered."""
    rest: list[Any]
    """The events of `?stream=true&starting_after=cut`."""
    whole: list[Any]
    """The events of the whole stream read again from its start."""


def cut_and_resume(client: openai.OpenAI, model: str, text: str) -> Resumed:
    """A background response whose stream the client cuts after two events, resumed after the last one seen."""
    created = client.responses.create(model=model, input=f"/sleep 800\n{text}", background=True)
    first: list[Any] = []
    with client.responses.retrieve(created.id, stream=True) as stream:
        for event in stream:
            first.append(event)
            if len(first) == 2:
                break  # the client's connection is cut here
    cut = first[-1].sequence_number
    rest = list(client.responses.retrieve(created.id, stream=True, starting_after=cut))
    whole = list(client.responses.retrieve(created.id, stream=True))
    return Resumed(cut=cut, rest=rest, whole=whole)
