"""Carrying live conversations from an Assistants agent to Foundry v2: seeded on an Assistants route, the
route flipped to a v2 agent with `migrate_from`, half carried by `agent-bridge migrate`, the rest lazily,
every one continued through the official `openai` client unchanged."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from app.agent_migration import migrate_agent
from app.cli import main as cli
from app.errors import ConfigError
from app.main import create_app
from app.settings import load_settings
from tests.support.bridge import ENTRA, Bridge, managed_identity, running_bridge
from tests.support.leftovers import locks, unrecorded, upstream_threads, wait_for
from tests.support.servers import ServerThread

ROOT = Path(__file__).resolve().parents[2]
ALICE = {"name": "alice", "key": "alice-key-0123456789"}
BOB = {"name": "bob", "key": "bob-key-0123456789ab"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _routes(emulator_url: str, *, flipped: bool) -> dict[str, Any]:
    project = f"{emulator_url}/api/projects/demo"
    if not flipped:
        return {"helper": {"endpoint": project, "assistant_id": "asst_demo", "auth": ENTRA}}
    return {
        "helper": {
            "endpoint": project,
            "agent": {"name": "helper-agent"},
            "auth": ENTRA,
            "migrate_from": {"assistant_id": "asst_demo", "keep_source": "3s"},
        }
    }


def _client(bridge: Bridge, key: dict[str, str], conversation: str | None = None) -> openai.OpenAI:
    headers = {"X-Conversation-Id": conversation} if conversation else None
    return bridge.client(api_key=key["key"], default_headers=headers)


def _chat(client: openai.OpenAI, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    return client.chat.completions.create(model="helper", messages=messages, **kwargs).choices[0].message  # type: ignore[arg-type]


def _items(bridge: Bridge, conversation: str) -> list[dict[str, Any]]:
    client = bridge.state.components.foundry_clients["helper"]
    page = bridge.server.call(
        client.conversation_request("GET", conversation, "/items", params={"limit": "100", "order": "asc"})
    )
    items: list[dict[str, Any]] = page["data"]
    return items


def _texts(items: list[dict[str, Any]]) -> list[str]:
    out = []
    for item in items:
        if item["type"] == "message":
            out.append("".join(p.get("text", "") for p in item["content"]))
        elif item["type"] == "function_call":
            out.append(f"call {item['name']} {item['arguments']}")
        elif item["type"] == "function_call_output":
            out.append(f"output {item['output']}")
    return out


def _carried(bridge: Bridge, thread_id: str) -> str:
    record = bridge.server.call(bridge.state.components.carry_store.carried(thread_id))
    assert record is not None, f"{thread_id} was not carried"
    return str(record.conversation_id)


def _migrate(config: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    code = cli(["migrate", "--route", "helper", "--config", str(config), "--yes", "--json", *extra])
    out = capsys.readouterr().out
    assert code == 0, out
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.usefixtures("process_identity")
def test_conversations_of_every_kind_are_carried_and_continue_unchanged(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = [ALICE, BOB]
    threads: dict[str, str] = {}  # kind -> thread id
    # -- seeded on the Assistants route ----------------------------------------------------------------
    with running_bridge(
        emulator.url, redis_url, redis_prefix, routes=_routes(emulator.url, flipped=False), keys=keys
    ) as a:
        half = _client(a, ALICE, "half")
        for n in range(12):  # 24 messages: more than one batch of 20 items
            _chat(half, [{"role": "user", "content": f"half {n}"}])
        history = [{"role": "user", "content": "history one"}]
        history.append({"role": "assistant", "content": _chat(_client(a, ALICE), history).content})
        history.append({"role": "user", "content": "history two"})
        history.append({"role": "assistant", "content": _chat(_client(a, ALICE), history).content})
        tool = _client(a, ALICE, "tool")
        asked = _chat(tool, [{"role": "user", "content": '/tool get_weather {"city": "Paris"}'}], tools=[WEATHER])
        call = asked.tool_calls[0]
        answered = _chat(
            tool,
            [
                {"role": "user", "content": '/tool get_weather {"city": "Paris"}'},
                {"role": "assistant", "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
            ],
            tools=[WEATHER],
        )
        assert answered.content == "Tool get_weather returned: sunny"
        r1 = _client(a, ALICE).responses.create(model="helper", input="chain one")
        r2 = _client(a, ALICE).responses.create(model="helper", input="chain two", previous_response_id=r1.id)
        _chat(_client(a, ALICE, "shared"), [{"role": "user", "content": "alice's secret"}])
        _chat(_client(a, BOB, "shared"), [{"role": "user", "content": "bob's secret"}])
        waiting = _client(a, BOB, "waiting")
        pending = _chat(waiting, [{"role": "user", "content": '/tool get_weather {"city": "Oslo"}'}], tools=[WEATHER])
        flat = {"type": "function", **{k: v for k, v in WEATHER["function"].items()}}
        asked_r = _client(a, BOB).responses.create(
            model="helper", input='/tool get_weather {"city": "Rome"}', tools=[flat]
        )  # type: ignore[list-item]
        call_r = next(o for o in asked_r.output if o.type == "function_call")
        for thread in a.emulator_threads():
            first = thread["messages"][0]["text"] if thread["messages"] else ""
            threads[first] = thread["id"]
    assert len(threads) == 8, threads
    assert unrecorded(emulator.url, redis_url, redis_prefix) == []

    # -- flipped to a v2 agent with migrate_from -------------------------------------------------------
    config = tmp_path / "config.yaml"
    flipped = _routes(emulator.url, flipped=True)
    config.write_text(
        yaml.safe_dump(
            {
                "redis_url": redis_url,
                "redis_prefix": redis_prefix,
                "routes": flipped,
                "keys": keys,
                "limits": {"lock_lease": "1s"},
            }
        )
    )
    with running_bridge(
        emulator.url, redis_url, redis_prefix, routes=flipped, keys=keys, threads={"sweep_interval": "0.3s"}
    ) as b:
        capsys.readouterr()
        assert cli(["migrate-agent", "--route", "helper", "--config", str(config)]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["created"] is True
        assert [t["name"] for t in report["definition"]["tools"]] == ["get_weather"]  # sent by clients, recorded

        # `kill -9` of a migration stuck after Azure made the conversation (its first add held, then refused):
        # the next run completes that conversation after the items it holds, instead of making another.
        half_thread = threads["half 0"]
        b.fault(path=r"/conversations/conv_[^/]+/items$", method="POST", status=503, latency_ms=30_000, count=1)
        command = [sys.executable, "-m", "app.cli", "migrate", "--route", "helper", "--config", str(config)]
        with subprocess.Popen([*command, "--yes", "--limit", "1"], cwd=ROOT, stdout=subprocess.DEVNULL) as doomed:
            progress = b.state.components.carry_store.progress
            wait_for(lambda: b.server.call(progress(half_thread)) is not None, timeout=20, what="a conversation begun")
            doomed.send_signal(signal.SIGKILL)
        started = b.server.call(progress(half_thread))
        assert len(_items(b, started)) == 20 and unrecorded(emulator.url, redis_url, redis_prefix) == []
        wait_for(lambda: locks(redis_url, redis_prefix) == {}, timeout=5, what="the dead process's lease expired")

        plan = _migrate(config, "--dry-run", capsys=capsys)["plan"]
        assert plan["conversations"] == 8
        assert plan["owners"]["alice"]["conversations"] == 5 and plan["owners"]["bob"]["waiting"] == 2
        done = _migrate(config, "--limit", "4", capsys=capsys)["summary"]
        assert (done["carried"], done["resumed"], done["failed"]) == (4, 1, {})
        assert _carried(b, half_thread) == started  # completed, not duplicated
        assert len(_items(b, started)) == 24

        # Every conversation continues through the unchanged client (the rest carried lazily).
        half = _client(b, ALICE, "half")
        assert _chat(half, [{"role": "user", "content": "half after"}]).content == "Echo: half after"
        history.append({"role": "user", "content": "history three"})
        assert _chat(_client(b, ALICE), history).content == "Echo: history three"
        tool = _client(b, ALICE, "tool")
        assert _chat(tool, [{"role": "user", "content": "thanks"}], tools=[WEATHER]).content == "Echo: thanks"
        r3 = _client(b, ALICE).responses.create(model="helper", input="chain three", previous_response_id=r2.id)
        assert r3.output_text == "Echo: chain three"
        r4 = _client(b, ALICE).responses.create(model="helper", input="chain four", previous_response_id=r3.id)
        assert r4.output_text == "Echo: chain four"
        with pytest.raises(openai.NotFoundError):  # another owner's response id
            _client(b, BOB).responses.create(model="helper", input="steal", previous_response_id=r2.id)
        assert _chat(_client(b, ALICE, "shared"), [{"role": "user", "content": "a2"}]).content == "Echo: a2"
        assert _chat(_client(b, BOB, "shared"), [{"role": "user", "content": "b2"}]).content == "Echo: b2"
        # The run that waited for tool outputs finishes on the Assistants side, then the conversation moves.
        waiting = _client(b, BOB, "waiting")
        out = [
            {"role": "assistant", "tool_calls": [pending.tool_calls[0].model_dump()]},
            {"role": "tool", "tool_call_id": pending.tool_calls[0].id, "content": "rainy"},
        ]
        assert _chat(waiting, out, tools=[WEATHER]).content == "Tool get_weather returned: rainy"
        assert _chat(waiting, [{"role": "user", "content": "w2"}], tools=[WEATHER]).content == "Echo: w2"

        # The same through the Responses API: the outputs finish the run on Assistants, the next turn moves it.
        answered_r = _client(b, BOB).responses.create(
            model="helper",
            previous_response_id=asked_r.id,
            input=[{"type": "function_call_output", "call_id": call_r.call_id, "output": "warm"}],  # type: ignore[union-attr]
            tools=[flat],  # type: ignore[list-item]
        )
        assert answered_r.output_text == "Tool get_weather returned: warm"
        after_r = _client(b, BOB).responses.create(model="helper", input="r2", previous_response_id=answered_r.id)
        assert after_r.output_text == "Echo: r2"
        rome = _texts(_items(b, _carried(b, threads['/tool get_weather {"city": "Rome"}'])))
        assert rome[1:] == [
            'call get_weather {"city": "Rome"}',
            "output warm",
            "Tool get_weather returned: warm",
            "r2",
            "Echo: r2",
        ]
        # The v2 conversation behind each holds every earlier turn, and only its owner's.
        seen = {kind: _texts(_items(b, _carried(b, thread))) for kind, thread in threads.items()}
        assert seen["half 0"][:2] == ["half 0", "Echo: half 0"] and seen["half 0"][-2:] == [
            "half after",
            "Echo: half after",
        ]
        assert len(seen["half 0"]) == 26
        assert seen["history one"] == [
            "history one", "Echo: history one", "history two", "Echo: history two", "history three", "Echo: history three"
        ]  # fmt: skip
        tool_seen = seen['/tool get_weather {"city": "Paris"}']
        assert tool_seen[1:5] == [
            'call get_weather {"city": "Paris"}',
            "output sunny",
            "Tool get_weather returned: sunny",
            "thanks",
        ]
        assert seen["chain one"] == [
            "chain one", "Echo: chain one", "chain two", "Echo: chain two", "chain three", "Echo: chain three",
            "chain four", "Echo: chain four",
        ]  # fmt: skip
        assert seen["alice's secret"] == ["alice's secret", "Echo: alice's secret", "a2", "Echo: a2"]
        assert seen["bob's secret"] == ["bob's secret", "Echo: bob's secret", "b2", "Echo: b2"]
        oslo = seen['/tool get_weather {"city": "Oslo"}']
        assert oslo[1:] == [
            'call get_weather {"city": "Oslo"}',
            "output rainy",
            "Tool get_weather returned: rainy",
            "w2",
            "Echo: w2",
        ]

        # Each owner reaches only its own conversations.
        alice_conversation = _carried(b, threads["alice's secret"])
        with b.http() as http:
            mine = http.get(
                f"/v1/conversations/{alice_conversation}", headers={"Authorization": f"Bearer {ALICE['key']}"}
            )
            theirs = http.get(
                f"/v1/conversations/{alice_conversation}", headers={"Authorization": f"Bearer {BOB['key']}"}
            )
        assert (mine.status_code, theirs.status_code) == (200, 404)

        # A second bulk run carries nothing; no thread was ever unrecorded; after keep_source the sources go.
        again = _migrate(config, capsys=capsys)
        assert again["plan"]["conversations"] == 0 and "summary" not in again
        assert unrecorded(emulator.url, redis_url, redis_prefix) == []
        wait_for(lambda: all(t["deleted"] for t in upstream_threads(emulator.url)), timeout=15, what="sources deleted")
        assert unrecorded(emulator.url, redis_url, redis_prefix) == []
        # Still continuing after the sources are gone.
        assert _chat(_client(b, BOB, "shared"), [{"role": "user", "content": "b3"}]).content == "Echo: b3"
        with httpx.Client(base_url=b.url) as c:
            assert "agent_bridge_conversations_carried_total" in c.get("/metrics").text


OPS = {"name": "ops", "key": "ops-key-0123456789ab", "admin": True}


def _until_done(http: httpx.Client, migration_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def done() -> bool:
        found.update(http.get(f"/admin/migrations/{migration_id}").json())
        return found["state"] != "running"

    wait_for(done, timeout=15, what="migration done")
    return found


def test_the_admin_api_migrates_waiting_out_429s_and_the_route_cannot_flip_back(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    keys = [ALICE, OPS]
    with running_bridge(
        emulator.url, redis_url, redis_prefix, routes=_routes(emulator.url, flipped=False), keys=keys
    ) as a:
        for name in ("one", "two"):
            _chat(_client(a, ALICE, name), [{"role": "user", "content": f"{name} before"}])
    flipped = _routes(emulator.url, flipped=True)
    fast = {"sweep_interval": "200ms"}
    with running_bridge(emulator.url, redis_url, redis_prefix, routes=flipped, keys=keys, threads=fast) as b:
        admin = {"Authorization": f"Bearer {OPS['key']}"}
        with httpx.Client(base_url=b.url, headers=admin, timeout=30) as http:
            refused = http.post(
                "/admin/migrations", json={"route": "helper"}, headers={"Authorization": f"Bearer {ALICE['key']}"}
            )
            assert refused.status_code in (401, 403)
            started = http.post("/admin/migrations", json={"route": "helper", "dry_run": True})
            assert started.status_code == 202, started.text
            plan = _until_done(http, started.json()["id"])["plan"]
            assert plan["conversations"] == 2 and plan["owners"]["alice"]["messages"] == 4
            # Azure throttles the creates (longer than the upstream client's own retries wait): waited out.
            b.fault(path=r"/conversations$", method="POST", status=429, count=3, retry_after="1")
            # Two migrations at once (as two replicas would run them): each thread is carried once.
            ids = [http.post("/admin/migrations", json={"route": "helper"}).json()["id"] for _ in range(2)]
            statuses = [_until_done(http, migration_id) for migration_id in ids]
            assert sum(s["carried"] for s in statuses) == 2 and [s["failed"] for s in statuses] == [{}, {}]
            assert statuses[1]["route_totals"]["carried"] == 2
            with b.emulator() as e:
                assert [f["remaining"] for f in e.get("/_emulator/faults").json()["faults"]] == [0]
            # Never early: sweeps run, and the sources stay until keep_source (3 s) has passed.
            sweeps = b.server.call(b.state.janitor.counters_snapshot())["sweeps"]
            wait_for(lambda: b.server.call(b.state.janitor.counters_snapshot())["sweeps"] >= sweeps + 2, what="sweeps")
            assert [t["deleted"] for t in upstream_threads(emulator.url)] == [False, False]
            wait_for(lambda: all(t["deleted"] for t in upstream_threads(emulator.url)), timeout=15, what="deleted")
            again = _until_done(http, http.post("/admin/migrations", json={"route": "helper"}).json()["id"])
            assert (again["total"], again["carried"]) == (0, 0)
            unknown = http.post("/admin/migrations", json={"route": "nope"})
            assert unknown.status_code == 400 and "migrate_from" in unknown.json()["error"]["message"]
        made = b.server.call(migrate_agent(b.state.components, "helper", dry_run=False))
        assert made["created"] and made["definition"]["model"] == "gpt-4o"
        assert _chat(_client(b, ALICE, "one"), [{"role": "user", "content": "one after"}]).content == "Echo: one after"
    # Back on Assistants, the route would lose the turns taken on v2: refused at start-up, saying what to do.
    settings = load_settings(
        None,
        env={},
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        routes=_routes(emulator.url, flipped=False),
        keys=keys,
    )
    app = create_app(settings)

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    with managed_identity(emulator.url), pytest.raises(ConfigError, match="were carried to Foundry v2"):
        asyncio.run(start())
