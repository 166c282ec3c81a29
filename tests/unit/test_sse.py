"""Upstream SSE parsing: events cut at blank lines whatever the chunking, CRLF or LF, comments skipped."""

from __future__ import annotations

import pytest

from app.backends.upstream import SSEDecoder, SSEEvent, parse_event, parse_lines


def parse_sse(body: bytes) -> list[SSEEvent]:
    """Every event of a complete SSE body, fed in one chunk."""
    decoder = SSEDecoder()
    return decoder.feed(body) + decoder.flush()


STREAM = (
    b": keep-alive\n\n"
    b'event: thread.run.created\ndata: {"id":"run_1"}\n\n'
    b'event: thread.message.delta\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
    b"event: done\ndata: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent("thread.run.created", '{"id":"run_1"}'),
    SSEEvent("thread.message.delta", '{"a":\n1}'),
    SSEEvent("done", "[DONE]"),
]


def _decode(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.flush()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, len(STREAM)])
def test_events_survive_any_chunking(size: int) -> None:
    assert _decode([STREAM[i : i + size] for i in range(0, len(STREAM), size)]) == EXPECTED


def test_every_split_point_of_crlf_streams() -> None:
    body = STREAM.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    for cut in range(len(body) + 1):
        assert _decode([body[:cut], body[cut:]]) == EXPECTED, cut


def test_lone_cr_line_ends() -> None:
    assert parse_sse(b"event: a\rdata: 1\r\revent: b\rdata: 2\r\r") == [SSEEvent("a", "1"), SSEEvent("b", "2")]


def test_a_last_event_without_blank_line_is_kept() -> None:
    assert parse_sse(b"event: x\ndata: 1") == [SSEEvent("x", "1")]
    assert parse_sse(b"event: x\r\ndata: 1\r") == [SSEEvent("x", "1")]


def test_events_are_returned_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: a\ndata: 1\n") == []
    assert decoder.feed(b"\nevent: b\n") == [SSEEvent("a", "1")]
    assert decoder.feed(b"data: 2\n\n") == [SSEEvent("b", "2")]
    assert decoder.flush() == []


def test_a_large_event_in_many_small_chunks() -> None:
    payload = "x" * 200_000
    body = f"event: big\ndata: {payload}\n\n".encode()
    assert _decode([body[i : i + 100] for i in range(0, len(body), 100)]) == [SSEEvent("big", payload)]


def test_parse_event_fields() -> None:
    assert parse_event(b"data: only data") == SSEEvent("message", "only data")
    assert parse_event(b"event:tight\ndata:{}") == SSEEvent("tight", "{}")
    assert parse_event(b"event: e\ndata:  two spaces") == SSEEvent("e", " two spaces")
    assert parse_event(b"event: e\ndata") == SSEEvent("e", "")
    assert parse_event(b"event: e\nid: 7\nretry: 10\ndata: x") == SSEEvent("e", "x")
    assert parse_event(b": just a comment") is None
    assert parse_event(b"event: no-data") is None
    assert parse_event("data: caf\u00e9".encode()) == SSEEvent("message", "caf\u00e9")
    assert parse_event(b"data: \xff") == SSEEvent("message", "\ufffd")
    assert SSEEvent("e", '{"k": [1]}').json() == {"k": [1]}


@pytest.mark.parametrize(
    "block",
    [
        b'event: thread.run.created\ndata: {"id":"run_1"}',
        b"event: x\ndata: ",
        b"event: \ndata: 1",
        b"event:  spaced\ndata:  value",
        b"event: a\ndata: 1\ndata: 2",
        b"event: a\nid: 7\ndata: 1",
        b": comment\nevent: a\ndata: 1",
        b"event: only-a-name",
        b"event: caf\xc3\xa9\ndata: \xe2\x82\xac",
        b"event: bad\xff\ndata: \xff",
        b"data: 1",
    ],
)
def test_the_fast_path_reads_every_block_as_the_line_parser_does(block: bytes) -> None:
    assert parse_event(block) == parse_lines(block)
