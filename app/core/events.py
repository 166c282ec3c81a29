"""Events a backend yields while it plays a turn; the codecs render them in the client's dialect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from app.core.turn import ToolCall, Usage

FinishReason = Literal["stop", "tool_calls", "length", "content_filter"]
AnnotationKind = Literal["url_citation", "file_citation", "file_path", "container_file_citation", "image_file"]


@dataclass(frozen=True, slots=True)
class ThreadBound:
    """The upstream thread (or response chain) this turn runs on; first event of every turn."""

    thread_id: str | None
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Annotation:
    """A citation or file reference on the agent's text, as Azure gave it (indices into the raw text)."""

    kind: AnnotationKind
    text: str | None = None
    """The marker or link text it annotates (`【4:0†source】`, `sandbox:/mnt/data/a.csv`), when given."""
    start_index: int | None = None
    end_index: int | None = None
    url: str | None = None
    title: str | None = None
    file_id: str | None = None
    filename: str | None = None
    container_id: str | None = None


@dataclass(frozen=True, slots=True)
class Cited:
    """Annotations of the message being written (a code-interpreter image is an `image_file` one)."""

    annotations: tuple[Annotation, ...]


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """An MCP tool call the agent wants approved before it runs."""

    id: str
    server_label: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ApprovalRequired:
    """The agent waits for the client to approve or deny these MCP calls."""

    requests: tuple[ApprovalRequest, ...]


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
    items: tuple[str, ...] = ()
    """The ids of the output items the turn made upstream (Foundry v2): recorded as the owner's."""


TurnEvent = ThreadBound | TextDelta | Cited | ApprovalRequired | ToolCallsRequired | TurnCompleted
