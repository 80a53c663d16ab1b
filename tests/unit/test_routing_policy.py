"""The auto policy as a pure function of its signals."""

from __future__ import annotations

import dataclasses

from orchestrator.routing.policy import decide, plan
from orchestrator.routing.signals import Breaker, Signals

CLOSED = Breaker(open=False, failures_in_a_row=0, last_failure_at=None)
OPEN = Breaker(open=True, failures_in_a_row=5, last_failure_at="2026-11-28T09:00:00+00:00")
CALM = Signals(local_depth=0, local_seconds_per_job=2.0, local_parallelism=1, local_breaker=CLOSED,
               fal_unavailable=None, fal_error_rate=0.0, fal_recent_attempts=10,
               fal_breaker=CLOSED, fal_budget_blocked=None, fal_budget_left_usd=None)


def _decide(deadline: float = 10, **changes: object) -> tuple[str, str]:
    d = decide(dataclasses.replace(CALM, **changes), deadline=deadline, max_error_rate=0.5)
    return d.backend, d.reason


def test_an_idle_local_pool_gets_the_job() -> None:
    backend, reason = _decide()
    assert backend == "local" and "fits" in reason


def test_a_deep_local_queue_sends_the_job_to_fal() -> None:
    backend, reason = _decide(local_depth=10)  # 11 × 2 s > 10 s
    assert backend == "fal" and "exceeds the 10 s deadline" in reason
    assert _decide(local_depth=10, local_parallelism=4)[0] == "local"  # 11 × 2 / 4 = 5.5 s


def test_a_deep_queue_stays_local_when_fal_cannot_be_used() -> None:
    for change, words in [
        ({"fal_unavailable": "FAL_KEY is not set"}, "FAL_KEY is not set"),
        ({"fal_budget_blocked": "the fal daily budget of $1.00 … is used up"}, "budget"),
        ({"fal_breaker": OPEN}, "circuit is open"),
        ({"fal_error_rate": 0.6}, "60% of fal's last 10 attempts failed"),
    ]:
        backend, reason = _decide(local_depth=10, **change)
        assert backend == "local" and words in reason, (change, reason)


def test_an_open_local_circuit_sends_work_to_fal_while_fal_is_usable() -> None:
    assert _decide(local_breaker=OPEN)[0] == "fal"
    assert _decide(local_breaker=OPEN, fal_unavailable="no key")[0] == "local"


def test_a_batch_fills_the_local_pool_up_to_the_deadline_then_goes_to_fal() -> None:
    decisions = plan(CALM, 8, deadline=10, max_error_rate=0.5)
    assert [d.backend for d in decisions] == ["local"] * 5 + ["fal"] * 3  # 5 × 2 s = 10 s
