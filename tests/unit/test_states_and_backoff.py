from __future__ import annotations

import itertools

import pytest

from orchestrator.jobs.states import FINAL_STATES, JobState, can_transition
from orchestrator.jobs.transitions import backoff_seconds
from orchestrator.settings import load_settings


def test_final_states_only_leave_through_an_explicit_retry() -> None:
    for old, new in itertools.product(JobState, JobState):
        if old in FINAL_STATES and can_transition(old, new):
            assert old is not JobState.SUCCEEDED
            assert new is JobState.QUEUED


def test_succeeded_is_terminal() -> None:
    assert not any(can_transition(JobState.SUCCEEDED, new) for new in JobState)


def test_queued_cannot_jump_to_succeeded() -> None:
    assert not can_transition(JobState.QUEUED, JobState.SUCCEEDED)
    assert not can_transition(JobState.RETRYING, JobState.SUCCEEDED)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 10, 30])
def test_backoff_grows_exponentially_with_jitter_and_a_cap(
    attempt: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_RETRY_BACKOFF_BASE_SECONDS", "2")
    monkeypatch.setenv("ORCH_RETRY_BACKOFF_MAX_SECONDS", "60")
    settings = load_settings()
    ceiling = min(60.0, 2.0 * 2 ** (attempt - 1))
    samples = [backoff_seconds(attempt, settings) for _ in range(200)]
    assert all(ceiling / 2 <= s <= ceiling for s in samples)
    assert len({round(s, 6) for s in samples}) > 100  # jittered, not a fixed schedule
