"""Events a backend yields while it plays a turn; the codecs render them in the client's dialect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from app.core.turn import ToolCall, Usage

FinishReason = Literal["stop", "tool_calls", "length"]


@dataclass(frozen=True, slots=True)
class ThreadBound:
    """The upstream thread (or response chain) this turn runs on; first event of every turn."""

    thread_id: str | None
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallsRequired:
    """The agent waits for the client to run these functions."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True, slots=True)
class TurnCompleted:
    finish_reason: FinishReason
    usage: Usage | None
    cursor: str
    """Where the conversation continues next turn (thread id / last response id)."""


TurnEvent = ThreadBound | TextDelta | ToolCallsRequired | TurnCompleted
