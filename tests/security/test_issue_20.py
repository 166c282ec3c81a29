"""Issue 20's problems 1-4 and 8, each as it was found: every test here fails on the main branch of
before the fix (each docstring says how), and passes now."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from app import cli
from tests.security.conftest import ADMIN, KEYS, MALLORY, SECRET, VICTIM, World, refused
from tests.support.bridge import routes_for

PROJECT = "/api/projects/demo/openai/v1"


def _outside_conversation(world: World) -> str:
    """A conversation made on the project directly, not through the bridge."""
    with world.bridge.emulator() as c:
        answer = c.post(
            f"{PROJECT}/conversations",
            headers={"Authorization": "Bearer t"},
            json={"items": [{"type": "message", "role": "user", "content": f"outside {SECRET}"}]},
        )
        answer.raise_for_status()
        conversation_id: str = answer.json()["id"]
        return conversation_id


def test_1_encoded_ids_never_reach_the_victims_conversation(unchanged: World) -> None:
    """Problem 1, as reported: `conv_A%3F` / `conv_A%23` were claimed as new ids of the hostile key and
    relayed raw, so Azure answered for `conv_A` (main: 200 with the victim's conversation, and a DELETE
    that deleted it). Now the same 404 as an unknown id, before any lookup or upstream call."""
    conversation = unchanged.victim.conversation
    with unchanged.http(MALLORY) as c:
        refused(
            unchanged,
            [
                ("GET %3F", lambda: c.get(f"/v1/conversations/{conversation}%3F", params={"model": "demo-agent"})),
                (
                    "DELETE %23",
                    lambda: c.delete(f"/v1/conversations/{conversation}%23", params={"model": "demo-agent"}),
                ),
                ("GET %2F..%2Fitems", lambda: c.get(f"/v1/conversations/{conversation}%2F..%2F..%2Fitems")),
            ],
            (404,),
        )
        plain = c.get(f"/v1/conversations/{conversation}")
        assert plain.status_code == 404
        for encoded in ("%3F", "%23"):
            assert c.get(f"/v1/conversations/{conversation}{encoded}").json() == plain.json() | {
                "error": plain.json()["error"] | {"message": f"Conversation with id '{conversation}{'?#'[encoded == '%23']}' not found."}
            }  # fmt: skip
    assert not unchanged.redis.exists(f"{unchanged.prefix}owned:conversation:{conversation}?")


def test_2_item_references_in_conversation_bodies_are_owner_checked(unchanged: World) -> None:
    """Problem 2: `item_reference` in `/v1/conversations` bodies was relayed unchecked (main: 200, and the
    victim's item copied into the hostile key's conversation, readable there)."""
    item = unchanged.victim.conversation_item
    client = unchanged.client(MALLORY)
    before = unchanged.upstream_requests()
    with pytest.raises(openai.BadRequestError) as info:
        client.conversations.create(items=[{"type": "item_reference", "id": item}])
    assert info.value.body["param"] == "items[0].id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.conversations.items.create(
            unchanged.mallory_conversation, items=[{"type": "item_reference", "id": item}]
        )
    assert unchanged.upstream_requests() == before
    assert SECRET not in str(client.conversations.items.list(unchanged.mallory_conversation).data)


def test_3_ids_without_a_record_are_refused_and_chat_items_are_recorded(unchanged: World) -> None:
    """Problem 3: an item id with no ownership record was relayed to Azure (main: an item made outside
    the bridge, or by a Foundry chat turn, was usable by any key). Now refused for every key, and a
    Foundry chat turn records its output items as its owner's (main: never recorded)."""
    with unchanged.bridge.emulator() as c:
        made = c.post(
            f"{PROJECT}/responses",
            headers={"Authorization": "Bearer t"},
            json={
                "agent_reference": {"type": "agent_reference", "name": "demo-agent", "version": "1"},
                "input": SECRET,
            },
        ).json()
    outside_item = made["output"][-1]["id"]
    with unchanged.http(MALLORY) as c:
        body = {"model": "demo-agent", "input": [{"type": "item_reference", "id": outside_item}]}
        refused(unchanged, [("outside item", lambda: c.post("/v1/responses", json=body))], (400,))

    before = {k for k in unchanged.redis.scan_iter(match=f"{unchanged.prefix}owned:item:*", count=1000)}
    unchanged.client(VICTIM).chat.completions.create(model="demo-agent", messages=[{"role": "user", "content": "hi"}])
    new = {k for k in unchanged.redis.scan_iter(match=f"{unchanged.prefix}owned:item:*", count=1000)} - before
    assert new and {unchanged.redis.get(k) for k in new} == {b"victim"}


def test_3_items_listed_to_their_owner_are_theirs_to_reference(unchanged: World) -> None:
    """Fail closed must not lock owners out: input items a response's listing showed its owner, and
    conversation items listed to their owner, can be referenced by that owner (and by no one else)."""
    v = unchanged.victim
    client = unchanged.client(VICTIM)
    listed = client.responses.input_items.list(v.foundry_response).data[0].id
    assert listed is not None
    answer = client.responses.create(
        model="demo-agent", input=[{"type": "item_reference", "id": listed}, {"role": "user", "content": "again"}]
    )
    assert answer.output_text == "Echo: again"
    with unchanged.http(MALLORY) as c:
        body = {"model": "demo-agent", "input": [{"type": "item_reference", "id": listed}]}
        refused(unchanged, [("listed to the victim", lambda: c.post("/v1/responses", json=body))], (400,))


