"""Fingerprints and the resolution of a chat history to an upstream cursor (pure, with a dict index)."""

from __future__ import annotations

from collections.abc import Sequence

from app.core import conversation, fingerprint
from app.core.turn import Item, Message, ToolCall, ToolResult


class DictIndex:
    """An in-memory stand-in for Redis, implementing the ConversationIndex protocol."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.lookups = 0

    async def find_conversation(self, owner: str, route: str, fingerprints: Sequence[str]) -> tuple[int, str] | None:
        self.lookups += 1
        hit = None
        for i, fp in enumerate(fingerprints):
            if (v := self.data.get(f"{owner}:{route}:{fp}")) is not None:
                hit = (i, v)
        return hit

    async def take_conversation(self, owner: str, route: str, fingerprints: Sequence[str]) -> tuple[int, str] | None:
        hit = await self.find_conversation(owner, route, fingerprints)
        if hit is not None:
            del self.data[f"{owner}:{route}:{fingerprints[hit[0]]}"]
        return hit

    async def save_conversation(self, owner: str, route: str, fingerprint: str, value: str) -> None:
        self.data[f"{owner}:{route}:{fingerprint}"] = value

    async def conversation_by_id(self, owner: str, route: str, conversation_id: str) -> str | None:
        return self.data.get(f"{owner}:{route}:id:{conversation_id}")

    async def bind_conversation_id(self, owner: str, route: str, conversation_id: str, value: str) -> None:
        self.data[f"{owner}:{route}:id:{conversation_id}"] = value


U1, A1, U2 = Message("user", "one"), Message("assistant", "Echo: one"), Message("user", "two")
A2, U3 = Message("assistant", "Echo: two"), Message("user", "three")


def test_chain_is_prefix_stable_and_content_sensitive() -> None:
    full = fingerprint.chain([U1, A1, U2])
    assert fingerprint.chain([U1, A1]) == full[:2]
    assert fingerprint.extend(None, [U1, A1]) == full[1]
    assert fingerprint.extend(full[0], [A1]) == full[1]
    assert fingerprint.chain([Message("user", "one!")])[0] != full[0]
    assert fingerprint.chain([Message("assistant", "one")])[0] != full[0]
    call = Message("assistant", "", (ToolCall("c", "f", "{}"),))
    assert (
        fingerprint.chain([call])[0] != fingerprint.chain([Message("assistant", "", (ToolCall("c", "f", "{ }"),))])[0]
    )
    assert fingerprint.chain([ToolResult("c", "1")])[0] != fingerprint.chain([ToolResult("c", "2")])[0]


async def test_resolution_finds_the_longest_remembered_prefix() -> None:
    index = DictIndex()
    first = await conversation.resolve(index, owner="o", route="r", items=(U1,), conversation_id=None)
    assert first.cursor is None and first.new_items == (U1,)
    assert index.lookups == 0  # no assistant message, nothing to look up
    await conversation.remember(
        index, owner="o", route="r", items=(U1,), reply=A1, cursor="thread_1", conversation_id=None
    )
    second = await conversation.resolve(index, owner="o", route="r", items=(U1, A1, U2), conversation_id=None)
    assert second.cursor == "thread_1" and second.new_items == (U2,)
    assert index.lookups == 1
    # Another owner or another route with the same history starts afresh.
    other = await conversation.resolve(index, owner="p", route="r", items=(U1, A1, U2), conversation_id=None)
    assert other.cursor is None
    edited = await conversation.resolve(
        index, owner="o", route="r", items=(Message("user", "ONE"), A1, U2), conversation_id=None
    )
    assert edited.cursor is None and len(edited.new_items) == 3


async def test_conversation_id_sends_only_what_follows_the_last_reply() -> None:
    index = DictIndex()
    fresh = await conversation.resolve(index, owner="o", route="r", items=(U1,), conversation_id="c")
    assert fresh.cursor is None
    await conversation.remember(
        index, owner="o", route="r", items=(U1,), reply=A1, cursor="thread_9", conversation_id="c"
    )
    items: tuple[Item, ...] = (U2,)
    later = await conversation.resolve(index, owner="o", route="r", items=items, conversation_id="c")
    assert later.cursor == "thread_9" and later.new_items == (U2,)
    full = await conversation.resolve(index, owner="o", route="r", items=(U1, A1, U2), conversation_id="c")
    assert full.new_items == (U2,)


async def _turn(index: DictIndex, items: tuple[Item, ...], reply: Message, new_cursor: str) -> conversation.Resolution:
    """Resolve like a chat turn on an Assistants route, then remember where it ended."""
    found = await conversation.resolve(index, owner="o", route="r", items=items, conversation_id=None)
    await conversation.remember(
        index, owner="o", route="r", items=items, reply=reply, cursor=found.cursor or new_cursor, conversation_id=None
    )
    return found


async def test_a_linear_conversation_continues_its_thread() -> None:
    index = DictIndex()
    assert (await _turn(index, (U1,), A1, "thread_1")).cursor is None
    second = await _turn(index, (U1, A1, U2), A2, "thread_new")
    assert second.cursor == "thread_1" and second.new_items == (U2,)
    third = await _turn(index, (U1, A1, U2, A2, U3), A1, "thread_new")
    assert third.cursor == "thread_1" and third.new_items == (U3,)


async def test_an_edited_or_regenerated_last_message_starts_a_new_thread() -> None:
    index = DictIndex()
    await _turn(index, (U1,), A1, "thread_1")
    await _turn(index, (U1, A1, U2), A2, "thread_1")
    # thread_1 now ends after A2: the prefix (U1, A1) is no longer its end.
    edited = await _turn(index, (U1, A1, Message("user", "TWO")), A2, "thread_2")
    assert edited.cursor is None and len(edited.new_items) == 3
    regenerated = await _turn(index, (U1, A1, U2), A2, "thread_3")
    assert regenerated.cursor is None and len(regenerated.new_items) == 3
    # The branch that went on is still continued where it ended.
    on = await conversation.resolve(index, owner="o", route="r", items=(U1, A1, U2, A2, U3), conversation_id=None)
    assert on.cursor in ("thread_1", "thread_3")


async def test_branches_of_one_prefix_never_share_a_thread() -> None:
    index = DictIndex()
    await _turn(index, (U1,), A1, "thread_0")
    cursors = []
    for n in range(20):
        found = await _turn(index, (U1, A1, Message("user", f"branch {n}")), A2, f"thread_{n + 1}")
        cursors.append(found.cursor or f"thread_{n + 1}")
    assert len(set(cursors)) == 20


async def test_unmoving_cursors_are_found_without_a_claim() -> None:
    index = DictIndex()
    await _turn(index, (U1,), A1, "resp_1")
    for text in ("a", "b"):
        found = await conversation.resolve(
            index, owner="o", route="r", items=(U1, A1, Message("user", text)), conversation_id=None, claim=False
        )
        assert found.cursor == "resp_1"


async def test_system_and_developer_text_are_part_of_the_fingerprint() -> None:
    """Two end users under one key, the same visible history, different system prompts: two threads."""
    assert fingerprint.chain([U1, A1], "persona A") != fingerprint.chain([U1, A1], "persona B")
    assert fingerprint.chain([U1, A1], None) == fingerprint.chain([U1, A1])  # none: as before
    assert fingerprint.extend(None, [U1, A1], "persona A") == fingerprint.chain([U1, A1], "persona A")[1]
    index = DictIndex()
    await conversation.remember(
        index, owner="o", route="r", items=(U1,), reply=A1, cursor="thread_a", conversation_id=None,
        instructions="persona A",
    )  # fmt: skip
    other = await conversation.resolve(
        index, owner="o", route="r", items=(U1, A1, U2), conversation_id=None, instructions="persona B"
    )
    assert other.cursor is None and other.new_items == (U1, A1, U2)
    bare = await conversation.resolve(index, owner="o", route="r", items=(U1, A1, U2), conversation_id=None)
    assert bare.cursor is None
    same = await conversation.resolve(
        index, owner="o", route="r", items=(U1, A1, U2), conversation_id=None, instructions="persona A"
    )
    assert same.cursor == "thread_a" and same.new_items == (U2,)
