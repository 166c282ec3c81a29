"""The id grammar, its bounds and list limits (`app/core/ids.py`), and docs/security-ids.md's table of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.core import ids, ownership
from app.errors import InvalidRequestError, NotFoundError
from app.settings import LimitSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "security-ids.md"


@pytest.mark.parametrize("good", ["resp_abc", "conv_A-1_b", "assistant-Xy12", "a" * 128])
def test_azure_ids_pass(good: str) -> None:
    assert ids.body_id(good, "p", 128) == good


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ("conv_A#", "invalid_id"),
        ("conv_A?x=1", "invalid_id"),
        ("conv_A/items", "invalid_id"),
        ("..", "invalid_id"),
        ("conv_A\r\n", "invalid_id"),
        ("conv_Aé", "invalid_id"),
        ("conv_A ", "invalid_id"),
        ("", "invalid_id"),
        ("a" * 129, "id_too_long"),
    ],
)
def test_anything_else_is_a_400_naming_the_field(bad: str, code: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        ids.body_id(bad, "input[3].id", 128)
    assert (info.value.param, info.value.code) == ("input[3].id", code)
    assert len(info.value.message) < 300  # an overlong id is never echoed whole


def test_a_path_id_that_fails_is_the_unknown_ids_error() -> None:
    def unknown(shown: str) -> NotFoundError:
        return NotFoundError(f"Response with id '{shown}' not found.", param="response_id")

    with pytest.raises(NotFoundError) as info:
        ids.path_id("resp_1?", 128, unknown)
    assert info.value.message == "Response with id 'resp_1?' not found."


@pytest.mark.parametrize("value", ["..", ".", "a/b", "a?b", "a#b", "a%2Fb"])
def test_a_segment_never_reshapes_a_url(value: str) -> None:
    assert not set(ids.segment(value)) & set("/?#") and ids.segment(value).strip(".") != ""


@pytest.mark.parametrize("limit", ["²", "٣", "abc", "-1", "0", "101", "1e3", "99999999999999999999", " 5"])
def test_list_limits_are_integers_from_1_to_100(limit: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        ids.list_limit(limit)
    assert info.value.param == "limit"
    assert ids.list_limit("100") == 100 and ids.list_limit(None) == 20


def test_conversation_names_have_their_own_grammar() -> None:
    assert ids.conversation_name("tenant/chat-7@x.org") == "tenant/chat-7@x.org"
    for bad in ("a b", "a{b}", "a*", "a%0A", "é", "x" * 257, ""):
        with pytest.raises(InvalidRequestError):
            ids.conversation_name(bad)


def test_input_refs_name_items_and_files_and_keep_within_bounds() -> None:
    rules = ids.IdRules(max_length=64, max_input_items=3, max_referenced_ids=2)
    items = [
        {"type": "item_reference", "id": "msg_1"},
        {"type": "message", "role": "user", "content": [{"type": "input_file", "file_id": "assistant-f"}]},
        {"type": "function_call_output", "call_id": "call_1", "output": "x"},
    ]
    refs = ownership.input_refs(items, "input", rules)
    assert [(r.kind, r.id, r.param) for r in refs] == [
        ("item", "msg_1", "input[0].id"),
        ("file", "assistant-f", "input[1].content[0].file_id"),
    ]
    with pytest.raises(InvalidRequestError) as info:
        ownership.input_refs([*items, {"role": "user", "content": "x"}], "input", rules)
    assert info.value.code == "too_many_input_items"
    with pytest.raises(InvalidRequestError) as info:
        ownership.input_refs([{"type": "item_reference", "id": f"msg_{i}"} for i in range(3)], "input", rules)
    assert info.value.code == "too_many_referenced_ids"
    with pytest.raises(InvalidRequestError) as info:
        ownership.input_refs([{"type": "function_call_output", "call_id": "call_1#"}], "input", rules)
    assert info.value.param == "input[0].call_id"


def test_the_doc_states_the_defaults() -> None:
    text = DOC.read_text()
    defaults = LimitSettings()
    for name in ("max_input_items", "max_referenced_ids", "max_id_length", "max_messages"):
        row = re.search(rf"^\| `{name}`[^|]*\| (\d+) \|", text, re.MULTILINE)
        assert row is not None and int(row.group(1)) == getattr(defaults, name), name
    assert ids.CONVERSATION_NAME.pattern.removesuffix("+") + "{1,256}" in text
    assert ids.AZURE_ID.pattern.removesuffix("+") + "{1,limits.max_id_length}" in text


def test_ids_inside_tools_follow_the_grammar() -> None:
    rules = ids.IdRules()
    ownership.tool_ids([{"type": "code_interpreter", "container": "cntr_1"}, {"type": "function"}], rules)
    for tools, param in (
        ([{"type": "code_interpreter", "container": "cntr_1/../x"}], "tools[0].container"),
        ([{"type": "code_interpreter", "container": {"file_ids": ["f", "f?"]}}], "tools[0].container.file_ids[1]"),
        ([{"type": "file_search", "vector_store_ids": ["vs#1"]}], "tools[0].vector_store_ids[0]"),
    ):
        with pytest.raises(InvalidRequestError) as info:
            ownership.tool_ids(tools, rules)
        assert info.value.param == param
