"""``auto`` routing: fal or local per job, chosen at submit time from what the system knows
(local queue depth × recent seconds per job against a deadline, fal's availability and recent
error rate, circuit breakers, the fal budget left). The decision and its inputs are stored on the
job (``jobs.routing``); ``jobs.requested_backend`` says it was ``auto``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from orchestrator.db.session import session_scope
from orchestrator.routing.policy import Decision, decide, plan
from orchestrator.routing.signals import Signals, gather
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from orchestrator.db.models import Job
    from orchestrator.jobs.producer import Source, Submitted

AUTO = "auto"


def submit_auto(
    sources: Iterable[Source],
    *,
    settings: Settings,
    client: str = "default",
    idempotency_key: str | None = None,
    deadline_seconds: float | None = None,
    **options: Any,
) -> list[Submitted]:
    """Decide each job's backend, then record and publish it there (the producer's ``submit``
    for ``backend="auto"``)."""
    from orchestrator.jobs.producer import submit

    items = list(sources)
    deadline = deadline_seconds or settings.routing.auto_deadline_seconds
    with session_scope(settings.database.url.get_secret_value()) as session:
        signals = gather(session, settings, client)
    decisions = plan(signals, len(items), deadline=deadline,
                     max_error_rate=settings.routing.auto_fal_max_error_rate)
    out: list[Submitted] = []
    for source, decision in zip(items, decisions):
        key = idempotency_key
        if key is not None and len(items) > 1:
            key = f"{idempotency_key}:{source.name}"
        out.extend(submit([source], settings=settings, backend=decision.backend, client=client,
                          idempotency_key=key, requested_backend=AUTO,
                          routing=decision.as_dict(signals), **options))
    return out


def reroute(job: Job, to: str, reason: str, settings: Settings) -> None:
    """Move a not-yet-submitted auto job to another backend (the caller publishes it there)."""
    from orchestrator.backends import backend_class

    job.routing = {**(job.routing or {}), "decision": to, "rerouted": {
        "from": job.backend, "to": to, "reason": reason, "at": datetime.now(UTC).isoformat()}}
    job.backend = to
    job.model = backend_class(to).model_label(settings)


__all__ = ["AUTO", "Decision", "Signals", "decide", "gather", "plan", "reroute", "submit_auto"]
