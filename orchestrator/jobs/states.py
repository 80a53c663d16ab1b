"""Job and attempt states, and the transitions a job may make."""

from __future__ import annotations

import enum


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"  # waiting for its next attempt
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {JobState.RUNNING, JobState.RETRYING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.RETRYING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    # `jobs retry` sends a failed or cancelled job round again.
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
    JobState.SUCCEEDED: frozenset(),
}


def can_transition(old: JobState, new: JobState) -> bool:
    return new in ALLOWED_TRANSITIONS[old]


class AttemptOutcome(str, enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # permanently, or the last attempt
    RETRY = "retry"  # failed, another attempt was scheduled
    CRASHED = "crashed"  # its worker process died; found by the next delivery
    SUPERSEDED = "superseded"  # lost its lease to another delivery; its work was discarded
    CANCELLED = "cancelled"  # the job was cancelled while this attempt ran
    LOST = "lost"  # a paid submission whose reply never arrived: fal may have run it


class SubmitState(str, enum.Enum):
    """Where a remote (fal) attempt's one paid submission stands."""

    SENDING = "sending"  # intent committed; the POST is about to go, or went and no reply yet
    ACCEPTED = "accepted"  # fal answered with a request id, which is stored
    REJECTED = "rejected"  # fal (or the network before sending) refused it: nothing to pay
    UNKNOWN = "unknown"  # the POST may have reached fal, but the reply was lost


class ComputeBasis(str, enum.Enum):
    LOCAL_MEASURED = "local_measured"
    FAL_INFERENCE_TIME = "fal_inference_time"
    MEASURED = "measured"
