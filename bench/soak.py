"""`python -m bench.soak`: chat turns through the bridge with clients' default settings; every client error counted.

The race it looks for: a client reuses an idle keep-alive connection just as the server closes it,
and the request fails with no answer (httpx: `ReadError`/`RemoteProtocolError`). httpx (and the
`openai` client, on httpx2) expire idle connections after 5 s, uvicorn's default idle timeout is 5 s
too, so with the bridge's old setting the two met every so often (issue 23: 6 errors in 60,000 turns
at concurrency 48). The bridge now keeps idle connections `server.keepalive_timeout` (75 s).

Emulator, bridge and this process (the clients) run as separate processes on loopback. `--clients`
workers each hold one conversation and send non-streamed chat follow-ups; every `--think-every`
turns a worker pauses 4.5-5.5 s, so its connection sits idle right at the clients' 5 s expiry, where
the race is. Each client is built with its defaults (`openai.AsyncOpenAI(base_url=..., api_key=...)`,
`httpx.AsyncClient()`); the `openai` client retries a failed request twice by default, so its retries
are counted too (from its own log), not only the errors that reach the caller.

`--server-keepalive 5s` serves the bridge with uvicorn's old 5 s, the control. Every error counts;
`connection_closed_errors` are the race's own kind. httpx's default timeout is 5 s: on a saturated
machine a turn's tail passes it, and those `ReadTimeout`s are the machine's, not the race's.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import yaml

from bench.processes import AGENT_BRIDGE, bridge, bridge_config, free_port, process

MODEL = "demo-assistant"
RACE = (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError, openai.APIConnectionError)
"""What a request sent on a connection the server had just closed fails with (no answer at all).
`APIConnectionError` is the openai client's, after its own retries."""


class RetryCounter(logging.Handler):
    """Counts the `openai` client's own retries (it logs each one at INFO)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Retrying request"):
            self.retries += 1


async def _soak(kind: str, url: str, turns: int, concurrency: int, think_every: int) -> dict[str, Any]:
    errors: collections.Counter[str] = collections.Counter()
    race: collections.Counter[str] = collections.Counter()
    done = 0
    per_worker = turns // concurrency
    counter = RetryCounter()
    logger = logging.getLogger("openai")
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    oai = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench")
    plain = httpx.AsyncClient()

    async def turn(conversation: str, n: int) -> None:
        messages = [{"role": "user", "content": f"turn {n}"}]
        headers = {"X-Conversation-Id": conversation}
        if kind == "openai":
            await oai.chat.completions.create(model=MODEL, messages=messages, extra_headers=headers)  # type: ignore[arg-type]
        else:
            body = {"model": MODEL, "messages": messages}
            answer = await plain.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            answer.raise_for_status()

    async def worker() -> None:
        nonlocal done
        conversation = f"soak-{uuid.uuid4().hex}"
        for n in range(per_worker):
            try:
                await turn(conversation, n)
                done += 1
            except Exception as exc:
                errors[f"{type(exc).__module__}.{type(exc).__name__}: {str(exc)[:80]}"] += 1
                if isinstance(exc, RACE) and not isinstance(exc, openai.APITimeoutError):
                    race[type(exc).__name__] += 1
            if think_every and n % think_every == think_every - 1:
                await asyncio.sleep(random.uniform(4.5, 5.5))

    started = time.monotonic()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await oai.close()
        await plain.aclose()
        logger.removeHandler(counter)
    elapsed = time.monotonic() - started
    return {
        "client": kind,
        "turns": per_worker * concurrency,
        "completed": done,
        "errors": sum(errors.values()),
        "connection_closed_errors": sum(race.values()),
        "error_kinds": dict(errors),
        "client_retries": counter.retries if kind == "openai" else None,
        "seconds": round(elapsed, 1),
        "turns_per_s": round(done / elapsed, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=60_000, help="per client (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--clients", default="httpx,openai", help="comma-separated: httpx, openai")
    parser.add_argument("--think-every", type=int, default=100, help="turns between a worker's ~5 s pauses (0: none)")
    parser.add_argument("--server-keepalive", help="serve the bridge with this server.keepalive_timeout (e.g. 5s)")
    args = parser.parse_args(argv)
    logs = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    port = free_port()
    emulator = f"http://127.0.0.1:{port}"
    command = [*AGENT_BRIDGE, "emulator", "--port", str(port), "--log-level", "warning"]
    results = []
    with process(command, f"{emulator}/_emulator/stats", logs / "emulator.log"):
        config = bridge_config(logs / "config.yaml", emulator)
        if args.server_keepalive:
            settings = yaml.safe_load(config.read_text())
            settings["server"] = {"keepalive_timeout": args.server_keepalive}
            config.write_text(yaml.safe_dump(settings))
        manager, bridge_port = bridge(config, logs)
        with manager:
            for kind in args.clients.split(","):
                result = asyncio.run(
                    _soak(kind, f"http://127.0.0.1:{bridge_port}", args.turns, args.concurrency, args.think_every)
                )
                result["server_keepalive"] = args.server_keepalive or "default (75 s)"
                print(json.dumps(result), flush=True)
                results.append(result)
    print(f"logs in {logs}")
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
