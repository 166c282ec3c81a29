"""Files from agents' tools (code-interpreter images and files, cited documents): who may fetch which.

Every file id a turn hands to a client is recorded with the route and owner of that turn before
the client sees it; `GET /v1/files/{id}/content` relays the file from that route, to that owner only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from app.core import ids
from app.core.events import Annotation, Cited, TurnEvent
from app.core.records import FileRecord
from app.errors import NotFoundError

Fetch = Callable[[str, str | None], Awaitable[tuple[AsyncIterator[bytes], str]]]
"""(file id, container id) -> (content in chunks, media type), for one route."""


class FileIndex(Protocol):
    async def save_files(self, records: Sequence[FileRecord]) -> None: ...

    async def get_file(self, file_id: str, owner: str) -> FileRecord | None: ...


def records_of(annotations: Sequence[Annotation], *, route: str, owner: str) -> list[FileRecord]:
    return [
        FileRecord(file_id=a.file_id, route=route, owner=owner, container_id=a.container_id)
        for a in annotations
        if a.file_id
    ]


async def record_cited(index: FileIndex | None, cited: Cited, *, route: str, owner: str) -> None:
    """Record the file ids `cited` shows: call it before the event goes out."""
    if index is not None:
        records = records_of(cited.annotations, route=route, owner=owner)
        if records:
            await index.save_files(records)


async def recorded(
    events: AsyncIterator[TurnEvent], index: FileIndex | None, *, route: str, owner: str
) -> AsyncIterator[TurnEvent]:
    """The turn's events, each file id recorded before the event that shows it goes out."""
    async for event in events:
        if index is not None and isinstance(event, Cited):
            await record_cited(index, event, route=route, owner=owner)
        yield event


class FileRelay:
    """Serves a recorded file from the route that produced it."""

    def __init__(self, index: FileIndex, fetchers: Mapping[str, Fetch], *, max_id_length: int = 128) -> None:
        self.index = index
        self.fetchers = fetchers
        self.max_id_length = max_id_length

    async def content(self, file_id: str, *, owner: str) -> tuple[AsyncIterator[bytes], str]:
        """A file id outside the grammar, unrecorded or another owner's is the 404 of an unknown file."""
        ids.path_id(file_id, self.max_id_length, _unknown_file)
        record = await self.index.get_file(file_id, owner)
        fetch = self.fetchers.get(record.route) if record is not None else None
        if record is None or fetch is None:
            raise _unknown_file(file_id)
        return await fetch(file_id, record.container_id)


def _unknown_file(file_id: str) -> NotFoundError:
    return NotFoundError(f"No file with id '{file_id}' found.", param="file_id")
