"""One bridge (three keys), the session's emulator and a Redis prefix shared by a whole security module,
with a victim's objects of every id kind seeded once; helpers that drive a hostile key and check that
nothing reached Azure and nothing of the victim's came back."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.support.bridge import ENTRA, Bridge, routes_for, running_bridge
from tests.support.servers import ServerThread

VICTIM = "key-of-the-victim-team-0123"
MALLORY = "key-of-the-hostile-team-0123"
ADMIN = "key-of-the-operators-0123456"
KEYS = [
    {"name": "victim", "key": VICTIM},
    {"name": "mallory", "key": MALLORY},
    {"name": "ops", "key": ADMIN, "admin": True},
]
SECRET = "zebra7f3a"
"""In every piece of the victim's content: no answer to the hostile key may carry it."""
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@dataclass
class Victim:
    """The victim's objects, one of each id kind."""

    foundry_response: str = ""
    foundry_item: str = ""
    assistants_response: str = ""
    assistants_item: str = ""
    conversation: str = ""
    conversation_item: str = ""
    file: str = ""
    container: str = ""
    call: str = ""
    thread: str = ""
    conversation_name: str = "victim-chat"
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class World:
    bridge: Bridge
    victim: Victim
    redis: redis.Redis
    prefix: str
    mallory_conversation: str = ""

    def http(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.bridge.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def client(self, key: str) -> openai.OpenAI:
        return self.bridge.client(api_key=key)

    def upstream_requests(self, *, besides: tuple[str, ...] = ()) -> int:
        """Requests the emulator has seen, but for the operations `besides` (ones that carry no client id)."""
        with self.bridge.emulator() as c:
            stats = c.get("/_emulator/stats").json()
        return int(stats["total"]) - sum(n for op, n in stats["by_operation"].items() if op in besides)

    def snapshot(self) -> dict[str, Any]:
        """Everything of the victim's, read back as the victim."""
        v = self.victim
        with self.http(VICTIM) as c:
            items = c.get(f"/v1/conversations/{v.conversation}/items", params={"limit": 100}).json()
            return {
                "foundry": c.get(f"/v1/responses/{v.foundry_response}").json()["output"],
                "assistants": c.get(f"/v1/responses/{v.assistants_response}").json()["output"],
                "conversation": c.get(f"/v1/conversations/{v.conversation}").json()["id"],
                "items": [(i["id"], i.get("content")) for i in items["data"]],
                "file": c.get(f"/v1/files/{v.file}/content").content,
                "call": bool(self.redis.exists(f"{self.prefix}call:{v.call}")),
                "thread": [m["text"] for m in _thread(self.bridge, v.thread)["messages"]],
            }


def _thread(bridge: Bridge, thread_id: str) -> dict[str, Any]:
    return next(t for t in bridge.emulator_threads() if t["id"] == thread_id)


def _seed(world: World) -> None:
    v = world.victim
    client = world.client(VICTIM)
    foundry = client.responses.create(model="demo-agent", input=f"foundry {SECRET}")
    v.foundry_response, v.foundry_item = foundry.id, foundry.output[-1].id or ""
    assistants = client.responses.create(model="demo-assistant", input=f"assistants {SECRET}")
    v.assistants_response, v.assistants_item = assistants.id, assistants.output[-1].id or ""
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": f"conversation {SECRET}"}]
    )
    v.conversation = conversation.id
    v.conversation_item = client.conversations.items.list(conversation.id).data[0].id
    code = client.responses.create(model="code-agent", input=f"/file {SECRET}.csv").model_dump(mode="json")
    note = code["output"][-1]["content"][0]["annotations"][0]
    v.file, v.container = note["file_id"], note["container_id"]
    v.history = [{"role": "user", "content": f'/tool lookup {{"q": "{SECRET}"}}'}]
    raw = client.chat.completions.with_raw_response.create(
        model="demo-assistant",
        messages=v.history,
        tools=TOOLS,
        extra_headers={"X-Conversation-Id": v.conversation_name},
    )
    v.thread = raw.headers["x-thread-id"]
    v.call = raw.parse().choices[0].message.tool_calls[0].id  # type: ignore[index]
    world.mallory_conversation = world.client(MALLORY).conversations.create().id
    assert SECRET in str(world.snapshot())


