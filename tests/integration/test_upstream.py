"""UpstreamClient against a real HTTP server playing Azure: retries, hints, deadlines, errors, SSE (both transports)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.backends.azure_auth import ApiKeyAuth, EntraAuth
from app.backends.http_client import http_client
from app.backends.retry import RetryPolicy
from app.backends.upstream import SSEEvent, UpstreamClient, auth_refused
from app.core import timing
from app.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamTimeoutError,
)
from tests.support.servers import ServerThread, free_port, serve

SECRET_KEY = "sk-very-secret-api-key-0123456789"
SSE_BODY = [
    b'event: thread.run.created\ndata: {"id":"run_1","status":"queued"}\n\n',
    b'event: thread.message.delta\ndata: {"delta":{"content":[{"text":{"value":"Hel"}}]}}\n\n',
    b'event: thread.message.delta\r\ndata: {"delta":{"content":[{"text":{"value":"lo"}}]}}\r\n\r\n',
    b": keep-alive\n\n",
    b'event: thread.run.completed\ndata: {"id":"run_1","status":"completed"}\n\nevent: done\ndata: [DONE]\n\n',
]


class Azure:
    """Stands in for Azure: `?fail=N` answers fail N times before succeeding; every request is counted."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []
        self.peers: list[int] = []
        """The client port of each request: one TCP connection per distinct port."""

    def _failing(self, request: Request) -> bool:
        self.hits[request.url.path] += 1
        self.headers.append(dict(request.headers))
        self.peers.append(request.client.port if request.client else 0)
        return self.hits[request.url.path] <= int(request.query_params.get("fail", "1000000"))

    async def throttled(self, request: Request) -> Response:
        if self._failing(request):
            hint = {"retry-after-ms": request.query_params.get("ms", "10")}
            if "after" in request.query_params:
                hint = {"retry-after": request.query_params["after"]}
            return JSONResponse({"error": {"code": "429", "message": "Rate limit is exceeded."}}, 429, headers=hint)
        return JSONResponse({"ok": True, "attempts": self.hits[request.url.path]})

    async def unavailable(self, request: Request) -> Response:
        if self._failing(request):
            return JSONResponse({"error": {"code": "ServiceUnavailable", "message": "Try later."}}, 503)
        return JSONResponse({"ok": True})

    async def invalid(self, request: Request) -> Response:
        self._failing(request)
        error = {"message": "Unknown parameter: 'x'.", "type": "invalid_request_error", "param": "x", "code": "bad"}
        return JSONResponse({"error": error}, 400)

    async def status(self, request: Request) -> Response:
        self._failing(request)
        code = int(request.path_params["code"])
        if code == 502:
            return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", 502, media_type="text/html")
        return JSONResponse({"error": {"code": str(code), "message": f"Azure says {code}."}}, code)

    async def slow(self, request: Request) -> Response:
        self._failing(request)
        await asyncio.sleep(3)
        return JSONResponse({"late": True})

    async def empty(self, request: Request) -> Response:
        self._failing(request)
        return Response(status_code=204)

    async def events(self, request: Request) -> Response:
        if self._failing(request):
            return JSONResponse({"error": {"code": "429", "message": "busy"}}, 429, headers={"retry-after-ms": "5"})
        cut = "cut" in request.query_params

        async def body() -> AsyncIterator[bytes]:
            for chunk in SSE_BODY[:2] if cut else SSE_BODY:
                yield chunk
                await asyncio.sleep(0.01)
            if cut:
                raise RuntimeError("connection dropped mid-stream (on purpose)")

        return StreamingResponse(body(), media_type="text/event-stream")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/throttled", self.throttled, methods=["GET", "POST"]),
                Route("/unavailable", self.unavailable, methods=["GET", "POST"]),
                Route("/invalid", self.invalid, methods=["POST"]),
                Route("/status/{code}", self.status, methods=["GET", "POST"]),
                Route("/slow", self.slow, methods=["GET"]),
                Route("/empty", self.empty, methods=["DELETE"]),
                Route("/events", self.events, methods=["POST"]),
                Route("/drop", Drop(self.hits), methods=["GET", "POST"]),
            ]
        )


