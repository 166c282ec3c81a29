"""The parameters a request set that its route cannot honour, as warnings of the request.

The rules live in `app.core.params`; this module only applies them to one request. Warnings go
through `app.core.notices`, the one carrier: the middleware sends them all (these and those a backend
adds, such as server-side input items left out) as one `x-agent-bridge-warning` header and lists
them under `warnings` in the access log.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from app.core import notices, params


def note(request: Request, endpoint: params.Endpoint, body: Any) -> None:
    """Warn about each parameter `body` sets that its route's backend cannot honour."""
    route = request.app.state.settings.route(body.model)
    if route is None:
        return
    for warning in params.unhonoured(endpoint, route.backend, body):
        notices.warn(str(warning))
