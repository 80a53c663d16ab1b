"""Wait for submitted jobs to end (the CLI's ``--wait``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from orchestrator.jobs.producer import Submitted, wait_for
from orchestrator.jobs.states import JobState
from orchestrator.settings import Settings


def wait(settings: Settings, submitted: Sequence[Submitted], *, timeout: float | None = None,
         on_progress: Callable[[dict[uuid.UUID, JobState]], None] | None = None,
         poll_seconds: float = 0.5) -> dict[uuid.UUID, JobState]:
    """Each distinct job's state once all are final (or at the timeout). Inputs with the same
    bytes may share one job: it is waited for once."""
    ids = list(dict.fromkeys(item.job_id for item in submitted))
    return wait_for(ids, settings=settings, timeout=timeout, poll_seconds=poll_seconds,
                    on_progress=on_progress)
