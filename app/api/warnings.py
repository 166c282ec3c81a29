"""The `x-agent-bridge-warning` header: the parameters a request set that its route cannot honour.

The same list goes to `request.state.warnings`, which the access log writes. The rules live in
`app.core.params`; this module only renders them for one request.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from app.core import params

HEADER = "x-agent-bridge-warning"


def headers(request: Request, endpoint: params.Endpoint, body: Any) -> dict[str, str]:
    """The warning header for `body` on its route (empty when everything it set is honoured)."""
    route = request.app.state.settings.route(body.model)
    if route is None:
        return {}
    found = params.unhonoured(endpoint, route.backend, body)
    if not found:
        return {}
    request.state.warnings = [str(w) for w in found]
    return {HEADER: params.header(found)}
