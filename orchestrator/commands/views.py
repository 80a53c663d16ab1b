"""What commands return: jobs, attempts and results as typed values (no ORM rows escape)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from orchestrator.db.models import Attempt, Job


@dataclass(frozen=True)
class ResultMeta:
    content_type: str
    sha256: str
    size_bytes: int
    width: int
    height: int
    store: str
    cropped: bool
    expired_at: datetime | None = None  # set when retention deleted the bytes
    url: str | None = None  # a presigned download URL, when an object store holds the bytes

    def to_dict(self) -> dict[str, Any]:
        out = {"content_type": self.content_type, "sha256": self.sha256,
               "size_bytes": self.size_bytes, "width": self.width, "height": self.height,
               "store": self.store, "cropped": self.cropped, "expired_at": self.expired_at}
        if self.url is not None:
            out["url"] = self.url
        return out


def plain_decimal(value: Decimal | None) -> str | None:
    """A decimal as a plain string ("0.000000000", never "0E-9"); exact, so money stays money
    (FastAPI's encoder would make a float of a Decimal)."""
    return None if value is None else format(value, "f")


@dataclass(frozen=True)
class AttemptView:
    number: int
    outcome: str
    worker: str
    started_at: datetime
    finished_at: datetime | None
    error_code: str | None
    error: str | None
    compute_seconds: Decimal | None
    compute_basis: str | None
    cost_usd: Decimal | None
    fal_equivalent_usd: Decimal | None
    submit_state: str | None
    provider_request_id: str | None
    provider_status: str | None

    @classmethod
    def of(cls, a: Attempt) -> AttemptView:
        return cls(
            number=a.number, outcome=a.outcome.value, worker=a.worker, started_at=a.started_at,
            finished_at=a.finished_at, error_code=a.error_code, error=a.error_message,
            compute_seconds=a.compute_seconds,
            compute_basis=a.compute_basis.value if a.compute_basis else None,
            cost_usd=a.cost_usd, fal_equivalent_usd=a.fal_equivalent_usd,
            submit_state=a.submit_state.value if a.submit_state else None,
            provider_request_id=a.provider_request_id, provider_status=a.provider_status,
        )

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for name in ("compute_seconds", "cost_usd", "fal_equivalent_usd"):
            out[name] = plain_decimal(out[name])
        return out


@dataclass(frozen=True)
class JobView:
    """A job as callers see it. ``attempts_detail`` and ``routing`` are filled by ``show``."""

    id: uuid.UUID
    state: str
    backend: str
    requested_backend: str
    model: str
    options: dict[str, Any]
    client: str
    input: str
    input_sha256: str | None
    idempotency_key: str | None
    attempts: int
    deliveries: int
    crashes: int
    possible_duplicate: bool
    deduplicated_from: uuid.UUID | None
    dedup_attached: int
    error_code: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    result: ResultMeta | None
    detailed: bool = False
    routing: dict[str, Any] | None = None
    attempt_log: tuple[AttemptView, ...] = ()

    @classmethod
    def of(cls, job: Job, *, detailed: bool = False, result_url: str | None = None) -> JobView:
        r = job.result
        result = None if r is None else ResultMeta(
            content_type=r.content_type, sha256=r.sha256, size_bytes=r.size_bytes,
            width=r.width, height=r.height, store=r.store, cropped=r.cropped,
            expired_at=r.expired_at, url=result_url)
        return cls(
            id=job.id, state=job.state.value, backend=job.backend,
            requested_backend=job.requested_backend or job.backend, model=job.model,
            options=dict(job.options), client=job.client,
            input=job.source_url or job.source_name, input_sha256=job.input_sha256,
            idempotency_key=job.idempotency_key, attempts=job.attempt_count,
            deliveries=job.deliveries, crashes=job.crashes,
            possible_duplicate=job.possible_duplicate, deduplicated_from=job.deduplicated_from,
            dedup_attached=job.dedup_attached, error_code=job.error_code,
            error=job.error_message, created_at=job.created_at, started_at=job.started_at,
            finished_at=job.finished_at, next_attempt_at=job.next_attempt_at, result=result,
            detailed=detailed, routing=job.routing if detailed else None,
            attempt_log=tuple(AttemptView.of(a) for a in job.attempts) if detailed else (),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``jobs show --json`` and ``/v1/jobs`` (unchanged)."""
        out: dict[str, Any] = {
            "id": str(self.id), "state": self.state, "backend": self.backend,
            "requested_backend": self.requested_backend, "model": self.model,
            "options": self.options, "client": self.client, "input": self.input,
            "input_sha256": self.input_sha256, "idempotency_key": self.idempotency_key,
            "attempts": self.attempts, "deliveries": self.deliveries, "crashes": self.crashes,
            "possible_duplicate": self.possible_duplicate,
            "deduplicated_from": str(self.deduplicated_from) if self.deduplicated_from else None,
            "dedup_attached": self.dedup_attached, "error_code": self.error_code,
            "error": self.error, "created_at": self.created_at, "started_at": self.started_at,
            "finished_at": self.finished_at, "next_attempt_at": self.next_attempt_at,
        }
        if self.result is not None:
            out["result"] = self.result.to_dict()
        if self.detailed:
            out["routing"] = self.routing
            out["attempt_log"] = [a.to_dict() for a in self.attempt_log]
        return out


@dataclass(frozen=True)
class JobPage:
    """One page of a listing, newest first; ``next_cursor`` continues it (None: the end)."""

    jobs: list[JobView]
    next_cursor: str | None


@dataclass(frozen=True)
class ResultFile:
    """A result's bytes, or (``url`` set, ``data`` empty) where the object store serves them."""

    job_id: uuid.UUID
    data: bytes
    content_type: str
    url: str | None = None
