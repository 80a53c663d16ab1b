"""The HTTP API: fal's queue surface for callers, ``/v1`` for operators.

Errors always have fal's shape, ``{"detail": ...}``; domain errors are mapped to HTTP here,
in one place.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError

from orchestrator.api.fast_submit import FastSubmit
from orchestrator.api.gate import AuthGate, BodyLimit, FailedAuthLimiter
from orchestrator.api.header_limit import HeaderLimit
from orchestrator.api.ratelimit import RateLimiter
from orchestrator.api.request_log import RequestLog
from orchestrator.api.routes import fal_queue, fal_webhook, health, reports, v1
from orchestrator.api.submissions import SubmitBatcher
from orchestrator.console import mount as mount_console
from orchestrator.errors import (
    BackendUnavailable,
    ConfigError,
    IdempotencyConflict,
    InputError,
    InputTooLarge,
    JobNotFound,
    JobStateError,
    OrchestratorError,
    QuotaExceeded,
    RequestError,
    ResultExpired,
    StoreError,
)
from orchestrator.queue.celery_app import publisher_for
from orchestrator.queue.prepare import prepare_broker
from orchestrator.settings import Settings, get_settings

log = logging.getLogger("orchestrator.api")

STATUS_FOR: list[tuple[type[Exception], int]] = [
    (JobNotFound, 404),
    (ResultExpired, 410),
    # The object store is away or refuses us: nothing was accepted, the caller retries.
    (StoreError, 503),
    (IdempotencyConflict, 422),
    (QuotaExceeded, 409),
    (InputTooLarge, 413),
    (InputError, 422),
    (BackendUnavailable, 503),
    (JobStateError, 409),
    (RequestError, 400),
    (ConfigError, 400),
    (OrchestratorError, 400),
]


def _unstorable(request: Request, exc: Exception) -> JSONResponse:
    # e.g. a NUL character in a filter, file name or URL: Postgres text cannot hold it.
    return JSONResponse({"detail": "the request has a value that cannot be stored "
                                   "(such as a NUL character)"}, status_code=422)


def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # A submit is answered only after its row commits, so a submit refused here was not
    # accepted: the caller retries it.
    return JSONResponse({"detail": "the database is unavailable; retry later"}, status_code=503,
                        headers={"Retry-After": "5"})


def _error_response(request: Request, exc: Exception) -> JSONResponse:
    status = next(code for cls, code in STATUS_FOR if isinstance(exc, cls))
    if isinstance(exc, RequestError) and exc.forbidden:
        status = 403
    headers = {"Retry-After": "5"} if isinstance(exc, StoreError) else None
    if isinstance(exc, StoreError):
        log.warning("object store fault: %s", exc)
        # Say what failed, not the store's address or codes: those are for the operator's log.
        detail = "the object store is unavailable; retry later"
    else:
        detail = str(exc)
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    prepare_broker()  # the API publishes job messages
    limiter = RateLimiter(settings.broker.url.get_secret_value(), settings.api.requests_per_second)
    # Every key of one tenant together: more keys do not buy a tenant more throughput.
    tenant_limiter = RateLimiter(settings.broker.url.get_secret_value(),
                                 settings.api.tenant_requests_per_second, scope="tenant")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await limiter.start()
        await tenant_limiter.start()
        try:
            yield
        finally:
            await limiter.stop()
            await tenant_limiter.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="bg-orchestrator",
        version="0.1.0",
        description="Background removal jobs: fal's queue API for fal-ai/imageutils/rembg, "
        "and /v1 for uploads, batches, listing, retries, health and metrics.",
    )
    app.state.settings = settings
    app.state.rate_limiter = limiter
    app.state.tenant_rate_limiter = tenant_limiter
    failures = FailedAuthLimiter(settings.api.auth_failures_per_minute,
                                 settings.api.auth_failure_burst)
    app.state.auth_failures = failures
    app.state.submitter = SubmitBatcher(settings)
    app.add_exception_handler(OrchestratorError, _error_response)
    app.add_exception_handler(DataError, _unstorable)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InterfaceError, _database_unavailable)
    # base64 makes a data URI about 4/3 of its image; leave room for the JSON around it.
    max_body = settings.inputs.max_bytes * 4 // 3 + 64 * 1024
    # Innermost: the submit's common case, answered without FastAPI's request cycle.
    app.add_middleware(FastSubmit)
    app.add_middleware(BodyLimit, large=max_body, small=settings.api.max_small_body_bytes)
    # Before the body limit and the body: a request without a valid key costs no body read.
    app.add_middleware(AuthGate, settings=settings, failures=failures)
    # Before the gate: oversized headers cost no key lookup.
    app.add_middleware(HeaderLimit, max_bytes=settings.api.max_header_bytes)
    app.add_middleware(RequestLog)  # outermost: every reply carries X-Request-Id
    app.include_router(fal_queue.router)
    app.include_router(v1.router)
    app.include_router(reports.router)
    if settings.fal.webhook_url:  # nothing to receive otherwise (issue 14.3)
        app.include_router(fal_webhook.router)
    app.include_router(health.router)
    mount_console(app)  # /console: the ops console, on the same port
    return app


def app_factory() -> Any:
    """For `uvicorn --factory orchestrator.api.app:app_factory` (in each server process)."""
    from orchestrator.observability.logs import configure_logging

    settings = get_settings()
    configure_logging(settings)
    app = create_app(settings)
    publisher_for(settings)  # Celery and kombu imported now, not under the first submit
    # The ~150,000 objects of the loaded modules never die: out of the collector's sight, a
    # full collection no longer walks them (it paused the event loop for tens of ms, the tail
    # of a submit's latency).
    gc.collect()
    gc.freeze()
    return app
