"""Liveness, readiness, metrics and the model list."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app import __version__
from app.api.deps import PrincipalDep, SettingsDep, StoreDep, access
from app.errors import ModelNotFoundError, StoreUnavailableError
from app.state.watch import StoreWatch

router = APIRouter()
log = logging.getLogger("agent_bridge.health")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


_PROBE = f"{socket.gethostname()}:{os.getpid()}"


@router.get("/readyz")
async def readyz(request: Request, settings: SettingsDep, store: StoreDep) -> JSONResponse:
    """Ready when the store's real path works: a write and a read of this process's probe key (on a
    cluster, through the slot map), and the store has not lost its data (the registry marker). Redis's
    eviction policy is reported (`redis.maxmemory_policy`, `redis.evicting`); it fails readiness only
    with `redis.require_noeviction`. Clients get a generic word; what failed goes to the log."""
    checks: dict[str, Any] = {"config": {"ok": True, "routes": len(settings.routes)}}
    watch: StoreWatch = request.app.state.watch
    try:
        ok = await store.probe(_PROBE)
        checks["redis"] = {"ok": ok} if ok else {"ok": False, "error": "the state store did not keep a write"}
        if not ok:
            log.warning("readyz: the probe key read back a different value")
        report = await watch.check()
        checks["redis"]["maxmemory_policy"] = report.policy
        checks["redis"]["evicting"] = report.evicting
        if report.evicting and watch.require_noeviction:
            checks["redis"].update(ok=False, error=f"maxmemory-policy is {report.policy}, not noeviction")
        if report.marker.lost:
            checks["registry"] = {"ok": False, "error": f"the state store lost its data: {report.marker.reason}"}
            checks["registry"]["lost_at"] = report.marker.lost_at
        else:
            checks["registry"] = {"ok": True}
    except StoreUnavailableError:
        checks["redis"] = {"ok": False, "error": "the state store is unavailable"}  # details: the store's log
    ready = all(c["ok"] for c in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", dependencies=[Depends(access("metrics_auth"))])
async def metrics(request: Request, store: StoreDep) -> Response:
    components = request.app.state.components
    try:
        components.metrics.threads_live.set(await store.count_threads())
    except StoreUnavailableError:
        pass  # the store's error counter says why
    return Response(components.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def models(request: Request, settings: SettingsDep, principal: PrincipalDep) -> dict[str, Any]:
    created = int(request.app.state.started_at)
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": f"azure-{route.backend}"}
            for name, route in settings.routes.items()
            if principal.may_use(name)
        ],
    }


@router.get("/v1/models/{model_id:path}")
async def model(model_id: str, request: Request, settings: SettingsDep, principal: PrincipalDep) -> dict[str, Any]:
    route = settings.route(model_id)
    if route is None or not principal.may_use(model_id):
        raise ModelNotFoundError(
            f"The model '{model_id}' does not exist or you do not have access to it.", param="model"
        )
    created = int(request.app.state.started_at)
    return {"id": model_id, "object": "model", "created": created, "owned_by": f"azure-{route.backend}"}