class Drop:
    """A raw ASGI endpoint: starts a 200 answer, sends part of it, then drops the connection."""

    def __init__(self, hits: Counter[str]) -> None:
        self.hits = hits

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.hits[scope["path"]] += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
        await send({"type": "http.response.body", "body": b'{"half": ', "more_body": True})
        raise RuntimeError("connection dropped mid-answer (on purpose)")


@pytest.fixture(scope="module")
def azure_server() -> Iterator[tuple[Azure, ServerThread]]:
    azure = Azure()
    with serve(azure.app()) as server:
        yield azure, server


@pytest.fixture
def azure(azure_server: tuple[Azure, ServerThread]) -> Azure:
    azure_server[0].hits.clear()
    azure_server[0].headers.clear()
    azure_server[0].peers.clear()
    return azure_server[0]


@pytest.fixture(params=["aiohttp", "httpx"])
async def http(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """The app's one client, over aiohttp's transport and over httpx's own."""
    async with http_client(transport=request.param) as client:
        yield client


@pytest.fixture
def url(azure_server: tuple[Azure, ServerThread]) -> str:
    return azure_server[1].url


def client(http: httpx.AsyncClient, policy: RetryPolicy | None = None, auth: Any = None) -> UpstreamClient:
    return UpstreamClient(http, auth or ApiKeyAuth(SECRET_KEY), policy or RetryPolicy.testing())


async def test_429_is_retried_after_the_servers_retry_after_ms(azure: Azure, http: httpx.AsyncClient, url: str) -> None:
    policy = dataclasses.replace(RetryPolicy.testing(), max_delay_s=1.0)
    started = time.monotonic()
    body = await client(http, policy).request("GET", f"{url}/throttled", params={"fail": "2", "ms": "150"})
    elapsed = time.monotonic() - started
    assert body == {"ok": True, "attempts": 3}
    assert elapsed >= 0.28  # two waits of 150 ms, not the policy's 5 and 10 ms
    assert azure.headers[0]["api-key"] == SECRET_KEY


async def test_503_then_200_and_timing_counts_each_request(azure: Azure, http: httpx.AsyncClient, url: str) -> None:
    current = timing.begin()
    assert await client(http).request("GET", f"{url}/unavailable", params={"fail": "1"}) == {"ok": True}
    assert azure.hits["/unavailable"] == 2
    assert current.upstream_requests == 2
    assert current.upstream_s > 0


async def test_a_refused_create_is_retried_even_when_not_idempotent(
    azure: Azure, http: httpx.AsyncClient, url: str
) -> None:
    upstream = client(http)
    body = await upstream.request("POST", f"{url}/unavailable", json={}, params={"fail": "1"}, idempotent=False)
    assert body == {"ok": True}
    assert azure.hits["/unavailable"] == 2


async def test_a_post_that_broke_after_sending_is_not_repeated(azure: Azure, http: httpx.AsyncClient, url: str) -> None:
    with pytest.raises(UpstreamError) as info:
        await client(http).request("POST", f"{url}/drop", json={"create": "run"}, idempotent=False)
    assert azure.hits["/drop"] == 1
    assert "could not reach Azure" in info.value.message
    assert isinstance(info.value.__cause__, httpx.TransportError)
    # The same failure on an idempotent read is retried up to the policy's attempts.
    with pytest.raises(UpstreamError):
        await client(http).request("GET", f"{url}/drop")
    assert azure.hits["/drop"] == 1 + RetryPolicy.testing().max_attempts


async def test_a_refused_connection_is_retried_even_for_a_create(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    attempts = 0

    async def count(_: httpx.Request) -> None:
        nonlocal attempts
        attempts += 1

    http.event_hooks["request"].append(count)
    port = free_port()
    timing.begin("req_transport_test")
    with pytest.raises(UpstreamError) as info:
        await client(http).request("POST", f"http://127.0.0.1:{port}/runs", json={}, idempotent=False)
    assert attempts == RetryPolicy.testing().max_attempts
    # The client is told what happened, not where: no host, port or exception text; the log has them.
    message = info.value.message
    assert message.startswith("could not reach Azure (the connection failed)") and "req_transport_test" in message
    assert "127.0.0.1" not in message and str(port) not in message and "ConnectError" not in message
    assert info.value.code == "upstream_unreachable" and SECRET_KEY not in message
    logged = [r for r in caplog.records if r.name == "agent_bridge.upstream"]
    assert any(str(port) in r.getMessage() and getattr(r, "request_id", None) == "req_transport_test" for r in logged)


async def test_persistent_429_is_a_rate_limit_error_with_retry_after(
    azure: Azure, http: httpx.AsyncClient, url: str
) -> None:
    with pytest.raises(RateLimitError) as info:
        await client(http).request("POST", f"{url}/throttled", json={}, params={"ms": "10"})
    assert azure.hits["/throttled"] == RetryPolicy.testing().max_attempts
    assert info.value.status == 429 and info.value.message == "Rate limit is exceeded."
    assert info.value.retry_after == pytest.approx(0.01)
    assert info.value.headers["Retry-After"] == "1"


async def test_a_long_retry_after_goes_to_the_client_at_once(azure: Azure, http: httpx.AsyncClient, url: str) -> None:
    with pytest.raises(RateLimitError) as info:
        await client(http).request("GET", f"{url}/throttled", params={"after": "7"})
    assert azure.hits["/throttled"] == 1
    assert info.value.headers["Retry-After"] == "7"


async def test_retries_stop_before_the_deadline(azure: Azure, http: httpx.AsyncClient, url: str) -> None:
    policy = dataclasses.replace(RetryPolicy.testing(), max_attempts=10, max_delay_s=1.0)
    deadline = time.monotonic() + 0.5
    with pytest.raises(RateLimitError):
        await client(http, policy).request("GET", f"{url}/throttled", params={"ms": "200"}, deadline=deadline)
    assert time.monotonic() < deadline
    assert azure.hits["/throttled"] in (2, 3)  # at 0, ~0.2 and ~0.4 s; a wait that would end past it is not made


async def test_a_slow_answer_ends_at_the_deadline(azure: Azure, http: httpx.AsyncClient, url: str) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError):
        await client(http).request("GET", f"{url}/slow", deadline=started + 0.3)
    assert 0.25 <= time.monotonic() - started < 2.0
    assert azure.hits["/slow"] == 1


async def test_a_passed_deadline_sends_nothing(azure: Azure, http: httpx.AsyncClient, url: str) -> None:
    with pytest.raises(UpstreamTimeoutError):
        await client(http).request("GET", f"{url}/slow", deadline=time.monotonic() - 1)
    assert azure.hits["/slow"] == 0


async def test_400_keeps_azures_message_param_and_code(azure: Azure, http: httpx.AsyncClient, url: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await client(http).request("POST", f"{url}/invalid", json={"x": 1})
    assert (info.value.message, info.value.param, info.value.code) == ("Unknown parameter: 'x'.", "x", "bad")
    assert azure.hits["/invalid"] == 1


async def test_401_is_an_upstream_auth_error_without_the_key(
    azure: Azure, http: httpx.AsyncClient, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    timing.begin("req_auth_test")
    with pytest.raises(UpstreamAuthError) as info:
        await client(http).request("GET", f"{url}/status/401")
    # Azure's own words (which name resources, identities, policies) are summarised, and logged.
    assert info.value.message.startswith("upstream authentication failed (HTTP 401): Azure refused this bridge's")
    assert "Azure says" not in str(info.value.envelope()) and "req_auth_test" in info.value.message
    assert any("Azure says 401." in r.getMessage() for r in caplog.records if r.name == "agent_bridge.upstream")
    assert info.value.status == 502 and SECRET_KEY not in str(info.value.envelope())
    assert azure.hits["/status/401"] == 1  # an api-key has nothing to refresh


class TokenSource:
    """Stands in for azure-identity: numbered tokens."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken(f"token-{self.calls}", int(time.time()) + 3600)

    async def close(self) -> None:
        pass


async def test_401_with_a_cached_token_fetches_a_new_one_once(azure: Azure, http: httpx.AsyncClient, url: str) -> None:
    source = TokenSource()
    with pytest.raises(UpstreamAuthError):
        await client(http, auth=EntraAuth(source, "scope")).request("GET", f"{url}/status/401")
    assert azure.hits["/status/401"] == 2 and source.calls == 2
    assert [h["authorization"] for h in azure.headers] == ["Bearer token-1", "Bearer token-2"]


@pytest.mark.parametrize(
    ("code", "error", "text"),
    [
        (403, UpstreamAuthError, auth_refused(403)),
        (404, NotFoundError, "Azure says 404."),
        (409, ConflictError, "Azure says 409."),
        (500, UpstreamError, "Azure says 500."),
        (502, UpstreamError, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
        (504, UpstreamTimeoutError, "Azure timed out (HTTP 504): Azure says 504."),
    ],
)
async def test_other_failures_are_translated(
    azure: Azure, http: httpx.AsyncClient, url: str, code: int, error: type[Exception], text: str
) -> None:
    with pytest.raises(error) as info:
        await client(http).request("GET", f"{url}/status/{code}")
    assert info.value.message == text  # type: ignore[attr-defined]
    assert azure.hits[f"/status/{code}"] == (4 if code >= 500 else 1)
    if code == 404:
        assert info.value.code == "upstream_not_found"  # type: ignore[attr-defined]


async def test_an_empty_answer_is_none(azure: Azure, http: httpx.AsyncClient, url: str) -> None:
    assert await client(http).request("DELETE", f"{url}/empty") is None


async def test_a_stream_yields_events_after_a_refused_first_attempt(
    azure: Azure, http: httpx.AsyncClient, url: str
) -> None:
    upstream = client(http)
    async with upstream.stream("POST", f"{url}/events", json={"stream": True}, params={"fail": "1"}) as events:
        received = [event async for event in events]
    assert azure.hits["/events"] == 2
    assert [e.event for e in received] == [
        "thread.run.created",
        "thread.message.delta",
        "thread.message.delta",
        "thread.run.completed",
        "done",
    ]
    assert received[2].json()["delta"]["content"][0]["text"]["value"] == "lo"
    assert received[-1] == SSEEvent("done", "[DONE]")


async def _collect(upstream: UpstreamClient, url: str, params: dict[str, str], into: list[SSEEvent]) -> None:
    """Reads a stream to its end; `into` gets a sentinel on entry, then every event."""
    async with upstream.stream("POST", url, json={"stream": True}, params=params) as events:
        into.append(SSEEvent("entered", ""))
        async for event in events:
            into.append(event)


async def test_a_stream_checks_the_status_before_any_event(azure: Azure, http: httpx.AsyncClient, url: str) -> None:
    received: list[SSEEvent] = []
    with pytest.raises(RateLimitError):
        await _collect(client(http), f"{url}/events", {}, received)
    assert received == []  # the context was never entered
    assert azure.hits["/events"] == RetryPolicy.testing().max_attempts


async def test_a_stream_that_breaks_raises_after_its_events(azure: Azure, http: httpx.AsyncClient, url: str) -> None:
    received: list[SSEEvent] = []
    with pytest.raises(UpstreamError) as info:
        await _collect(client(http), f"{url}/events", {"fail": "0", "cut": "1"}, received)
    assert [e.event for e in received] == ["entered", "thread.run.created", "thread.message.delta"]
    assert received[1].json() == {"id": "run_1", "status": "queued"}
    assert "stream broke" in info.value.message
    assert azure.hits["/events"] == 1  # a stream that started is never repeated


async def test_a_stream_read_to_its_end_gives_its_connection_back(
    azure: Azure, http: httpx.AsyncClient, url: str
) -> None:
    upstream = client(http)
    for _ in range(3):
        async with upstream.stream("POST", f"{url}/events", json={}, params={"fail": "0"}) as events:
            assert [e.event async for e in events][-1] == "done"
    assert len(azure.peers) == 3 and len(set(azure.peers)) == 1  # one keep-alive connection for all three


async def test_an_abandoned_stream_closes_its_connection(azure: Azure, http: httpx.AsyncClient, url: str) -> None:
    upstream = client(http)
    async with upstream.stream("POST", f"{url}/events", json={}, params={"fail": "0"}) as events:
        assert (await anext(aiter(events))).event == "thread.run.created"  # the client leaves here
    async with upstream.stream("POST", f"{url}/events", json={}, params={"fail": "0"}) as events:
        assert [e.event async for e in events][-1] == "done"
    # The half-read answer's connection was not put back for the next request to read its rest.
    assert len(azure.peers) == 2 and azure.peers[0] != azure.peers[1]
