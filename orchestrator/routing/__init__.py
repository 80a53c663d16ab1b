"""``auto`` routing: fal or local per job, chosen at submit time from what the system knows
(local queue depth × recent seconds per job against a deadline, fal's availability and recent
error rate, circuit breakers, the fal budget left). The decision and its inputs are stored on the
job (``jobs.routing``); ``jobs.requested_backend`` says it was ``auto``.

Routing decides; orchestrator.commands.submit applies the decisions; the producer records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from orchestrator.routing.policy import Decision, decide, plan
from orchestrator.routing.signals import Signals, gather
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from orchestrator.db.models import Job

AUTO = "auto"


def reroute(job: Job, to: str, reason: str, settings: Settings) -> None:
    """Move a not-yet-submitted auto job to another backend (the caller publishes it there)."""
    from orchestrator.backends import backend_class

    job.routing = {**(job.routing or {}), "decision": to, "rerouted": {
        "from": job.backend, "to": to, "reason": reason, "at": datetime.now(UTC).isoformat()}}
    job.backend = to
    job.model = backend_class(to).model_label(settings)


__all__ = ["AUTO", "Decision", "Signals", "decide", "gather", "plan", "reroute"]
