"""`python -m bench.carry`: conversations carried from Assistants to Foundry v2 per second, from one process.

The emulator runs as a process with 100 ms added to every Azure request (`/_emulator/config`
`latency_ms`, set after seeding); each conversation is a thread of 10 messages (5 runs, one of them
with a function call and its output). The bulk migration (`app.backends.migration.Migration`) carries
them `--concurrency` at a time through the bridge's own components (a real Redis: BENCH_REDIS_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from app.backends.migration import Migration
from app.core.records import ThreadRecord
from app.main import components
from app.settings import load_settings
from bench.processes import AGENT_BRIDGE, KEY, REDIS_URL, free_port, process

TURNS = 5
"""Runs per conversation: 10 messages."""


async def _finish(client: Any, thread_id: str, run: dict[str, Any]) -> None:
    deadline = time.monotonic() + 60
    while run["status"] not in ("completed", "failed", "cancelled", "expired", "incomplete"):
        if run["status"] == "requires_action":
            calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
            outputs = {"tool_outputs": [{"tool_call_id": c["id"], "output": "42"} for c in calls]}
            run = await client.submit_tool_outputs(thread_id, run["id"], outputs, deadline)
            continue
        await asyncio.sleep(0.005)
        run = await client.get_run(thread_id, run["id"], deadline)


async def _seed(built: Any, route: str, count: int) -> None:
    client = built.assistants_clients[route]
    tool = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
    slots = asyncio.Semaphore(32)

    async def one(n: int) -> None:
        async with slots:
            deadline = time.monotonic() + 60
            body = {"assistant_id": "asst_demo", "thread": {"messages": [{"role": "user", "content": f"c{n} t0"}]}}
            run = await client.create_thread_and_run(body, deadline)
            thread_id = run["thread_id"]
            now = time.time()
            await built.store.record_thread(ThreadRecord(thread_id, route, "assistants", f"owner{n % 10}", now, now))
            await _finish(client, thread_id, run)
            for turn in range(1, TURNS):
                text = '/tool lookup {"q": 1}' if turn == 1 else f"c{n} t{turn}"
                body = {"assistant_id": "asst_demo", "additional_messages": [{"role": "user", "content": text}]}
                if turn == 1:
                    body["tools"] = [tool]
                run = await client.create_run(thread_id, body, deadline)
                await _finish(client, thread_id, run)

    await asyncio.gather(*(one(n) for n in range(count)))


async def measure(emulator: str, *, count: int, concurrency: int, latency_ms: float) -> dict[str, Any]:
    route = {
        "endpoint": f"{emulator}/api/projects/demo",
        "agent": {"name": "demo-agent", "version": "1"},
        "auth": KEY,
        "migrate_from": {"assistant_id": "asst_demo", "endpoint": emulator},
    }
    settings = load_settings(
        None,
        env={},
        redis_url=REDIS_URL,
        redis_prefix=f"bench-carry:{time.time_ns()}:",
        routes={"carry": route},
        threads={"janitor": False},
    )
    async with components(settings) as built:
        await _seed(built, "carry", count)
        async with httpx.AsyncClient() as http:
            (await http.post(f"{emulator}/_emulator/config", json={"latency_ms": latency_ms})).raise_for_status()
            (await http.post(f"{emulator}/_emulator/stats/reset")).raise_for_status()
        migration = Migration(built.store, built.carrier, "carry")
        started = time.perf_counter()
        summary = await migration.run(concurrency=concurrency)
        elapsed = time.perf_counter() - started
        again = await migration.run(concurrency=concurrency)
        keys = [k async for k in built.store.redis.scan_iter(match=f"{settings.redis_prefix}*", count=1000)]
        for start in range(0, len(keys), 500):
            await built.store.redis.delete(*keys[start : start + 500])
    return {
        "conversations": count,
        "messages_each": 2 * TURNS,
        "latency_ms_per_request": latency_ms,
        "concurrency": concurrency,
        "carried": summary.carried,
        "failed": len(summary.failed),
        "upstream_requests": summary.requests,
        "seconds": round(elapsed, 3),
        "carried_per_s": round(summary.carried / elapsed, 1),
        "second_run_carried": again.carried,
    }


def run(*, count: int = 200, concurrency: int = 64, latency_ms: float = 100.0) -> dict[str, Any]:
    port = free_port()
    emulator = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="bench-carry-")) / "emulator.log"
    command = [*AGENT_BRIDGE, "emulator", "--port", str(port), "--accept-api-key-on-projects"]
    with process(command, f"{emulator}/_emulator/stats", log):
        return asyncio.run(measure(emulator, count=count, concurrency=concurrency, latency_ms=latency_ms))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    args = parser.parse_args()
    result = run(count=args.conversations, concurrency=args.concurrency, latency_ms=args.latency_ms)
    print(json.dumps(result, indent=2))
    print(f"carried {result['carried_per_s']} conversations/s (target >= 50) with {args.latency_ms:g} ms per request")


if __name__ == "__main__":
    main()
