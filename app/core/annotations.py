"""Citations on the agent's text: markers such as `【4:0†source】` rewritten as `[1]`, and annotations re-indexed.

Azure's grounded answers (file_search, Bing, Azure AI Search) put a marker in the text for each
citation and an annotation naming it (by its `text`, or by its span in the raw text). One
`AnnotatedText` follows one message: text goes in as it streams, held back only from an open
marker until the annotation that names it is known, and comes out with each marker replaced by
the number of its source (`numbered`, the default), left as it is (`keep`) or removed (`strip`).
Annotations come out with indices into the text the client sees.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, Literal

from app.core.events import Annotation, Cited, TextDelta, TurnEvent

MarkerMode = Literal["numbered", "keep", "strip"]
_OPEN, _CLOSE = "【", "】"
_MAX_MARKER = 200
"""A `【` not closed within this many characters is text, not a marker."""


@dataclass(frozen=True, slots=True)
class Placed:
    """An annotation placed on the client's text: `start`/`end` index what the client sees."""

    annotation: Annotation
    """With `start_index`/`end_index` moved onto the client's text."""
    start: int
    end: int
    number: int
    """Its source's reference number (1-based, in order of first citation)."""


class AnnotatedText:
    """One message's text and citations, rewritten as it streams (see the module docstring)."""

    def __init__(self, mode: MarkerMode = "numbered") -> None:
        self.mode = mode
        self._held = ""
        self._raw_at = 0  # raw offset of the first held character
        self._out_at = 0  # length of the text handed out
        self._known: list[Annotation] = []
        self._sources: dict[str, int] = {}
        self._shifts: list[tuple[int, int, int]] = []  # (raw end of a replaced marker, its raw length, new length)
        self.placed: list[Placed] = []
        self._reported = 0

    # -- input ------------------------------------------------------------------------------------

    def feed(self, text: str) -> str:
        """Text as it arrives; returns what can be shown now."""
        self._held += text
        return self._release(final=False)

    def plain(self, text: str) -> bool:
        """Whether `text` can be handed out as it came (no marker in it, nothing held: nearly every
        delta); if so it is counted as shown."""
        if self._held or _OPEN in text:
            return False
        self._raw_at += len(text)
        self._out_at += len(text)
        return True

    def cite(self, annotations: tuple[Annotation, ...]) -> str:
        """Annotations as they arrive; returns held text they released."""
        for annotation in annotations:
            if annotation.kind != "image_file" and self._awaits_marker(annotation):
                self._known.append(annotation)
            else:
                self._place_plain(annotation)
        return self._release(final=False)

    def flush(self) -> str:
        """The end of the message: everything still held, markers nobody named dropped (numbered/strip)."""
        out = self._release(final=True)
        for annotation in self._known:  # no marker named it: its span as given
            self._place_plain(annotation)
        self._known.clear()
        return out

    # -- output -----------------------------------------------------------------------------------

    def new_placed(self) -> list[Placed]:
        """Annotations placed since the last call (for streamed `annotation.added` events)."""
        fresh = self.placed[self._reported :]
        self._reported = len(self.placed)
        return fresh

    # -- internals --------------------------------------------------------------------------------

    def _awaits_marker(self, annotation: Annotation) -> bool:
        """Whether it names a marker: by its text, or by a span that starts where text is still held."""
        if annotation.text:
            return annotation.text.startswith(_OPEN) and annotation.text.endswith(_CLOSE)
        return annotation.start_index is not None and annotation.start_index >= self._raw_at

    def _release(self, *, final: bool) -> str:
        out: list[str] = []
        while self._held:
            start = self._held.find(_OPEN)
            if start < 0:
                out.append(self._emit_plain(len(self._held)))
                break
            if start > 0:
                out.append(self._emit_plain(start))
                continue
            end = self._held.find(_CLOSE)
            if end < 0:
                if final or len(self._held) > _MAX_MARKER:
                    out.append(self._emit_plain(1))
                    continue
                break
            marker = self._held[: end + 1]
            annotation = self._named(marker, self._raw_at, self._raw_at + len(marker))
            if annotation is None and not final:
                break  # its annotation may still come
            out.append(self._emit_marker(marker, annotation))
        return "".join(out)

    def _named(self, marker: str, raw_start: int, raw_end: int) -> Annotation | None:
        for i, annotation in enumerate(self._known):
            if annotation.text == marker or (not annotation.text and _spans(annotation, raw_start, raw_end)):
                return self._known.pop(i)
        return None

    def _emit_plain(self, n: int) -> str:
        piece, self._held = self._held[:n], self._held[n:]
        self._raw_at += n
        self._out_at += n
        return piece

    def _emit_marker(self, marker: str, annotation: Annotation | None) -> str:
        self._held = self._held[len(marker) :]
        self._raw_at += len(marker)
        if annotation is None:
            shown = marker if self.mode == "keep" else ""
        elif self.mode == "numbered":
            shown = f"[{self._number(annotation)}]"
        else:
            shown = marker if self.mode == "keep" else ""
        if annotation is not None:
            self._add(annotation, self._out_at, self._out_at + len(shown))
        self._shifts.append((self._raw_at, len(marker), len(shown)))
        self._out_at += len(shown)
        return shown

    def _place_plain(self, annotation: Annotation) -> None:
        """An annotation on ordinary text (or none): its raw span mapped past the markers rewritten before it."""
        if annotation.start_index is None or annotation.end_index is None:
            self._add(annotation, self._out_at, self._out_at)
            return
        self._add(annotation, self._map(annotation.start_index), self._map(annotation.end_index))

    def _map(self, raw: int) -> int:
        out = raw
        for raw_end, raw_len, new_len in self._shifts:
            if raw_end <= raw:
                out += new_len - raw_len
        return max(0, min(out, self._out_at + len(self._held)))

    def _number(self, annotation: Annotation) -> int:
        key = annotation.url or annotation.file_id or annotation.text or str(len(self._sources))
        return self._sources.setdefault(key, len(self._sources) + 1)

    def _add(self, annotation: Annotation, start: int, end: int) -> None:
        moved = replace(annotation, start_index=start, end_index=end)
        self.placed.append(Placed(moved, start, end, self._number(annotation)))


