"""A replica killed (`kill -9`) during a background run: another replica reports, resumes and cancels it.

Assistants routes: the bridge's own runner dies with its replica; its state in Redis (status, events,
thread/run ids, the thread lock's token) lets the other replica take the run over once the runner's
lease lapses, following the run by polling. Foundry v2 routes: Azure runs the response; the other
replica relays it. Agent-endpoint routes: the endpoint keeps nothing to follow, so the other replica
ends the run `failed`, saying why (or `cancelled`, asked to cancel it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from app.backends.foundry.endpoint_takeover import LOST
from tests.support.agent_endpoint import endpoint_routes
from tests.support.background import poll
from tests.support.bridge import running_bridge
from tests.support.leftovers import active_runs, locks, wait_for
from tests.support.process import bridge_processes, write_config
from tests.support.servers import ServerThread

KEY = "key-of-team-a-0123456789"
TOOLS: Any = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=30)


def _poll(client: openai.OpenAI, response_id: str, within_s: float = 20) -> Any:
    return poll(client, response_id, within_s, every_s=0.1)


def _started(client: openai.OpenAI, response_id: str) -> None:
    """The run is under way upstream (its first events are in the log)."""
    events = client.responses.retrieve(response_id, stream=True, starting_after=-1)
    for event in events:
        if event.type == "response.in_progress":
            events.close()
            return
    raise AssertionError("the response never started")


@pytest.mark.usefixtures("process_identity")
def test_a_killed_replicas_background_responses_are_reported_resumed_and_cancelled_by_another(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        endpoint_routes(emulator.url),
        redis_prefix=redis_prefix,
        keys=[{"name": "team-a", "key": KEY}],
        limits={"lock_lease": "1s"},
        threads={"janitor": False},
    )
    settings: dict[str, Any] = {
        "keys": [{"name": "team-a", "key": KEY}],
        "limits": {"lock_lease": "1s"},
        "threads": {"janitor": False},
    }
    with (
        bridge_processes(config, redis_url, tmp_path, 2) as (doomed, stopping),
        running_bridge(  # in-process: quicker
            emulator.url, redis_url, redis_prefix, routes=endpoint_routes(emulator.url), **settings
        ) as survivor,
        # Closed at the end: a killed replica's pooled connections would otherwise warn in a later test.
        _client(doomed.url) as first,
        _client(survivor.url) as other,
        _client(stopping.url) as to_stopping,
    ):
        # SIGTERM: the stopping replica hands its background run over rather than cancelling it.
        handed = to_stopping.responses.create(model="demo-assistant", input="/sleep 2500\nhanded over", background=True)
        _started(first, handed.id)
        stopping.terminate()
        finishing = {
            model: first.responses.create(model=model, input="/sleep 2500\nstill here", background=True)
            for model in ("demo-assistant", "demo-agent")
        }
        cancelling = {
            model: first.responses.create(model=model, input="/sleep 8000\nnever", background=True)
            for model in ("demo-assistant", "demo-agent")
        }
        calling = first.responses.create(
            model="demo-assistant", input='/sleep 2500\n/tool lookup {"q": "x"}', tools=TOOLS, background=True
        )
        lost, dropped = (
            first.responses.create(model="endpoint-agent", input=f"/sleep 8000\n{text}", background=True)
            for text in ("lost", "dropped")
        )
        for created in [*finishing.values(), *cancelling.values(), calling, lost, dropped]:
            _started(first, created.id)
        doomed.kill()

        # The endpoint's stream died with the replica reading it: the run cannot be followed.
        failed = _poll(other, lost.id)
        assert (failed.status, failed.background) == ("failed", True)
        assert failed.error is not None and (failed.error.code, failed.error.message) == ("server_error", LOST)
        rest = list(other.responses.retrieve(lost.id, stream=True, starting_after=1))
        assert rest[0].sequence_number == 2 and rest[-1].type == "response.failed"
        assert other.responses.cancel(dropped.id).status == "cancelled"

        for model, created in [*finishing.items(), *cancelling.items()]:
            assert other.responses.retrieve(created.id).status in ("queued", "in_progress"), model
        for model, created in finishing.items():
            # A stream resumed on the survivor: only the events after N, to response.completed.
            rest = list(other.responses.retrieve(created.id, stream=True, starting_after=1))
            assert rest[0].sequence_number == 2, model
            numbers = [e.sequence_number for e in rest]
            assert numbers == list(range(2, 2 + len(numbers))), model
            assert rest[-1].type == "response.completed", model
            final = _poll(other, created.id)
            assert (final.status, final.output_text) == ("completed", "Echo: still here"), model

        # Taken over while the agent worked, the run stops for the client's outputs: completed with the
        # call, and the outputs continue the run.
        stopped = _poll(other, calling.id)
        [call] = [item for item in stopped.output if item.type == "function_call"]
        assert (stopped.status, call.name) == ("completed", "lookup")
        answered = other.responses.create(
            model="demo-assistant",
            previous_response_id=stopped.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "found"}],
            tools=TOOLS,
        )
        assert answered.output_text == "Tool lookup returned: found"

        stopping.proc.wait(15)
        assert any("handing 1 background response(s) over" in line for line in stopping.log_lines())
        assert (_poll(other, handed.id).output_text, other.responses.retrieve(handed.id).status) == (
            "Echo: handed over",
            "completed",
        )

        for model, created in cancelling.items():
            assert other.responses.cancel(created.id).status == "cancelled", model
            assert other.responses.retrieve(created.id).status == "cancelled", model
        wait_for(lambda: not active_runs(emulator.url), what="no active run upstream")
        wait_for(lambda: not locks(redis_url, redis_prefix), what="no thread lock left")
