"""The error replies each route can give, declared in the OpenAPI (fal's `{"detail": ...}`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorBody(BaseModel):
    """fal's error shape: a message, or a list of field errors."""

    detail: str | list[dict[str, Any]]
    error_type: str | None = None


class QueueStatusBody(BaseModel):
    status: str


def errors(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    texts = {
        400: "bad request",
        401: "missing, invalid or revoked API key",
        403: "this key may not do that",
        404: "no such request (or another tenant's)",
        409: "the job's state does not allow it",
        413: "the body or the image is over the size limit",
        422: "the input cannot be used (fal's validation error shape, or a message)",
        429: "over the per-key or per-tenant rate limit (see Retry-After)",
        431: "the request headers are over ORCH_API_MAX_HEADER_BYTES",
        499: "the request was cancelled",
        500: "the run failed (runner_server_error)",
        503: "not ready",
    }
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": ErrorBody, "description": described.get(f"d{code}", texts[code])}
    return out


AUTH = (401, 429, 431)
QUOTA = "a tenant cap (jobs in flight or stored input bytes) would be exceeded; nothing recorded"
