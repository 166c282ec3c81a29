"""Citation markers on the Foundry v2 `/v1/responses` pass-through, by the route's `citation_markers`.

The relayed events and Responses get what chat gets (`app.core.annotations`): each `output_text`'s
markers replaced (`numbered`, `strip`), its annotations moved onto the text the client sees. `keep`
relays Azure's text and indices untouched. A delta held back at an open marker is released by a later
delta or by the annotation that names it, so the rewritten stream is renumbered; the parts that end
the stream (`output_text.done`, `content_part.done`, `output_item.done`, the terminal Response) carry
exactly the text and annotations that were streamed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from app.core.annotations import AnnotatedText, MarkerMode, parse_response_annotation, response_annotation

StreamEvent = dict[str, Any]


@dataclass
class _Part:
    """One streamed `output_text` part: where it is, its rewriter, and what the client was shown."""

    where: dict[str, Any]
    text: AnnotatedText
    shown: list[str] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False

    def show(self, text: str, delta: StreamEvent | None = None) -> list[StreamEvent]:
        """The text released now as a delta (the upstream `delta` event's other fields kept), then the
        annotations it placed."""
        out: list[StreamEvent] = []
        if text:
            self.shown.append(text)
            template = delta or {"type": "response.output_text.delta", **self.where, "logprobs": []}
            out.append({**template, "delta": text})
        for placed in self.text.new_placed():
            out.append(self._added(response_annotation(placed)))
        return out

    def _added(self, annotation: dict[str, Any]) -> StreamEvent:
        self.annotations.append(annotation)
        return {
            "type": "response.output_text.annotation.added",
            **self.where,
            "annotation_index": len(self.annotations) - 1,
            "annotation": annotation,
        }

    def raw(self, annotation: Any) -> list[StreamEvent]:
        """An annotation of a kind the rewriter does not know: relayed as it is."""
        return [self._added(annotation)]

    def final(self, part: dict[str, Any]) -> dict[str, Any]:
        return {**part, "text": "".join(self.shown), "annotations": list(self.annotations)}


def rewrite_part(part: dict[str, Any], mode: MarkerMode) -> dict[str, Any]:
    """A whole `output_text` part (a stored Response): its markers rewritten, its annotations placed."""
    text = AnnotatedText(mode)
    raw = part.get("annotations") or []
    parsed = [parse_response_annotation(a) for a in raw]
    text.cite(tuple(a for a in parsed if a is not None))
    shown = text.feed(str(part.get("text") or "")) + text.flush()
    unknown = [a for a, p in zip(raw, parsed, strict=True) if p is None]
    return {**part, "text": shown, "annotations": [*(response_annotation(p) for p in text.placed), *unknown]}


class MarkerRelay:
    """Rewrites one relayed Responses stream (see the module docstring); `keep` changes nothing."""

    def __init__(self, mode: MarkerMode) -> None:
        self.mode: MarkerMode = mode
        self._parts: dict[tuple[str, int], _Part] = {}
        self._sequence = 0

    def events(self, data: StreamEvent) -> list[StreamEvent]:
        if self.mode == "keep":
            return [data]
        out = self._rewrite(data)
        for event in out:
            if "sequence_number" in data:
                event["sequence_number"] = self._sequence
                self._sequence += 1
        return out

    def response(self, response: dict[str, Any]) -> dict[str, Any]:
        """A Response's messages with their parts as streamed (or, never streamed, rewritten whole)."""
        if self.mode == "keep" or not isinstance(response.get("output"), list):
            return response
        fixed = copy.copy(response)
        fixed["output"] = [self._item(item) for item in response["output"]]
        return fixed

    # -- internals --------------------------------------------------------------------------------

    def _part(self, data: StreamEvent) -> _Part:
        key = (str(data.get("item_id")), int(data.get("content_index") or 0))
        part = self._parts.get(key)
        if part is None:
            where = {k: data.get(k) for k in ("item_id", "output_index", "content_index")}
            part = self._parts[key] = _Part(where, AnnotatedText(self.mode))
        return part

    def _rewrite(self, data: StreamEvent) -> list[StreamEvent]:
        kind = data.get("type")
        if kind == "response.output_text.delta":
            part = self._part(data)
            return part.show(part.text.feed(str(data.get("delta") or "")), data)
        if kind == "response.output_text.annotation.added":
            part = self._part(data)
            annotation = parse_response_annotation(data.get("annotation"))
            if annotation is None:
                return part.raw(data.get("annotation"))
            return part.show(part.text.cite((annotation,)))
        if kind == "response.output_text.done":
            part = self._part(data)
            out = part.show(part.text.flush())
            part.done = True
            return [*out, {**data, "text": "".join(part.shown)}]
        if kind == "response.content_part.done" and isinstance(data.get("part"), dict):
            return [{**data, "part": self._content(str(data.get("item_id")), data.get("content_index"), data["part"])}]
        if kind == "response.output_item.done" and isinstance(data.get("item"), dict):
            return [{**data, "item": self._item(data["item"])}]
        if isinstance(data.get("response"), dict):
            return [{**data, "response": self.response(data["response"])}]
        return [data]

    def _item(self, item: Any) -> Any:
        if not isinstance(item, dict) or item.get("type") != "message" or not isinstance(item.get("content"), list):
            return item
        content = [self._content(str(item.get("id")), index, part) for index, part in enumerate(item["content"])]
        return {**item, "content": content}

    def _content(self, item_id: str, index: Any, part: Any) -> Any:
        if not isinstance(part, dict) or part.get("type") != "output_text":
            return part
        streamed = self._parts.get((item_id, int(index or 0)))
        if streamed is not None and streamed.done:
            return streamed.final(part)
        return rewrite_part(part, self.mode)
