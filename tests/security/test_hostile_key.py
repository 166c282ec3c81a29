"""A hostile second key against every id kind, every endpoint and body field that takes one, in every
encoding: nothing of the victim's comes back, nothing the victim owns changes, nothing is a 5xx, and no
refused id reaches Azure (the emulator's request count does not move)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.security.conftest import (
    ADMIN,
    MALLORY,
    TOOLS,
    World,
    body_variants,
    path_variants,
    refused,
    refused_by_client,
)

AGENT_VERSION = "GET /api/projects/{project}/agents/{agent_name}/versions/{version}"
RESPONSE_PATHS = ["/v1/responses/{id}", "/v1/responses/{id}/input_items"]
CONVERSATION_PATHS = ["/v1/conversations/{id}", "/v1/conversations/{id}/items"]


def _victim_id(world: World, kind: str) -> str:
    return str(getattr(world.victim, kind))


def _paths(c: httpx.Client, template: str, victim_id: str, methods: tuple[str, ...]) -> list[tuple[str, Any]]:
    attempts = []
    for variant in path_variants(victim_id):
        url = template.format(id=variant)
        for method in methods:
            body = {"items": [{"type": "message", "role": "user", "content": "x"}]} if method == "POST" else None
            attempts.append((f"{method} {url}", lambda m=method, u=url, b=body: c.request(m, u, json=b)))
    return attempts


@pytest.mark.parametrize("kind", ["foundry_response", "assistants_response"])
@pytest.mark.parametrize("template", RESPONSE_PATHS)
def test_response_ids_in_paths(unchanged: World, kind: str, template: str) -> None:
    methods = ("GET", "DELETE") if template.endswith("{id}") else ("GET",)
    with unchanged.http(MALLORY) as c:
        # 404 for every id; a `/` decoded into the path may meet no route (404/405) or a slash redirect (307).
        refused(unchanged, _paths(c, template, _victim_id(unchanged, kind), methods), (307, 404, 405))


@pytest.mark.parametrize("template", CONVERSATION_PATHS)
def test_conversation_ids_in_paths(unchanged: World, template: str) -> None:
    methods = ("GET", "DELETE") if template.endswith("{id}") else ("GET", "POST")
    with unchanged.http(MALLORY) as c:
        refused(unchanged, _paths(c, template, unchanged.victim.conversation, methods), (307, 404, 405))


def test_file_ids_in_paths(unchanged: World) -> None:
    with unchanged.http(MALLORY) as c:
        refused(unchanged, _paths(c, "/v1/files/{id}/content", unchanged.victim.file, ("GET",)), (307, 404, 405))


def test_thread_ids_in_admin_paths(unchanged: World) -> None:
    """Not an admin: 403 before any id is read; an admin's hostile-looking id: the unknown thread's 404."""
    with unchanged.http(MALLORY) as c:
        refused(unchanged, _paths(c, "/admin/threads/{id}", unchanged.victim.thread, ("GET", "DELETE")), (403, 307, 404, 405))  # fmt: skip
    with unchanged.http(ADMIN) as c:
        hostile = [
            (f"GET {v}", lambda v=v: c.get(f"/admin/threads/{v}")) for v in path_variants(unchanged.victim.thread)[1:]
        ]
        refused(unchanged, hostile, (307, 404, 405))  # fmt: skip


def _bodies(world: World, field: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, /v1/responses body) for each hostile value of `field`."""
    v = world.victim
    cases: dict[str, tuple[str, str, Callable[[str], dict[str, Any]]]] = {
        "previous_response_id/foundry": (
            v.foundry_response, "demo-agent", lambda i: {"input": "x", "previous_response_id": i}),
        "previous_response_id/assistants": (
            v.assistants_response, "demo-assistant", lambda i: {"input": "x", "previous_response_id": i}),
        "conversation": (v.conversation, "demo-agent", lambda i: {"input": "x", "conversation": i}),
        "conversation.id": (v.conversation, "demo-agent", lambda i: {"input": "x", "conversation": {"id": i}}),
        "item_reference/foundry": (
            v.foundry_item, "demo-agent", lambda i: {"input": [{"type": "item_reference", "id": i}]}),
        "item_reference/conversation": (
            v.conversation_item, "demo-agent", lambda i: {"input": [{"type": "item_reference", "id": i}]}),
        "item_reference/assistants": (
            v.assistants_item, "demo-assistant", lambda i: {"input": [{"type": "item_reference", "id": i}]}),
        "input item id": (v.foundry_item, "demo-agent", lambda i: {"input": [
            {"type": "message", "role": "assistant", "id": i, "content": "x"},
            {"type": "message", "role": "user", "content": "and?"}]}),
        "input_file": (v.file, "demo-agent", lambda i: {"input": [{"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "read it"}, {"type": "input_file", "file_id": i}]}]}),
        "function_call_output": (v.call, "demo-assistant", lambda i: {"input": [
            {"type": "function_call_output", "call_id": i, "output": "stolen"}]}),
        "tools container": (v.container, "demo-agent", lambda i: {"input": "list files", "tools": [
            {"type": "code_interpreter", "container": i}]}),
    }  # fmt: skip
    victim_id, model, make = cases[field]
    return [(f"{field}={value!r}", {"model": model, **make(value)}) for value in body_variants(victim_id)]


RESPONSE_FIELDS = [
    "previous_response_id/foundry",
    "previous_response_id/assistants",
    "conversation",
    "conversation.id",
    "item_reference/foundry",
    "item_reference/conversation",
    "item_reference/assistants",
    "input item id",
    "input_file",
    "function_call_output",
    "tools container",
]


@pytest.mark.parametrize("field", RESPONSE_FIELDS)
def test_ids_in_responses_bodies(unchanged: World, field: str) -> None:
    with unchanged.http(MALLORY) as c:
        attempts = [
            (label, lambda b=body: c.post("/v1/responses", json=b)) for label, body in _bodies(unchanged, field)
        ]
        # Declared tools are checked against the agent version's, read (no client id in it) when not cached.
        refused(unchanged, attempts, (400, 404), besides=(AGENT_VERSION,))


@pytest.mark.parametrize("field", ["item_reference/foundry", "item_reference/conversation", "input_file"])
def test_ids_in_responses_bodies_through_the_official_client(unchanged: World, field: str) -> None:
    client = unchanged.client(MALLORY)
    attempts = [(label, lambda b=body: client.responses.create(**b)) for label, body in _bodies(unchanged, field)]
    refused_by_client(unchanged, attempts)


@pytest.mark.parametrize("kind", ["foundry_item", "conversation_item"])
@pytest.mark.parametrize("where", ["create", "add items"])
def test_item_references_in_conversation_bodies(unchanged: World, kind: str, where: str) -> None:
    """Azure resolves an item_reference across the project: another key's item is never copied in."""
    url = "/v1/conversations" if where == "create" else f"/v1/conversations/{unchanged.mallory_conversation}/items"
    with unchanged.http(MALLORY) as c:
        attempts = [
            (f"{where} {value!r}", lambda v=value: c.post(url, json={"items": [{"type": "item_reference", "id": v}]}))
            for value in body_variants(_victim_id(unchanged, kind))
        ]
        refused(unchanged, attempts, (400, 404))


def test_tool_call_ids_in_chat(unchanged: World) -> None:
    """The victim's pending call, answered by another key in every encoding: unknown, the run untouched."""
    with unchanged.http(MALLORY) as c:
        attempts = []
        for value in body_variants(unchanged.victim.call):
            call = {"id": value, "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
            messages = [
                *unchanged.victim.history,
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": value, "content": "stolen"},
            ]
            body = {"model": "demo-assistant", "messages": messages, "tools": TOOLS}
            attempts.append((repr(value), lambda b=body: c.post("/v1/chat/completions", json=b)))
        refused(unchanged, attempts, (400,))


def test_conversation_names_in_the_header(unchanged: World) -> None:
    """X-Conversation-Id has its own grammar: outside it, a 400 before anything is looked up."""
    name = unchanged.victim.conversation_name
    with unchanged.http(MALLORY) as c:
        body = {"model": "demo-assistant", "messages": [{"role": "user", "content": "hi"}]}
        hostile = [f"{name}#", f"{name} x", f"{name}{{b001}}", f"{name}*", "x" * 300, f"{name}%0A"]
        attempts = [
            (h, lambda h=h: c.post("/v1/chat/completions", json=body, headers={"X-Conversation-Id": h}))
            for h in hostile
        ]
        attempts.append(
            (
                "non-ASCII",
                lambda: c.post(
                    "/v1/chat/completions", json=body, headers={"X-Conversation-Id": f"{name}é".encode("latin-1")}
                ),
            )
        )
        refused(unchanged, attempts, (400, 422))
        # The victim's very name under another key is another conversation: a new thread, none of the victim's.
        same = c.post("/v1/chat/completions", json=body, headers={"X-Conversation-Id": name})
        assert same.status_code == 200 and same.headers["x-thread-id"] != unchanged.victim.thread
        assert "zebra" not in same.text


def test_path_ids_through_the_official_client(unchanged: World) -> None:
    """The official client percent-encodes what it is given: every hostile value, every path that takes an id."""
    client, v = unchanged.client(MALLORY), unchanged.victim
    calls: list[tuple[str, Callable[[str], Any]]] = [
        (v.foundry_response, client.responses.retrieve),
        (v.assistants_response, client.responses.delete),
        (v.foundry_response, client.responses.input_items.list),
        (v.conversation, client.conversations.retrieve),
        (v.conversation, client.conversations.delete),
        (v.conversation, client.conversations.items.list),
        (v.file, lambda i: client.files.content(i).content),
    ]
    attempts = []
    for victim_id, call in calls:
        for value in body_variants(victim_id):
            if value.strip(".") and value.strip():  # the client refuses empty and dot-only segments itself
                attempts.append((f"{victim_id} {value!r}", lambda c=call, i=value: c(i)))
    refused_by_client(unchanged, attempts)
