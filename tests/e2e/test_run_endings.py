"""How turns end, through the official openai client on both backends: failures, rate limits, usage."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.support.bridge import Bridge
from tests.support.chat import raw_sse
from tests.support.spec import validate

BOTH = ["demo-assistant", "demo-agent"]


def _events(bridge: Bridge, model: str, text: str, **extra: Any) -> list[dict[str, Any]]:
    stream = bridge.client().responses.create(model=model, input=text, stream=True, **extra)
    events = [event.model_dump(mode="json", exclude_unset=True) for event in stream]
    for event in events:
        validate(event, "ResponseStreamEvent")
    return events


@pytest.mark.parametrize("model", BOTH)
def test_a_streamed_response_that_fails_ends_with_response_failed(bridge: Bridge, model: str) -> None:
    events = _events(bridge, model, "/fail server_error")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created"
    failed = [e for e in events if e["type"] == "response.failed"]
    assert len(failed) == 1
    assert failed[0]["response"]["status"] == "failed"
    assert failed[0]["response"]["error"]["code"] == "server_error"
    assert "response.completed" not in kinds


@pytest.mark.parametrize("model", BOTH)
def test_a_rate_limited_run_is_429_with_retry_after(bridge: Bridge, model: str) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        bridge.client().responses.create(model=model, input="/fail rate_limit_exceeded")
    assert info.value.status_code == 429
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert info.value.code == "rate_limit_exceeded"
    # Streamed, the run's failure comes after the first byte: an in-stream error with the same code.
    payloads = raw_sse(
        f"{bridge.url}/v1/chat/completions",
        {"model": model, "stream": True, "messages": [{"role": "user", "content": "/fail rate_limit_exceeded"}]},
    )
    assert payloads[-1] == "[DONE]"
    assert payloads[-2]["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("model", BOTH)
def test_a_deterministic_failure_is_not_retried(bridge: Bridge, model: str) -> None:
    bridge.reset_stats()
    with pytest.raises(openai.UnprocessableEntityError) as info:
        bridge.client(max_retries=2).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "/fail invalid_prompt"}]
        )
    assert info.value.code == "invalid_prompt"
    creates = sum(
        n for op, n in bridge.emulator_stats().items() if op.startswith("POST") and op.endswith(("/runs", "/responses"))
    )
    assert creates == 1  # the SDK did not retry it into new runs
    assert all(t["deleted"] for t in bridge.emulator_threads())


@pytest.mark.parametrize("model", ["flights-assistant", "flights-agent"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_response_ending_in_tool_calls_carries_usage(bridge: Bridge, model: str, stream: bool) -> None:
    question = "How many flights are there?"  # the agents' own tools: no request tools (v2 refuses them)
    if stream:
        events = _events(bridge, model, question)
        final = events[-1]
        assert final["type"] == "response.completed"
        response = final["response"]
    else:
        response = (
            bridge.client().responses.create(model=model, input=question).model_dump(mode="json", exclude_unset=True)
        )
    validate(response, "Response")
    assert response["output"][-1]["type"] == "function_call"
    usage = response["usage"]
    assert usage is not None
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