async def rewritten(events: AsyncIterator[TurnEvent], mode: MarkerMode) -> AsyncIterator[TurnEvent]:
    """A turn's events with the text as the client sees it and `Cited` annotations placed on it.

    What the client sees is also what the conversation remembers, so its next request matches.
    """
    text = AnnotatedText(mode)
    async for event in events:
        if isinstance(event, TextDelta):
            if text.plain(event.text):
                yield event
                continue
            shown = text.feed(event.text)
        elif isinstance(event, Cited):
            shown = text.cite(event.annotations)
        else:
            shown = text.flush()
        if shown:
            yield TextDelta(shown)
        placed = text.new_placed()
        if placed:
            yield Cited(tuple(p.annotation for p in placed))
        if not isinstance(event, TextDelta | Cited):
            yield event
            text = AnnotatedText(mode)


def _spans(annotation: Annotation, raw_start: int, raw_end: int) -> bool:
    """Whether an annotation without text names the marker at [raw_start, raw_end): by its span, or by an
    `index` (start == end) at either end of it (Responses' file citations point just past the marker)."""
    start, end = annotation.start_index, annotation.end_index
    if start == raw_start and end in (None, raw_end):
        return True
    return start == end and start in (raw_start, raw_end)


def chat_annotation(a: Annotation, files_url: str) -> dict[str, Any]:
    """An annotation in chat's `message.annotations`: always a `url_citation` (the only kind chat defines);
    a file's url is the bridge's `/v1/files/{id}/content` and its id rides along as `file_id`."""
    body: dict[str, Any] = {"start_index": a.start_index or 0, "end_index": a.end_index or 0}
    if a.kind == "url_citation":
        body["url"] = a.url or ""
        body["title"] = a.title or a.url or ""
    else:
        body["url"] = f"{files_url.rstrip('/')}/{a.file_id}/content"
        body["title"] = a.filename or a.title or ("image" if a.kind == "image_file" else a.file_id or "file")
        body["file_id"] = a.file_id
        body["kind"] = a.kind
    return {"type": "url_citation", "url_citation": body}


def response_annotation(placed: Placed) -> dict[str, Any]:
    """An annotation on a Response's `output_text`, in OpenAI's `Annotation` shapes."""
    a = placed.annotation
    if a.kind == "url_citation":
        return {
            "type": "url_citation",
            "url": a.url or "",
            "title": a.title or a.url or "",
            "start_index": placed.start,
            "end_index": placed.end,
        }
    cited_file = {"file_id": a.file_id or "", "filename": a.filename or a.file_id or ""}
    if a.kind == "file_citation":
        return {"type": "file_citation", **cited_file, "index": placed.start}
    if a.kind == "container_file_citation":
        return {
            "type": "container_file_citation",
            "container_id": a.container_id or "",
            **cited_file,
            "start_index": placed.start,
            "end_index": placed.end,
        }
    return {"type": "file_path", "file_id": a.file_id or "", "index": placed.start}


def parse_response_annotation(raw: Any) -> Annotation | None:
    """A Responses `output_text` annotation as a neutral one (`index`-only kinds get a zero-width span)."""
    if not isinstance(raw, dict):
        return None
    kind = raw.get("type")
    if kind not in ("url_citation", "file_citation", "file_path", "container_file_citation"):
        return None
    start = raw.get("start_index", raw.get("index"))
    end = raw.get("end_index", start)
    return Annotation(
        kind=kind,
        text=raw.get("text"),
        start_index=start if isinstance(start, int) else None,
        end_index=end if isinstance(end, int) else None,
        url=raw.get("url"),
        title=raw.get("title"),
        file_id=raw.get("file_id"),
        filename=raw.get("filename"),
        container_id=raw.get("container_id"),
    )
