"""The load generator, run as its own process: `python -m bench.load '<json spec>'` prints JSON results.

Every loop is bounded in request count and in time. Targets are loopback addresses only.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

API = {"api-version": "2024-05-01-preview"}
KEY = {"api-key": "bench"}


class Client:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        # aiohttp, not httpx: the load generator shares the machine's two cores with what it measures,
        # and httpx's pool costs ~10 ms of CPU per request at 64 concurrent connections (aiohttp: ~0.4).
        limit = int(spec.get("concurrency", 1)) + 8
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=120.0),
        )

    # -- through the bridge ---------------------------------------------------------------------

    async def bridge_chat(self, worker: int) -> Callable[[int], Awaitable[dict[str, Any]]]:
        url = f"{self.spec['bridge']}/v1/chat/completions"
        headers = {"X-Conversation-Id": f"bench-{uuid.uuid4().hex}"}
        model = self.spec.get("model", "demo-assistant")
        first = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
        async with self.http.post(url, json=first, headers=headers, raise_for_status=True) as response:
            await response.read()

        async def one(n: int) -> dict[str, Any]:
            body = {"model": model, "messages": [{"role": "user", "content": f"follow-up {n}"}]}
            async with self.http.post(url, json=body, headers=headers, raise_for_status=True) as response:
                await response.read()
            return {"overhead_ms": float(response.headers.get("x-agent-bridge-overhead-ms", "nan"))}

        return one

    async def bridge_responses(self, worker: int) -> Callable[[int], Awaitable[dict[str, Any]]]:
        url = f"{self.spec['bridge']}/v1/responses"

        async def one(n: int) -> dict[str, Any]:
            body = {"model": "demo-agent", "input": f"turn {n}"}
            async with self.http.post(url, json=body, raise_for_status=True) as response:
                await response.read()
            return {"overhead_ms": float(response.headers.get("x-agent-bridge-overhead-ms", "nan"))}

        return one

    async def bridge_stream(self, worker: int) -> Callable[[int], Awaitable[dict[str, Any]]]:
        url = f"{self.spec['bridge']}/v1/chat/completions"
        text = self.spec.get("text", "hello")

        async def one(n: int) -> dict[str, Any]:
            body = {"model": "demo-assistant", "stream": True, "messages": [{"role": "user", "content": text}]}
            started = time.perf_counter()
            first = None
            async with self.http.post(url, json=body) as response:
                if response.status >= 400:
                    raise RuntimeError(f"HTTP {response.status}: {(await response.read())[:300]!r}")
                async for line in response.content:
                    if first is None and b'"content":"E' in line:
                        first = time.perf_counter() - started
            return {"ttft_ms": (first or float("nan")) * 1000}

        return one

    # -- straight to the emulator (the baseline) ------------------------------------------------

    async def direct_chat(self, worker: int) -> Callable[[int], Awaitable[dict[str, Any]]]:
        emulator = self.spec["emulator"]
        body = {
            "assistant_id": "asst_demo",
            "stream": True,
            "thread": {"messages": [{"role": "user", "content": "hello"}]},
        }
        thread_id = ""
        async with self.http.post(f"{emulator}/openai/threads/runs", json=body, params=API, headers=KEY) as r:
            async for line in r.content:
                if not thread_id and line.startswith(b"data: {") and b'"object":"thread"' in line:
                    thread_id = json.loads(line[6:])["id"]

        async def one(n: int) -> dict[str, Any]:
            run = {
                "assistant_id": "asst_demo",
                "stream": True,
                "additional_messages": [{"role": "user", "content": f"follow-up {n}"}],
            }
            url = f"{emulator}/openai/threads/{thread_id}/runs"
            async with self.http.post(url, json=run, params=API, headers=KEY, raise_for_status=True) as response:
                while await response.content.readany():
                    pass
            return {}

        return one

    async def direct_stream(self, worker: int) -> Callable[[int], Awaitable[dict[str, Any]]]:
        emulator = self.spec["emulator"]
        text = self.spec.get("text", "hello")

        async def one(n: int) -> dict[str, Any]:
            body = {
                "assistant_id": "asst_demo",
                "stream": True,
                "thread": {"messages": [{"role": "user", "content": text}]},
            }
            started = time.perf_counter()
            first = None
            completed = None
            async with self.http.post(
                f"{emulator}/openai/threads/runs", json=body, params=API, headers=KEY, raise_for_status=True
            ) as response:
                async for line in response.content:
                    if first is None and line.startswith(b"event: thread.message.delta"):
                        first = time.perf_counter() - started
                    if line.startswith(b"event: thread.run.completed"):
                        completed = time.perf_counter() - started
            return {"ttft_ms": (first or float("nan")) * 1000, "run_completed_ms": (completed or float("nan")) * 1000}

        return one

    async def direct_responses(self, worker: int) -> Callable[[int], Awaitable[dict[str, Any]]]:
        url = f"{self.spec['emulator']}/api/projects/demo/openai/v1/responses"

        async def one(n: int) -> dict[str, Any]:
            body = {
                "agent_reference": {"type": "agent_reference", "name": "demo-agent", "version": "1"},
                "input": f"turn {n}",
                "stream": True,
            }
            async with self.http.post(url, json=body, headers=KEY, raise_for_status=True) as response:
                while await response.content.readany():
                    pass
            return {}

        return one

    async def poller(self, worker: int) -> Callable[[int], Awaitable[dict[str, Any]]]:
        """A client that creates a run and polls it every `interval_s` (the notebook: 5 s; LiteLLM: 1 s)."""
        emulator = self.spec["emulator"]
        interval = float(self.spec["interval_s"])
        text = self.spec.get("text", "hello")

        async def one(n: int) -> dict[str, Any]:
            body = {"assistant_id": "asst_demo", "thread": {"messages": [{"role": "user", "content": text}]}}
            run = await self._json("POST", f"{emulator}/openai/threads/runs", json=body)
            while run["status"] in ("queued", "in_progress"):
                await asyncio.sleep(interval)
                run = await self._json("GET", f"{emulator}/openai/threads/{run['thread_id']}/runs/{run['id']}")
            await self._json("GET", f"{emulator}/openai/threads/{run['thread_id']}/messages")
            return {}

        return one

    async def _json(self, method: str, url: str, json: Any = None) -> Any:
        """An Azure OpenAI call to the emulator, its JSON answer."""
        async with self.http.request(method, url, json=json, params=API, headers=KEY, raise_for_status=True) as r:
            return await r.json()

    # -- the peer -------------------------------------------------------------------------------

    async def litellm_chat(self, worker: int) -> Callable[[int], Awaitable[dict[str, Any]]]:
        url = f"{self.spec['litellm']}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {self.spec['litellm_key']}"}
        text = self.spec.get("text")

        async def one(n: int) -> dict[str, Any]:
            body = {"model": "peer-agent", "messages": [{"role": "user", "content": text or f"turn {n}"}]}
            async with self.http.post(url, json=body, headers=headers, raise_for_status=True) as response:
                await response.read()
            return {}

        return one


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    client = Client(spec)
    concurrency = int(spec.get("concurrency", 1))
    total = int(spec.get("requests", 100))
    duration = float(spec.get("duration_s", 60))
    factory = getattr(client, spec["kind"])
    workers = await asyncio.gather(*(factory(w) for w in range(concurrency)))
    samples: list[dict[str, Any]] = []
    errors: list[str] = []
    counter = iter(range(total))
    deadline = time.monotonic() + duration
    started = time.perf_counter()

    async def drive(one: Callable[[int], Awaitable[dict[str, Any]]]) -> None:
        for n in counter:
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter()
            try:
                sample = await one(n)
            except Exception as exc:  # a bench reports failures, it does not stop on them
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            sample["ms"] = (time.perf_counter() - t0) * 1000
            samples.append(sample)

    await asyncio.gather(*(drive(one) for one in workers))
    elapsed = time.perf_counter() - started
    await client.http.close()
    return {"samples": samples, "errors": errors[:20], "error_count": len(errors), "elapsed_s": elapsed}


def main() -> None:
    spec = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main()