def test_4_an_unknown_conversation_is_nobodys_until_an_admin_adopts_it(
    unchanged: World, tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Problem 4: a conversation the bridge did not know was claimed by whichever key named it first,
    and every claim wrote a key even on Azure's 404 (main: 200 for the hostile key, and an `owned:` key
    written). Now a 404 that writes nothing and reaches nothing; `agent-bridge conversations adopt`
    gives it to its owner."""
    outside = _outside_conversation(unchanged)
    with unchanged.http(MALLORY) as c:
        refused(
            unchanged,
            [
                ("GET", lambda: c.get(f"/v1/conversations/{outside}")),
                ("turn", lambda: c.post("/v1/responses", json={"model": "demo-agent", "input": "x", "conversation": outside})),
                ("never made", lambda: c.get("/v1/conversations/conv_doesnotexist0000")),
            ],
            (404,),
        )  # fmt: skip
    assert not unchanged.redis.exists(f"{unchanged.prefix}owned:conversation:{outside}")
    assert not unchanged.redis.exists(f"{unchanged.prefix}owned:conversation:conv_doesnotexist0000")

    config = tmp_path / "config.json"
    emulator = unchanged.bridge.emulator_url
    config.write_text(json.dumps({"redis_prefix": unchanged.prefix, "keys": KEYS, "routes": routes_for(emulator)}))
    monkeypatch.setenv("REDIS_URL", redis_url)
    adopt = ["conversations", "--config", str(config), "adopt", outside, "--owner", "victim", "--route", "demo-agent"]
    assert cli.main(adopt) == 0
    assert cli.main([*adopt[:-4], "--owner", "mallory", "--route", "demo-agent"]) == 1  # owned already
    assert cli.main([*adopt[:3], "adopt", "conv_doesnotexist0000", "--owner", "victim", "--route", "demo-agent"]) == 1
    assert not unchanged.redis.exists(f"{unchanged.prefix}owned:conversation:conv_doesnotexist0000")
    with unchanged.http(VICTIM) as c:
        assert c.get(f"/v1/conversations/{outside}").status_code == 200
    with unchanged.http(MALLORY) as c:
        assert c.get(f"/v1/conversations/{outside}").status_code == 404


def test_4_ownership_goes_with_the_conversation(unchanged: World) -> None:
    """Deleting a conversation deletes its ownership record (main: the record outlived it)."""
    client = unchanged.client(VICTIM)
    conversation = client.conversations.create().id
    key = f"{unchanged.prefix}owned:conversation:{conversation}"
    assert unchanged.redis.exists(key)
    client.conversations.delete(conversation)
    assert not unchanged.redis.exists(key)
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation)


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": [{"role": "user", "content": "x"}] * 1001}, "input", "too_many_input_items"),
        ({"input": [{"type": "item_reference", "id": f"msg_{i}"} for i in range(101)]}, "input", "too_many_referenced_ids"),
        ({"input": "x", "previous_response_id": "resp_" + "a" * 200}, "previous_response_id", "id_too_long"),
        ({"input": [{"type": "item_reference", "id": "msg_" + "a" * 200}]}, "input[0].id", "id_too_long"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("model", ["demo-agent", "demo-assistant"])
def test_8_bounds_are_400s_naming_what_was_exceeded(
    world: World, body: dict[str, Any], param: str, code: str, model: str
) -> None:
    """Problem 8: no cap on input items (main: 50,000 items made one Redis call over tens of thousands of
    keys), none on ids or references (main: relayed). Each bound is a 400 naming what was exceeded."""
    with world.http(MALLORY) as c:
        before = world.upstream_requests()
        answer = c.post("/v1/responses", json={"model": model, **body})
        assert answer.status_code == 400, answer.text
        assert (answer.json()["error"]["param"], answer.json()["error"]["code"]) == (param, code)
        assert world.upstream_requests() == before


LIMITS = ["²", "abc", "-1", "0", "101", "1e3", "99999999999999999999", " 5", "٣"]


def test_8_a_limit_that_is_not_an_integer_is_a_400_on_every_list(world: World) -> None:
    """Problem 8: `limit=²` on an Assistants route's input_items answered 500 on main (`"²".isdigit()`
    holds, `int("²")` fails); on Foundry routes any limit was relayed. Now a 400 on every list endpoint."""
    v = world.victim
    with world.http(VICTIM) as c:
        before = world.upstream_requests()
        for url in (
            f"/v1/responses/{v.assistants_response}/input_items",
            f"/v1/responses/{v.foundry_response}/input_items",
            f"/v1/conversations/{v.conversation}/items",
        ):
            for limit in LIMITS:
                answer = c.get(url, params={"limit": limit})
                assert answer.status_code == 400, (url, limit, answer.text)
                assert answer.json()["error"]["param"] == "limit"
        assert world.upstream_requests() == before
    with world.http(ADMIN) as c:
        for limit in ("²", "abc", "-1", "0", "1e3", "99999999999999999999", "٣"):  # it pages up to 1000
            answer = c.get("/admin/threads", params={"limit": limit})
            assert answer.status_code == 400 and answer.json()["error"]["param"].endswith("limit"), answer.text
