"""Object keys. They encode ownership so the sweep can map a key to its row in one query."""

from __future__ import annotations

import uuid

INPUTS = "inputs/"
RESULTS = "results/"


def input_key(job_id: uuid.UUID) -> str:
    return f"{INPUTS}{job_id}"


def result_key(job_id: uuid.UUID, attempt_id: int) -> str:
    # Per attempt: two deliveries racing never overwrite each other's bytes.
    return f"{RESULTS}{job_id}/{attempt_id}.png"
