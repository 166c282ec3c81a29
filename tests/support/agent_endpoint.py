"""Routes and keys of the conversation and agent-endpoint tests: the test routes plus two agent endpoints."""

from __future__ import annotations

from typing import Any

from tests.support.bridge import ENTRA, routes_for

A = "key-of-team-a-0123456789"
B = "key-of-team-b-0123456789"
KEYS = [{"name": "team-a", "key": A}, {"name": "team-b", "key": B}]


def endpoint_routes(emulator_url: str) -> dict[str, Any]:
    """`endpoint-agent` (the echo agent) and `endpoint-flights` (the seed's agent) at their own endpoints."""
    project = f"{emulator_url}/api/projects/demo"
    return routes_for(
        emulator_url,
        **{
            name: {"endpoint": project, "agent": {"name": agent, "endpoint_scoped": True}, "auth": ENTRA}
            for name, agent in (("endpoint-agent", "demo-agent"), ("endpoint-flights", "flights-demo"))
        },
    )
