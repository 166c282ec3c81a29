"""What the bridge remembers about upstream objects (stored by `app.state.store`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.core.turn import Usage


@dataclass(frozen=True)
class ThreadRecord:
    """An upstream thread the bridge created: known until Azure confirmed its deletion."""

    thread_id: str
    route: str
    backend: str
    owner: str
    created_at: float
    last_used_at: float
    turns: int = 0
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CallRecord:
    """A tool call handed to a client, which must answer it on the run that waits."""

    call_id: str
    thread_id: str
    run_id: str
    route: str
    owner: str
    sibling_ids: tuple[str, ...]
    """Every call id pending on that run: the outputs must answer all of them at once."""
    created_at: float
    expires_at: float | None
    reported: Usage | None = None
    """The run's usage its turns so far gave their clients (the next turn of the run gives only the rest)."""


@dataclass(frozen=True)
class ResponseRecord:
    """A response id handed to a client: minted by the bridge (Assistants) or passed through (Foundry)."""

    response_id: str
    owner: str
    route: str
    backend: str
    thread_id: str | None
    run_id: str | None
    upstream_id: str | None
    created_at: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FileRecord:
    """A file an agent's turn produced or cited: served by `GET /v1/files/{id}/content` to its owner only."""

    file_id: str
    route: str
    owner: str
    container_id: str | None = None


@dataclass(frozen=True)
class ConversationRecord:
    """A conversation the bridge holds (`conv_...`): a thread on an Assistants route (kind `thread`), or
    a history the bridge keeps for an agent-endpoint route (kind `history`, in `history:<id>`)."""

    conversation_id: str
    owner: str
    route: str
    kind: str
    created_at: float
    thread_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
