"""Liveness, readiness (database, broker, each backend) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from orchestrator import backends
from orchestrator.api.deps import SettingsDep, metrics_caller
from orchestrator.api.metrics import scrape
from orchestrator.api.responses import AUTH, errors
from orchestrator.db.session import get_engine
from orchestrator.jobs.availability import unavailable_reason
from orchestrator.queue import broker

router = APIRouter(tags=["operations"])


@router.get("/.well-known/jwks.json")
def webhook_jwks(settings: SettingsDep) -> dict[str, object]:
    """The public key that signs webhooks (verify them as fal's, with this JWKS)."""
    from orchestrator.webhooks.signing import jwks

    return jwks(settings)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "the database or the broker is down"}})
def readyz(settings: SettingsDep) -> JSONResponse:
    """Ready to take jobs: the database and the broker answer; each backend's availability."""
    checks: dict[str, Any] = {}
    try:
        with get_engine(settings.database.url.get_secret_value()).connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        broker.ping(settings)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unavailable: {type(exc).__name__}"
    states = {}
    for name in backends.offered(settings):
        if not backends.is_remote(name):
            states[name] = "ok"  # runs in workers; the API does not load models
            continue
        reason = unavailable_reason(name, settings)
        states[name] = "ok" if reason is None else f"unavailable: {reason}"
    checks["backends"] = states
    ready = checks["database"] == "ok" and checks["broker"] == "ok"
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, dependencies=[Depends(metrics_caller)],
            responses=errors(*AUTH, 403))
def metrics(settings: SettingsDep) -> Response:
    """Prometheus metrics: jobs by state and backend, latency, queue depth, cost (every
    tenant's: the metrics key or an admin key)."""
    return Response(scrape(settings), media_type=CONTENT_TYPE_LATEST)
