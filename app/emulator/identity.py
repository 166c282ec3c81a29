"""App Service managed-identity token endpoint (`GET /msi/token`), as azure-identity/MSAL call it.

Point a process at it with `IDENTITY_ENDPOINT=<emulator>/msi/token` and `IDENTITY_HEADER=<any non-empty
secret>`: azure-identity's `ManagedIdentityCredential` (through MSAL) then sends
`GET /msi/token?api-version=2019-08-01&resource=<scope without /.default>[&client_id=...]` with headers
`X-IDENTITY-HEADER: <secret>` and `Metadata: true`, and expects
`{"access_token", "expires_on": "<epoch seconds>", "resource", "token_type": "Bearer"}`.
Any non-empty `X-IDENTITY-HEADER` is accepted (App Service rotates the real secret, so no client can
hard-code it); a missing or blank one is a 401. Errors use App Service's body
`{"statusCode", "message", "correlationId"}`, which MSAL turns into a `CredentialUnavailableError`.
Tokens are `emu-` + random, valid `options.token_ttl_s` seconds (read per request); the emulator
remembers which resource each was minted for, so a project endpoint refuses one minted for another
audience (`hooks._authorised`). The auth middleware
skips `/msi/` paths, and counts each fetch in `/_emulator/stats` as `GET /msi/token`.
"""

from __future__ import annotations

import secrets
import time
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from app.emulator.hooks import EmulatorContext

API_VERSION = "2019-08-01"
SYSTEM_ASSIGNED_CLIENT_ID = "00000000-0000-0000-0000-00000000e0e0"
_ID_PARAMS = ("client_id", "mi_res_id", "object_id", "principal_id")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}, status_code=status
    )


def build(ctx: EmulatorContext) -> list[BaseRoute]:
    async def token(request: Request) -> Response:
        if not request.headers.get("x-identity-header", "").strip():
            return _error(401, "The X-IDENTITY-HEADER header is missing or empty.")
        q = request.query_params
        for key in q:
            if key not in ("api-version", "resource", *_ID_PARAMS):
                return _error(400, f"Unknown query parameter '{key}'.")
        if q.get("api-version") != API_VERSION:
            return _error(
                400,
                f"Unsupported or missing api-version '{q.get('api-version', '')}'; expected '{API_VERSION}'.",
            )
        resource = q.get("resource", "").strip()
        if not resource:
            return _error(400, "The 'resource' query parameter is required.")
        ids = [k for k in _ID_PARAMS if q.get(k)]
        if len(ids) > 1:
            return _error(400, "Specify only one of client_id, mi_res_id, object_id or principal_id.")
        expires_on = int(time.time() + ctx.options.token_ttl_s)
        access_token = "emu-" + secrets.token_urlsafe(24)
        ctx.mint(access_token, resource)
        return JSONResponse(
            {
                "access_token": access_token,
                "expires_on": str(expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": q.get("client_id") or SYSTEM_ASSIGNED_CLIENT_ID,
            }
        )

    return [Route("/msi/token", token, methods=["GET"])]
