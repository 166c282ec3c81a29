"""Every failure a chat client can meet on an Assistants route, each in OpenAI's error envelope."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.support.bridge import Bridge, routes_for, running_bridge
from tests.support.chat import answered, raw_sse, turn
from tests.support.servers import ServerThread, free_port

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def _post(bridge: Bridge, body: Any, **kwargs: Any) -> httpx.Response:
    with bridge.http() as c:
        if isinstance(body, (dict, list)):
            return c.post("/v1/chat/completions", json=body, **kwargs)
        return c.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"}, **kwargs)


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _answer_to_another_call(called: str, answered: str) -> dict[str, Any]:
    """A conversation whose tool message answers `answered` after the assistant called `called`."""
    call = {"id": called, "type": "function", "function": {"name": "f", "arguments": "{}"}}
    return {
        "model": "demo-assistant",
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": answered, "content": "1"},
        ],
    }


def _say(client: openai.OpenAI, text: str, headers: dict[str, str]) -> Any:
    """One plain turn of the conversation that `headers` name."""
    return turn(
        client,
        stream=False,
        model="demo-assistant",
        messages=[{"role": "user", "content": text}],
        extra_headers=headers,
    )


def _configure(bridge: Bridge, **options: Any) -> None:
    with bridge.emulator() as c:
        c.post("/_emulator/config", json=options).raise_for_status()


def _last_run_cancelled(bridge: Bridge, thread_id: str) -> Callable[[], bool]:
    def cancelled() -> bool:
        thread = next(t for t in bridge.emulator_threads() if t["id"] == thread_id)
        return bool(thread["runs"][-1]["status"] == "cancelled")

    return cancelled


def test_unknown_model_is_404_model_not_found(bridge: Bridge) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        bridge.client().chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    error = _error(info.value.response)
    assert error["param"] == "model" and "gpt-nope" in error["message"]
    assert bridge.emulator_threads() == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "demo-assistant"}, "messages"),
        ({"model": "demo-assistant", "messages": []}, "messages"),
        ({"model": "demo-assistant", "messages": "hello"}, "messages"),
        ({"model": "demo-assistant", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "demo-assistant", "messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        (
            {"model": "demo-assistant", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            "temperature",
        ),
        ({"model": "demo-assistant", "messages": [{"role": "user", "content": "x"}], "n": 3}, "n"),
        ({"model": "demo-assistant", "messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
        (
            {
                "model": "demo-assistant",
                "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
            },
            "messages[1].role",
        ),
        (
            {
                "model": "demo-assistant",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}],
            },
            "messages[0].content[0].type",
        ),
    ],
)
def test_malformed_bodies_are_400_naming_the_field(bridge: Bridge, body: dict[str, Any], param: str) -> None:
    response = _post(bridge, body)
    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert bridge.emulator_threads() == []


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b"null", b'"text"'])
def test_non_object_bodies_are_400(bridge: Bridge, raw: bytes) -> None:
    response = _post(bridge, raw)
    assert response.status_code == 400, response.text
    assert _error(response)["type"] == "invalid_request_error"


def test_tool_message_with_unknown_call_id_is_400(bridge: Bridge) -> None:
    response = _post(bridge, _answer_to_another_call("call_a", "call_zzz"))
    assert response.status_code == 400
    assert _error(response)["param"] == "messages[2].tool_call_id"


def test_tool_call_id_the_bridge_never_issued_is_400(bridge: Bridge) -> None:
    response = _post(bridge, _answer_to_another_call("call_forged", "call_forged"))
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "unknown_tool_call_id" and "call_forged" in error["message"]


def test_tool_outputs_missing_for_some_calls_is_400(bridge: Bridge) -> None:
    client = bridge.client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": '/tool lookup {}\n/tool lookup {"q": 2}'}]
    first = turn(client, stream=False, model="demo-assistant", messages=messages, tools=TOOLS)
    assert len(first.tool_calls) == 2
    calls = [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for c in first.tool_calls
    ]
    # Only one of the two calls answered, then the conversation goes on: rejected by the codec.
    response = _post(
        bridge,
        {
            "model": "demo-assistant",
            "messages": [
                *messages,
                {"role": "assistant", "tool_calls": calls},
                {"role": "tool", "tool_call_id": calls[0]["id"], "content": "1"},
            ],
        },
    )
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "tool_outputs_missing" and calls[1]["id"] in error["message"]


def test_azure_429_is_retried_per_retry_after(bridge: Bridge) -> None:
    bridge.fault(path=r"/threads/runs$", status=429, count=2, retry_after_ms="20")
    bridge.reset_stats()
    reply = turn(bridge.client(), stream=False, model="demo-assistant", messages=[{"role": "user", "content": "hi"}])
    assert reply.text == "Echo: hi"
    assert bridge.emulator_stats()["POST /openai/threads/runs"] == 3


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_persistent_429_reaches_the_client_with_retry_after(bridge: Bridge, stream: bool) -> None:
    bridge.fault(path=r"/threads/runs$", status=429, count=50, retry_after="7")
    with pytest.raises(openai.RateLimitError) as info:
        turn(bridge.client(), stream=stream, model="demo-assistant", messages=[{"role": "user", "content": "hi"}])
    assert info.value.response.headers["retry-after"] == "7"
    assert _error(info.value.response)["type"] == "rate_limit_error"
    assert bridge.emulator_threads() == []


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("rate_limit_exceeded", 429, "rate_limit_error"),
        ("server_error", 502, "upstream_error"),
        ("invalid_prompt", 422, "agent_error"),
    ],
)
def test_a_failed_run_has_the_status_of_its_kind_and_leaves_no_thread(
    bridge: Bridge, code: str, status: int, kind: str
) -> None:
    response = _post(bridge, {"model": "demo-assistant", "messages": [{"role": "user", "content": f"/fail {code}"}]})
    assert response.status_code == status
    error = _error(response)
    assert (error["code"], error["type"]) == (code, kind)
    assert code in error["message"]
    if status == 429:
        assert response.headers["retry-after"] == "10"  # the emulator's message names no wait
    threads = bridge.emulator_threads()
    assert len(threads) == 1 and threads[0]["deleted"] is True


@pytest.mark.parametrize(("code", "kind"), [("server_error", "upstream_error"), ("invalid_prompt", "agent_error")])
def test_a_streamed_run_that_fails_after_the_first_byte_is_an_in_stream_error_of_its_kind(
    bridge: Bridge, code: str, kind: str
) -> None:
    payloads = raw_sse(
        f"{bridge.url}/v1/chat/completions",
        {"model": "demo-assistant", "stream": True, "messages": [{"role": "user", "content": f"/fail {code}"}]},
    )
    assert payloads[-1] == "[DONE]"
    error = payloads[-2]["error"]
    assert (error["code"], error["type"]) == (code, kind)


def test_sdk_retries_of_a_transient_failure_leave_no_thread_behind(bridge: Bridge) -> None:
    with pytest.raises(openai.InternalServerError):
        bridge.client(max_retries=2).chat.completions.create(
            model="demo-assistant", messages=[{"role": "user", "content": "/fail server_error"}]
        )
    threads = bridge.emulator_threads()
    assert len(threads) == 3
    assert all(t["deleted"] for t in threads)


def test_second_concurrent_turn_waits_then_gets_409(emulator: ServerThread, redis_url: str, redis_prefix: str) -> None:
    with running_bridge(emulator.url, redis_url, redis_prefix, limits={"lock_wait": "300ms"}) as bridge:
        headers = {"X-Conversation-Id": "busy"}
        client = bridge.client()
        _say(client, "start", headers)
        slow_done = threading.Event()

        def slow() -> None:
            _say(client, "/sleep 1500", headers)
            slow_done.set()

        worker = threading.Thread(target=slow)
        worker.start()
        time.sleep(0.3)
        with pytest.raises(openai.ConflictError) as info:
            _say(client, "me too", headers)
        assert _error(info.value.response)["code"] == "conversation_busy"
        worker.join(10)
        assert slow_done.is_set()
        # Once the first turn is over the conversation takes the next one.
        after = _say(client, "now", headers)
        assert after.text == "Echo: now"


def test_tool_outputs_after_the_run_expired_are_a_clear_4xx(bridge: Bridge) -> None:
    _configure(bridge, run_expiry_s=1)
    client = bridge.client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "/tool lookup {}"}]
    first = turn(client, stream=False, model="demo-assistant", messages=messages, tools=TOOLS)
    time.sleep(1.5)
    messages += answered(first, "late")
    response = _post(bridge, {"model": "demo-assistant", "messages": messages, "tools": TOOLS})
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "tool_outputs_expired" and "too late" in error["message"]


def test_disconnect_mid_stream_cancels_the_run_and_unlocks(bridge: Bridge) -> None:
    headers = {"X-Conversation-Id": "leaving"}
    client = bridge.client()
    _say(client, "hello", headers)
    _configure(bridge, token_delay_ms=300)
    words = " ".join(f"w{i}" for i in range(40))
    with (
        httpx.Client(timeout=30) as c,
        c.stream(
            "POST",
            f"{bridge.url}/v1/chat/completions",
            json={"model": "demo-assistant", "stream": True, "messages": [{"role": "user", "content": words}]},
            headers=headers,
        ) as response,
    ):
        thread_id = response.headers["x-thread-id"]
        for line in response.iter_lines():
            if '"content":"Echo' in line or '"content": "Echo' in line:
                break  # the run is producing text: hang up now
    _wait_for(_last_run_cancelled(bridge, thread_id))
    _configure(bridge, token_delay_ms=0)
    lock_key = f"{bridge.settings.redis_prefix}lock:thread:{thread_id}"
    _wait_for(lambda: bridge.server.call(bridge.state.store.redis.exists(lock_key)) == 0)
    after = _say(client, "still here", headers)
    assert after.text == "Echo: still here"


def test_route_timeout_cancels_the_run_and_returns_504(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    routes = routes_for(emulator.url)
    routes["demo-assistant"] = {**routes["demo-assistant"], "timeout": "1s"}
    with running_bridge(emulator.url, redis_url, redis_prefix, routes=routes) as bridge:
        started = time.monotonic()
        response = _post(bridge, {"model": "demo-assistant", "messages": [{"role": "user", "content": "/sleep 4000"}]})
        assert response.status_code == 504
        assert time.monotonic() - started < 3.5
        assert _error(response)["code"] == "upstream_timeout"
        (thread,) = bridge.emulator_threads()
        _wait_for(_last_run_cancelled(bridge, thread["id"]))


def test_store_down_is_503_and_nothing_is_created_upstream(emulator: ServerThread, redis_prefix: str) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with running_bridge(emulator.url, dead_redis, redis_prefix) as bridge:
        for stream in (False, True):
            response = _post(
                bridge, {"model": "demo-assistant", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
            )
            assert response.status_code == 503
            assert _error(response)["code"] == "state_store_unavailable"
        # The store is checked before anything is created upstream: no thread to create and delete again.
        assert bridge.emulator_threads() == []
        with bridge.http() as c:
            assert c.get("/readyz").status_code == 503


@pytest.mark.parametrize(
    "body",
    [
        {"model": 5, "messages": [{"role": "user", "content": "x"}]},
        {"model": "demo-assistant", "messages": [None]},
        {"model": "demo-assistant", "messages": [{"role": "tool", "content": "x"}]},
        {"model": "demo-assistant", "messages": [{"role": "assistant", "tool_calls": [{"id": "", "function": {}}]}]},
        {"model": "demo-assistant", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
        {"model": "demo-assistant", "messages": [{"role": "user", "content": "x"}], "stream_options": "yes"},
        {"model": "demo-assistant", "messages": [{"role": "user", "content": "x"}], "tool_choice": 7},
    ],
)
def test_no_input_yields_a_500(bridge: Bridge, body: dict[str, Any]) -> None:
    response = _post(bridge, body)
    assert 400 <= response.status_code < 500, response.text
    _error(response)


def test_body_over_the_limit_is_413(emulator: ServerThread, redis_url: str, redis_prefix: str) -> None:
    with running_bridge(emulator.url, redis_url, redis_prefix, limits={"max_body_bytes": 1000}) as bridge:
        response = _post(bridge, {"model": "demo-assistant", "messages": [{"role": "user", "content": "x" * 2000}]})
        assert response.status_code == 413
        assert _error(response)["code"] == "request_too_large"


def test_too_many_messages_is_400(emulator: ServerThread, redis_url: str, redis_prefix: str) -> None:
    with running_bridge(emulator.url, redis_url, redis_prefix, limits={"max_messages": 3}) as bridge:
        messages = [{"role": "user", "content": str(i)} for i in range(4)]
        response = _post(bridge, {"model": "demo-assistant", "messages": messages})
        assert response.status_code == 400
        assert _error(response)["code"] == "too_many_messages"
