"""`python -m bench.upstream`: the client's CPU per streamed upstream request, by HTTP client.

What one turn's upstream exchange costs the bridge's process, with nothing else of a turn around it:
a POST answered with a short event stream (chunked, keep-alive, a dozen events as Azure sends them),
read to its end through `UpstreamClient.stream`, at concurrency 1 and 64. The server is a raw asyncio
server in a process of its own, so only the client's CPU is counted (`time.process_time`).

Clients: the app's (httpx's API over aiohttp's transport, `http_client()`), httpx's own transport,
and, with `--removed <commit>`, the lean HTTP/1.1 client this project carried before (app/backends/
http1.py), loaded from that commit with `git show` and driven the way its UpstreamClient drove it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.processes import ROOT, free_port

EVENTS = [
    b'event: thread.run.created\ndata: {"id":"run_1","object":"thread.run","status":"queued"}\n\n',
    *[
        b'event: thread.message.delta\ndata: {"id":"msg_1","delta":{"content":[{"index":0,"type":"text","text":{"value":"word "}}]}}\n\n'
    ]
    * 10,
    b'event: thread.run.completed\ndata: {"id":"run_1","status":"completed","usage":{"total_tokens":42}}\n\n',
    b"event: done\ndata: [DONE]\n\n",
]

SERVER = r"""
import asyncio, sys
BODY = bytes.fromhex(sys.argv[2])
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")), 0)
            await reader.readexactly(length)
            writer.write(HEAD + BODY)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def _chunked(parts: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


Stream = Callable[[str], Awaitable[int]]


async def _measure(stream: Stream, url: str, concurrency: int, requests: int) -> float:
    """CPU microseconds of this process per request, after a warm-up that opens the connections."""
    await asyncio.gather(*(stream(url) for _ in range(concurrency)))
    per_worker = requests // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            assert await stream(url) == len(EVENTS)

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started) / (per_worker * concurrency) * 1e6


def _app_client(transport: str) -> tuple[Stream, Callable[[], Awaitable[None]]]:
    from app.backends.azure_auth import ApiKeyAuth
    from app.backends.http_client import http_client
    from app.backends.retry import RetryPolicy
    from app.backends.upstream import UpstreamClient

    http = http_client(transport=transport)  # type: ignore[arg-type]
    upstream = UpstreamClient(http, ApiKeyAuth("k"), RetryPolicy())

    async def stream(url: str) -> int:
        async with upstream.stream("POST", url, json={"stream": True}) as events:
            return len([e async for e in events])

    return stream, http.aclose


def _removed_client(commit: str) -> tuple[Stream, Callable[[], Awaitable[None]]]:
    """The removed lean client, as its UpstreamClient used it: one send, readany to the end, SSE decoded."""
    source = subprocess.run(
        ["git", "show", f"{commit}:app/backends/http1.py"], cwd=ROOT, capture_output=True, check=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "removed_http1.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("removed_http1", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from app.backends.upstream import SSEDecoder

    client = module.StreamClient(user_agent="bench")

    async def stream(url: str) -> int:
        body = json.dumps({"stream": True}).encode()
        response = await client.send("POST", url, body, {"api-key": "k"}, connect_s=10, read_s=30)
        decoder, count = SSEDecoder(), 0
        try:
            while chunk := await response.readany():
                count += len(decoder.feed(chunk))
        finally:
            response.close()
        return count + len(decoder.flush())

    async def close() -> None:
        client.close()

    return stream, close


async def _run(args: argparse.Namespace, url: str) -> dict[str, dict[int, float]]:
    kinds: dict[str, Callable[[], tuple[Stream, Callable[[], Awaitable[None]]]]] = {
        "httpx over aiohttp (the app's)": lambda: _app_client("aiohttp"),
        "httpx, its own transport": lambda: _app_client("httpx"),
    }
    if args.removed:
        kinds[f"removed http1.py ({args.removed})"] = lambda: _removed_client(args.removed)
    results: dict[str, dict[int, float]] = {name: {} for name in kinds}
    for _ in range(args.rounds):
        for name, build in kinds.items():
            for concurrency in (1, 64):
                stream, close = build()
                try:
                    figure = await _measure(stream, url, concurrency, args.requests)
                finally:
                    await close()
                results[name].setdefault(concurrency, figure)
                results[name][concurrency] = min(results[name][concurrency], figure)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3200)
    parser.add_argument("--rounds", type=int, default=3, help="each figure is the lowest of this many rounds")
    parser.add_argument("--removed", metavar="COMMIT", help="also measure app/backends/http1.py as of COMMIT")
    args = parser.parse_args(argv)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), _chunked(EVENTS).hex()], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        results = asyncio.run(_run(args, f"http://127.0.0.1:{port}/threads/thread_1/runs?api-version=v1"))
    finally:
        server.terminate()
        server.wait(10)
    print(f"Client CPU per streamed upstream request ({len(EVENTS)} events), lowest of {args.rounds} rounds:")
    print("| client | concurrency 1 | concurrency 64 |\n|---|---|---|")
    for name, figures in results.items():
        print(f"| {name} | {figures[1]:.0f} us | {figures[64]:.0f} us |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
