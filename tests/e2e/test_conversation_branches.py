"""Edited, regenerated and branched chat histories through the official client: a history that
diverges from a thread's end starts a new thread seeded with it; two branches never share a thread."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from tests.support.bridge import Bridge

MODEL = "demo-assistant"


def _ask(client: openai.OpenAI, messages: list[dict[str, Any]], model: str = MODEL) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    return raw.parse().choices[0].message.content or "", raw.headers.get("x-thread-id", "")


def _thread_texts(bridge: Bridge, thread_id: str) -> list[tuple[str, str]]:
    thread = next(t for t in bridge.emulator_threads() if t["id"] == thread_id)
    return [(m["role"], m["text"]) for m in thread["messages"]]


@pytest.mark.parametrize("model", ["demo-assistant", "poll-assistant"])
def test_a_linear_conversation_stays_on_one_thread_with_one_request_per_turn(bridge: Bridge, model: str) -> None:
    client = bridge.client()
    messages: list[dict[str, Any]] = []
    threads = set()
    for n, question in enumerate(["one", "two", "three"]):
        messages.append({"role": "user", "content": question})
        bridge.reset_stats()
        answer, thread_id = _ask(client, messages, model)
        posts = {op: count for op, count in bridge.emulator_stats().items() if op.startswith("POST ")}
        expected = "POST /openai/threads/runs" if n == 0 else "POST /openai/threads/{thread_id}/runs"
        assert posts == {expected: 1}  # one upstream request plays the turn (polls are reads)
        threads.add(thread_id)
        messages.append({"role": "assistant", "content": answer})
        assert answer == f"Echo: {question}", n
    assert len(threads) == 1
    (thread_id,) = threads
    assert [t for _, t in _thread_texts(bridge, thread_id)] == [
        "one",
        "Echo: one",
        "two",
        "Echo: two",
        "three",
        "Echo: three",
    ]


def test_editing_the_last_message_starts_a_thread_without_the_discarded_turn(bridge: Bridge) -> None:
    client = bridge.client()
    first, thread_1 = _ask(client, [{"role": "user", "content": "one"}])
    history = [{"role": "user", "content": "one"}, {"role": "assistant", "content": first}]
    discarded, same = _ask(client, [*history, {"role": "user", "content": "two"}])
    assert same == thread_1
    edited, thread_2 = _ask(client, [*history, {"role": "user", "content": "TWO, edited"}])
    assert edited == "Echo: TWO, edited"
    assert thread_2 != thread_1
    texts = _thread_texts(bridge, thread_2)
    assert [t for _, t in texts] == ["one", "Echo: one", "TWO, edited", "Echo: TWO, edited"]
    assert discarded not in [t for _, t in texts] and "two" not in [t for _, t in texts]
    # The old branch is untouched.
    assert [t for _, t in _thread_texts(bridge, thread_1)] == ["one", "Echo: one", "two", "Echo: two"]


def test_regenerating_the_last_answer_starts_a_new_thread(bridge: Bridge) -> None:
    client = bridge.client()
    first, thread_1 = _ask(client, [{"role": "user", "content": "one"}])
    question = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "two"},
    ]
    _, same = _ask(client, question)
    assert same == thread_1
    again, thread_2 = _ask(client, question)
    assert again == "Echo: two"
    assert thread_2 != thread_1
    assert [t for _, t in _thread_texts(bridge, thread_2)] == ["one", "Echo: one", "two", "Echo: two"]
    assert [t for _, t in _thread_texts(bridge, thread_1)] == ["one", "Echo: one", "two", "Echo: two"]


def test_the_continued_branch_keeps_its_thread_after_a_fork(bridge: Bridge) -> None:
    client = bridge.client()
    first, thread_1 = _ask(client, [{"role": "user", "content": "one"}])
    history = [{"role": "user", "content": "one"}, {"role": "assistant", "content": first}]
    second, _ = _ask(client, [*history, {"role": "user", "content": "two"}])
    _, forked = _ask(client, [*history, {"role": "user", "content": "other"}])
    assert forked != thread_1
    longer = [*history, {"role": "user", "content": "two"}, {"role": "assistant", "content": second}]
    _, continued = _ask(client, [*longer, {"role": "user", "content": "three"}])
    assert continued == thread_1


@pytest.mark.parametrize("concurrent", [False, True])
def test_twenty_branches_of_one_prefix_get_twenty_threads(bridge: Bridge, concurrent: bool) -> None:
    client = bridge.client()
    first, thread_0 = _ask(client, [{"role": "user", "content": "root"}])
    history = [{"role": "user", "content": "root"}, {"role": "assistant", "content": first}]

    def branch(n: int) -> tuple[str, str]:
        return _ask(client, [*history, {"role": "user", "content": f"branch {n}"}])

    if concurrent:
        with ThreadPoolExecutor(max_workers=10) as pool:
            results = list(pool.map(branch, range(20)))
    else:
        results = [branch(n) for n in range(20)]
    threads = [thread for _, thread in results]
    assert len(set(threads)) == 20
    for n, (answer, thread_id) in enumerate(results):
        assert answer == f"Echo: branch {n}"
        texts = [t for _, t in _thread_texts(bridge, thread_id)]
        assert texts == ["root", "Echo: root", f"branch {n}", f"Echo: branch {n}"]
    assert thread_0 in threads  # one branch continued the root's thread, the rest were seeded


def test_foundry_branches_fork_from_the_shared_response(bridge: Bridge) -> None:
    client = bridge.client()
    first = client.chat.completions.create(model="demo-agent", messages=[{"role": "user", "content": "one"}])
    history = [{"role": "user", "content": "one"}, {"role": "assistant", "content": first.choices[0].message.content}]
    bridge.reset_stats()
    for text in ("a", "b"):
        answer = client.chat.completions.create(
            model="demo-agent", messages=[*history, {"role": "user", "content": text}]
        )
        assert answer.choices[0].message.content == f"Echo: {text}"
    bodies = [
        r["body"] for r in bridge.emulator_requests() if r["method"] == "POST" and r["path"].endswith("/responses")
    ]
    assert len(bodies) == 2
    assert bodies[0]["previous_response_id"] == bodies[1]["previous_response_id"]
    assert [b["input"] for b in bodies] == [
        [{"type": "message", "role": "user", "content": "a"}],
        [{"type": "message", "role": "user", "content": "b"}],
    ]
