"""Two replicas on a real 3-master Redis Cluster (`redis+cluster://`): the same flows as on one Redis,
the janitor deleting each thread exactly once, keys on all three nodes; and the janitor's pace."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import redis as redis_sync

from tests.support.bridge import Bridge, running_bridge
from tests.support.chat import answered, turn
from tests.support.servers import ServerThread

USER = "team-key-0123456789abcdef"
ADMIN = "ops-key-0123456789abcdef"
KEYS = [{"name": "team", "key": USER}, {"name": "ops", "key": ADMIN, "admin": True}]
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
"""The admin API needs an admin key: open mode never grants it."""


def _wait(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)


def _keys_per_node(cluster_url: str, prefix: str) -> dict[int, int]:
    port = int(cluster_url.rsplit(":", 1)[1])
    with redis_sync.Redis(port=port, decode_responses=True) as first:
        nodes = first.execute_command("CLUSTER", "NODES")
    primaries = [int(line.split()[1].split(":")[1].split("@")[0]) for line in nodes.splitlines() if "master" in line]
    counts: dict[int, int] = {}
    for node_port in primaries:
        with redis_sync.Redis(port=node_port, decode_responses=True) as node:
            counts[node_port] = sum(1 for _ in node.scan_iter(match=f"{prefix}*", count=500))
    return counts


def _thread_of(bridge: Bridge, messages: list[dict[str, Any]], **kw: Any) -> tuple[str, str]:
    raw = bridge.client(api_key=USER).chat.completions.with_raw_response.create(
        model="demo-assistant", messages=messages, **kw
    )
    return raw.parse().choices[0].message.content or "", str(raw.headers["x-thread-id"])


def test_two_replicas_on_a_cluster_pass_the_end_to_end_flows(
    emulator: ServerThread, redis_cluster_url: str, redis_prefix: str
) -> None:
    janitor = {"ttl": "6s", "sweep_interval": "300ms", "retry_base": "300ms"}
    with (
        running_bridge(emulator.url, redis_cluster_url, redis_prefix, threads=janitor, keys=KEYS) as a,
        running_bridge(emulator.url, redis_cluster_url, redis_prefix, threads=janitor, keys=KEYS) as b,
    ):
        assert a.state.store.cluster and b.state.store.cluster
        # Fingerprint chat: a client resends its history; the next turn on the other replica continues.
        history: list[dict[str, Any]] = [{"role": "user", "content": "hello cluster"}]
        reply, t1 = _thread_of(a, history)
        history += [{"role": "assistant", "content": reply}, {"role": "user", "content": "again"}]
        reply2, t2 = _thread_of(b, history)
        assert (reply, reply2, t2) == ("Echo: hello cluster", "Echo: again", t1)

        # X-Conversation-Id with only the newest message, alternating replicas; streamed on b.
        headers = {"X-Conversation-Id": "ticket-7"}
        _, c1 = _thread_of(a, [{"role": "user", "content": "one"}], extra_headers=headers)
        streamed = turn(
            b.client(api_key=USER),
            stream=True,
            model="demo-assistant",
            messages=[{"role": "user", "content": "two"}],
            extra_headers=headers,
        )
        assert streamed.text == "Echo: two"
        _, c3 = _thread_of(a, [{"role": "user", "content": "three"}], extra_headers=headers)
        assert c3 == c1

        # Tool calls asked on a, answered on b.
        tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}]
        messages: list[dict[str, Any]] = [{"role": "user", "content": '/tool add {"a": 1, "b": 2}'}]
        first = turn(a.client(api_key=USER), stream=False, model="demo-assistant", messages=messages, tools=tools)
        assert first.finish_reason == "tool_calls"
        messages += answered(first, "3")
        final = turn(b.client(api_key=USER), stream=True, model="demo-assistant", messages=messages, tools=tools)
        assert final.text == "Tool add returned: 3"

        # previous_response_id across replicas.
        r1 = a.client(api_key=USER).responses.create(model="demo-assistant", input="remember me")
        r2 = b.client(api_key=USER).responses.create(
            model="demo-assistant", input="and now", previous_response_id=r1.id
        )
        assert r2.output_text == "Echo: and now"
        assert b.client(api_key=USER).responses.retrieve(r1.id).id == r1.id

        # Admin list / show / delete, from either replica.
        with httpx.Client(base_url=b.url, timeout=30, headers=ADMIN_AUTH) as c:
            listed: list[str] = []
            after = None
            while True:
                page = c.get("/admin/threads", params={"limit": 2, **({"after": after} if after else {})}).json()
                listed += [t["thread_id"] for t in page["data"]]
                after = page["next"]
                if after is None:
                    break
            assert t1 in listed and c1 in listed and len(listed) == len(set(listed))
            assert c.get(f"/admin/threads/{t1}").json()["turns"] == 2
            assert c.delete(f"/admin/threads/{t1}").json()["deleted"] is True
        with httpx.Client(base_url=a.url, timeout=30, headers=ADMIN_AUTH) as c:
            assert c.get(f"/admin/threads/{t1}").status_code == 404
            assert c.get("/readyz").json()["ready"] is True

        # Where a thread's keys land depends on its (random) id: a handful of conversations may leave a
        # node empty by chance, so open more, alternating replicas, until every node holds some; the bound
        # makes a layout that piles everything on a few slots fail.
        spread = _keys_per_node(redis_cluster_url, redis_prefix)
        for n in range(24):
            if len(spread) == 3 and all(count > 0 for count in spread.values()):
                break
            _thread_of((a, b)[n % 2], [{"role": "user", "content": f"spread {n}"}])
            spread = _keys_per_node(redis_cluster_url, redis_prefix)
        assert len(spread) == 3 and all(count > 0 for count in spread.values()), spread

        # The janitors of both replicas delete every remaining thread exactly once.
        created = {t["id"] for t in a.emulator_threads()}
        _wait(lambda: all(t["deleted"] for t in a.emulator_threads()), timeout=60)
        deletes = [r["path"].rsplit("/", 1)[-1] for r in a.emulator_requests() if r["method"] == "DELETE"]
        assert sorted(deletes) == sorted(created)
        _wait(lambda: a.server.call(a.state.store.count_threads()) == 0, timeout=10)


@pytest.mark.parametrize("replicas", [2])
def test_the_janitors_delete_at_least_fifty_threads_a_second_at_100ms_per_delete(
    emulator: ServerThread, redis_cluster_url: str, redis_prefix: str, replicas: int
) -> None:
    """The issue's target: 50 deletions per second for the fleet when an Azure DELETE takes 100 ms."""
    count = 300
    quiet = {"ttl": "1h", "sweep_interval": "1h", "janitor": False}
    with running_bridge(emulator.url, redis_cluster_url, redis_prefix, threads=quiet) as seeder:
        client = seeder.client()
        from app.core.records import ThreadRecord

        with seeder.emulator() as c:
            ids = [
                c.post(
                    "/openai/threads", params={"api-version": "2024-05-01-preview"}, headers={"api-key": "k"}, json={}
                ).json()["id"]
                for _ in range(count)
            ]
        for thread_id in ids:
            seeder.server.call(
                seeder.state.store.record_thread(
                    ThreadRecord(thread_id, "demo-assistant", "assistants", "anonymous", 1000.0, 1000.0)
                )
            )
        client.close()
    with seeder.emulator() as c:
        c.post("/_emulator/config", json={"latency_ms": 100}).raise_for_status()
    janitor = {"ttl": "60s", "sweep_interval": "100ms"}
    bridges = [running_bridge(emulator.url, redis_cluster_url, redis_prefix, threads=janitor) for _ in range(replicas)]
    running = [cm.__enter__() for cm in bridges]
    try:
        # Timed from the first deletion (the replicas' start-up is not the janitor's pace) to the last.
        _wait(lambda: running[0].emulator_stats().get("DELETE /openai/threads/{thread_id}", 0) > 0, timeout=30)
        started = time.monotonic()
        _wait(lambda: running[0].server.call(running[0].state.store.count_threads()) == 0, timeout=60)
        elapsed = time.monotonic() - started
    finally:
        for cm in bridges:
            cm.__exit__(None, None, None)
    rate = count / elapsed
    print(f"janitor: {count} deletions at 100 ms each by {replicas} replicas in {elapsed:.2f} s = {rate:.0f}/s")
    deletes = [r for r in running[0].emulator_requests() if r["method"] == "DELETE"]
    assert len(deletes) == count  # each exactly once
    assert rate >= 50
