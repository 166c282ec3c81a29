"""Citation markers on the Foundry v2 pass-through (`app.core.relay_markers`), on Responses stream events
shaped as openai-openapi defines them (`ResponseTextDeltaEvent`, `ResponseOutputTextAnnotationAddedEvent`,
`FileCitationBody` with its `index` just past the marker, `UrlCitationBody`); pure, no I/O."""

from __future__ import annotations

from typing import Any

from app.core.relay_markers import MarkerRelay, rewrite_part
from tests.support.spec import validate

FILE_MARK, URL_MARK = "【4:0†source】", "【4:1†source】"
HEAD, MIDDLE, TAIL = "The answer is in the file", " and on the web", "."
RAW = HEAD + FILE_MARK + MIDDLE + URL_MARK + TAIL
WHERE = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
FILE_NOTE = {"type": "file_citation", "file_id": "assistant-x", "filename": "x.txt", "index": len(HEAD + FILE_MARK)}
URL_START = len(HEAD + FILE_MARK + MIDDLE)
URL_NOTE = {
    "type": "url_citation",
    "url": "https://example.com/cited",
    "title": "Cited",
    "start_index": URL_START,
    "end_index": URL_START + len(URL_MARK),
}


def _stream(annotations_last: bool = True) -> list[dict[str, Any]]:
    """An upstream stream of one message, numbered from 0 (its annotations after all deltas, as Azure's)."""
    deltas = [HEAD, FILE_MARK[:4], FILE_MARK[4:], MIDDLE, URL_MARK, TAIL]
    events: list[dict[str, Any]] = [
        {"type": "response.output_text.delta", **WHERE, "delta": d, "logprobs": []} for d in deltas
    ]
    notes = [
        {"type": "response.output_text.annotation.added", **WHERE, "annotation_index": n, "annotation": a}
        for n, a in enumerate((FILE_NOTE, URL_NOTE))
    ]
    events = [*events, *notes] if annotations_last else [events[0], *events[1:3], notes[0], *events[3:], notes[1]]
    part = {"type": "output_text", "text": RAW, "annotations": [FILE_NOTE, URL_NOTE], "logprobs": []}
    item = {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": [part]}
    events += [
        {"type": "response.output_text.done", **WHERE, "text": RAW, "logprobs": []},
        {"type": "response.content_part.done", **WHERE, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
    ]
    return [{**e, "sequence_number": n} for n, e in enumerate(events)]


def _relayed(mode: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    relay = MarkerRelay(mode)  # type: ignore[arg-type]
    return [out for event in events for out in relay.events(event)]


def test_numbered_markers_are_rewritten_and_what_streams_is_what_ends() -> None:
    for annotations_last in (True, False):
        out = _relayed("numbered", _stream(annotations_last))
        for event in out:
            validate(event, "ResponseStreamEvent")
        assert [e["sequence_number"] for e in out] == list(range(len(out)))
        text = "".join(e["delta"] for e in out if e["type"] == "response.output_text.delta")
        assert text == "The answer is in the file[1] and on the web[2]."
        assert not any("【" in e.get("delta", "") for e in out)
        added = [e for e in out if e["type"] == "response.output_text.annotation.added"]
        assert [e["annotation_index"] for e in added] == [0, 1]
        file_note, url_note = (e["annotation"] for e in added)
        assert text[file_note["index"] : file_note["index"] + 3] == "[1]"
        assert text[url_note["start_index"] : url_note["end_index"]] == "[2]"
        done, part_done, item_done = out[-3:]
        assert done["text"] == text
        assert part_done["part"]["text"] == text and part_done["part"]["annotations"] == [file_note, url_note]
        assert item_done["item"]["content"][0] == part_done["part"]


def test_strip_removes_markers_and_keep_relays_untouched() -> None:
    out = _relayed("strip", _stream())
    part = out[-2]["part"]
    assert part["text"] == "The answer is in the file and on the web."
    url = part["annotations"][1]
    assert url["start_index"] == url["end_index"] == len(HEAD + MIDDLE)
    assert _relayed("keep", _stream()) == _stream()  # fresh copies: an event changed in place would show


def test_a_terminal_response_carries_the_streamed_parts() -> None:
    relay = MarkerRelay("numbered")
    streamed = [out for event in _stream() for out in relay.events(event)]
    item = streamed[-1]["item"]
    upstream_item = _stream()[-1]["item"]
    response = {"id": "resp_1", "object": "response", "status": "completed", "output": [upstream_item]}
    completed = relay.events({"type": "response.completed", "sequence_number": 99, "response": response})
    assert completed[0]["response"]["output"] == [item]
    assert completed[0]["sequence_number"] == len(streamed)
    assert response["output"] == [upstream_item]  # the upstream object itself is left alone


def test_a_stored_part_is_rewritten_whole_and_unknown_annotations_kept() -> None:
    odd = {"type": "future_citation", "where": 3}
    part = {"type": "output_text", "text": RAW, "annotations": [FILE_NOTE, URL_NOTE, odd], "logprobs": []}
    fixed = rewrite_part(part, "numbered")
    assert fixed["text"] == "The answer is in the file[1] and on the web[2]."
    assert [a["type"] for a in fixed["annotations"]] == ["file_citation", "url_citation", "future_citation"]
    url = fixed["annotations"][1]
    assert fixed["text"][url["start_index"] : url["end_index"]] == "[2]"
    # A marker no annotation names is dropped; a container file citation after it moves with the text.
    link = "sandbox:/mnt/data/a.csv"
    text = "See" + FILE_MARK + " [a.csv](" + link + ")"
    start = text.index(link)
    note = {
        "type": "container_file_citation",
        "container_id": "cntr_1",
        "file_id": "cfile_1",
        "filename": "a.csv",
        "start_index": start,
        "end_index": start + len(link),
    }
    moved = rewrite_part({"type": "output_text", "text": text, "annotations": [note]}, "numbered")
    [placed] = moved["annotations"]
    assert moved["text"] == "See [a.csv](" + link + ")"
    assert moved["text"][placed["start_index"] : placed["end_index"]] == link


def test_text_without_markers_streams_as_it_came() -> None:
    delta = {"type": "response.output_text.delta", **WHERE, "delta": "Hi there", "logprobs": [], "obfuscation": "ab"}
    done = {"type": "response.output_text.done", **WHERE, "text": "Hi there", "logprobs": []}
    out = _relayed("numbered", [{**delta, "sequence_number": 7}, {**done, "sequence_number": 8}])
    assert out == [{**delta, "sequence_number": 0}, {**done, "sequence_number": 1}]