@pytest.fixture(scope="module")
def world(emulator_server: ServerThread, redis_url: str) -> Iterator[World]:
    """Module-scoped: the emulator is reset once, the victim seeded once, for every test of the module."""
    with httpx.Client(base_url=emulator_server.url) as c:
        c.post("/_emulator/reset").raise_for_status()
        c.post("/_emulator/config", json={"latency_ms": 0, "token_delay_ms": 0, "run_expiry_s": 600}).raise_for_status()
    prefix = f"abtest:{uuid.uuid4().hex[:12]}:"
    project = f"{emulator_server.url}/api/projects/demo"
    routes = routes_for(
        emulator_server.url,
        **{"code-agent": {"endpoint": project, "agent": {"name": "code-agent", "version": "1"}, "auth": ENTRA}},
    )
    client = redis.Redis.from_url(redis_url)
    try:
        with running_bridge(
            emulator_server.url, redis_url, prefix, routes=routes, keys=KEYS, threads={"janitor": False}
        ) as bridge:
            built = World(bridge=bridge, victim=Victim(), redis=client, prefix=prefix)
            _seed(built)
            yield built
    finally:
        doomed = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if doomed:
            client.delete(*doomed)
        client.close()


@pytest.fixture
def unchanged(world: World) -> Iterator[World]:
    """The test's world; afterwards every victim object reads back exactly as before."""
    before = world.snapshot()
    yield world
    assert world.snapshot() == before


Send = Callable[[], httpx.Response]


def refused(
    world: World, attempts: list[tuple[str, Send]], statuses: tuple[int, ...], *, besides: tuple[str, ...] = ()
) -> None:
    """Each attempt answers one of `statuses` (never a 5xx), carries none of the victim's content, and
    none of them made the emulator see a request (a refused id never reaches Azure), but for the
    operations `besides`, which carry no client id."""
    before = world.upstream_requests(besides=besides)
    problems = []
    for label, send in attempts:
        answer = send()
        if answer.status_code not in statuses or SECRET in answer.text:
            problems.append(f"{label}: {answer.status_code} {answer.text[:200]}")
    assert problems == []
    assert world.upstream_requests(besides=besides) == before, "a refused id reached the emulator"


def refused_by_client(world: World, attempts: list[tuple[str, Callable[[], Any]]]) -> None:
    """The same through the official client: each call raises its 400/403/404 (a 405 where a decoded `/`
    reached another route), never a 5xx, never the secret, and nothing reaches the emulator."""
    before = world.upstream_requests()
    problems = []
    for label, call in attempts:
        try:
            result = call()
        except (openai.BadRequestError, openai.NotFoundError, openai.PermissionDeniedError) as exc:
            if SECRET in str(exc.body):
                problems.append(f"{label}: the error carries the secret")
        except openai.APIStatusError as exc:
            # 405: the server decodes `%2F` before routing, so `conv_A%2Fitems` may name another route.
            if exc.status_code != 405 or SECRET in str(exc.body):
                problems.append(f"{label}: {exc.status_code}")
        else:
            problems.append(f"{label}: answered {str(result)[:200]}")
    assert problems == []
    assert world.upstream_requests() == before, "a refused id reached the emulator"


def path_variants(victim_id: str) -> list[str]:
    """The victim's id as a hostile path segment: encoded delimiters, dot segments, spaces, CR/LF,
    overlong, non-ASCII, NUL."""
    v = victim_id
    return [
        v,
        f"{v}%23",
        f"{v}%3F",
        f"{v}%3Fmodel=demo-agent",
        f"{v}%23x",
        f"{v}%2F",
        f"{v}%2F..%2F{v}",
        "%2e%2e",
        f"%2e%2e%2F{v}",
        f"{v}%2F%2e%2e",
        f"{v}%20",
        f"%20{v}",
        f"{v}%0D%0A",
        f"{v}%0AX-Injected:%201",
        f"{v}{'x' * 300}",
        f"{v}%C3%A9",
        f"%E2%80%AE{v}",
        f"{v}%00",
        f"{v}.",
        f"{v}%25",
    ]


def body_variants(victim_id: str) -> list[str]:
    """The victim's id as a hostile JSON string."""
    v = victim_id
    return [v, f"{v}#", f"{v}?", f"{v}?x=1", f"{v}/", f"{v}/items", f"../{v}", "..", f"{v} ", f" {v}",
            f"{v}\r\n", f"{v}\n", "x" * 300, f"{v}é", f"\u202e{v}", f"{v}\x00", f"{v}%23", f"{v}%2F..", ""]  # fmt: skip
