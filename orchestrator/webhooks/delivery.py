"""Deliver a finished job's webhook: fal's body, fal's signature scheme, retried with backoff."""

from __future__ import annotations

import json
import logging
import random
import uuid
from typing import Any

from orchestrator.db.models import Job
from orchestrator.db.session import session_scope
from orchestrator.errors import InputUnreachable
from orchestrator.images.fetch import post_json
from orchestrator.jobs.states import JobState
from orchestrator.settings import Settings
from orchestrator.storage.results import download_url
from orchestrator.webhooks.signing import signed_headers

log = logging.getLogger("orchestrator.webhooks")

MAX_DELIVERIES = 10  # fal: "10 times in the span of 2 hours"


def webhook_body(job: Job, settings: Settings) -> dict[str, Any]:
    base: dict[str, Any] = {"request_id": str(job.id), "gateway_request_id": str(job.id)}
    if job.state is JobState.SUCCEEDED and job.result is not None:
        r = job.result
        # Presigned from the object store; else the API's public address; else (none
        # configured) the bytes themselves, as fal's sync_mode does.
        url = download_url(settings, job, settings.api.public_url)
        image = {"url": url, "content_type": r.content_type, "file_name": f"{job.source_name}.png",
                 "file_size": r.size_bytes, "width": r.width, "height": r.height}
        return {**base, "status": "OK", "payload": {"image": image}}
    return {**base, "status": "ERROR", "error": job.error_message or job.state.value,
            "payload": {"detail": job.error_message or job.state.value, "error_type": job.error_code}}


def deliver(job_id: uuid.UUID, settings: Settings) -> bool:
    """Send the webhook once; True when the receiver acknowledged it (2xx), or it never can."""
    with session_scope(settings.database.url.get_secret_value()) as session:
        job = session.get(Job, job_id)
        if job is None or not job.webhook_url or not job.state.is_final:
            return True
        url, client = job.webhook_url, job.client
        body = json.dumps(webhook_body(job, settings), separators=(",", ":")).encode()
    headers = signed_headers(settings, request_id=str(job_id), user_id=client, body=body)
    try:
        status = post_json(url, body, headers, timeout=15.0,
                           allow_hosts=frozenset(settings.inputs.webhook_allow_hosts))
    except InputUnreachable as exc:
        log.warning("webhook for job %s refused: %s", job_id, exc)
        return True  # a URL that points inside the network will never be allowed
    except Exception as exc:
        log.info("webhook for job %s failed: %s", job_id, exc)
        return False
    log.info("webhook for job %s answered %d", job_id, status)
    return 200 <= status < 300


def retry_delay(attempt: int) -> float:
    """~30 s, 1 min, 2 min … capped at 15 min: ten tries span about two hours, as fal's do."""
    ceiling = min(900.0, 30.0 * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)
