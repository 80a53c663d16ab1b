"""A job, its attempts and its result as plain data (for `jobs show --json` and `/v1`)."""

from __future__ import annotations

from typing import Any

from orchestrator.db.models import Job


def job_dict(job: Job, *, with_attempts: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(job.id),
        "state": job.state.value,
        "backend": job.backend,
        "requested_backend": job.requested_backend or job.backend,
        "model": job.model,
        "options": job.options,
        "client": job.client,
        "input": job.source_url or job.source_name,
        "input_sha256": job.input_sha256,
        "idempotency_key": job.idempotency_key,
        "attempts": job.attempt_count,
        "deliveries": job.deliveries,
        "crashes": job.crashes,
        "possible_duplicate": job.possible_duplicate,
        "deduplicated_from": str(job.deduplicated_from) if job.deduplicated_from else None,
        "dedup_attached": job.dedup_attached,
        "error_type": job.error_type,
        "error": job.error_message,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "next_attempt_at": job.next_attempt_at,
    }
    if job.result is not None:
        r = job.result
        out["result"] = {
            "content_type": r.content_type,
            "sha256": r.sha256,
            "size_bytes": r.size_bytes,
            "width": r.width,
            "height": r.height,
            "store": r.store,
            "cropped": r.cropped,
            "expired_at": r.expired_at,  # set when retention deleted the bytes
        }
    if with_attempts:
        out["routing"] = job.routing  # auto: the decision and what it was made on
        out["attempt_log"] = [
            {
                "number": a.number,
                "outcome": a.outcome.value,
                "worker": a.worker,
                "started_at": a.started_at,
                "finished_at": a.finished_at,
                "error_type": a.error_type,
                "error": a.error_message,
                "compute_seconds": a.compute_seconds,
                "compute_basis": a.compute_basis.value if a.compute_basis else None,
                "cost_usd": a.cost_usd,
                "fal_equivalent_usd": a.fal_equivalent_usd,
                "submit_state": a.submit_state.value if a.submit_state else None,
                "provider_request_id": a.provider_request_id,
                "provider_status": a.provider_status,
            }
            for a in job.attempts
        ]
    return out
