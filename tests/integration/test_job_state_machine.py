"""A property-based state machine over the job service on the real Postgres database.

Hypothesis drives random sequences of the service's state changes — claim, complete, fail,
schedule_retry, cancel, requeue — interleaved with leases that expire under a dead worker on
another host, leases held by a live one, and deliveries that come again from this process
(a crash). Every state the ORM writes to a job is recorded, and after every step:

- each recorded change old → new is in ``ALLOWED_TRANSITIONS`` (no illegal transition, ever);
- the recorded changes chain from the state read before the step to the state read after it;
- a final state changes only through ``requeue`` (the documented ``jobs retry``), to ``queued``;
  ``succeeded`` never changes;
- a step the service refuses (``JobStateError``) leaves the job as it was;
- a delivery whose lease is gone changes nothing; ``succeeded`` ⇔ exactly one result row;
  ``running`` ⇔ a lease, held by its newest attempt, which is running.

A scripted tour through the same checked steps first walks every edge of the table, so the
run provably exercises each one; hypothesis then explores random interleavings (derandomized,
so CI is reproducible).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import event, func, select, update

from orchestrator.backends.base import BackendOutput
from orchestrator.db.models import Attempt, Job, Result
from orchestrator.db.session import session_scope
from orchestrator.errors import BackendRejected, FetchFailed, JobStateError
from orchestrator.jobs import transitions as service
from orchestrator.jobs.states import (
    ALLOWED_TRANSITIONS,
    FINAL_STATES,
    AttemptOutcome,
    ComputeBasis,
    JobState,
)
from orchestrator.jobs.transitions import Busy, Claim, Cost, Pricing, Skip, utcnow
from orchestrator.results.base import StoredBytes
from orchestrator.settings import Settings, load_settings

PRICING = Pricing(Decimal("0.001"), Decimal("0.00111"))
OUTPUT = BackendOutput(data=b"\x89PNG result", content_type="image/png", width=1, height=1,
                       compute_seconds=Decimal("0.5"), compute_basis=ComputeBasis.LOCAL_MEASURED)
N_JOBS = 2


@dataclass
class Recorder:
    """Every state the ORM assigns to a persistent job, in order."""

    changes: list[tuple[uuid.UUID, JobState, JobState]] = field(default_factory=list)
    ever: set[tuple[JobState, JobState]] = field(default_factory=set)

    def __call__(self, target: Job, value: JobState, oldvalue: Any, initiator: Any) -> None:
        if isinstance(oldvalue, JobState) and target.id is not None:
            self.changes.append((target.id, oldvalue, value))
            self.ever.add((oldvalue, value))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    event.listen(Job.state, "set", rec)
    yield rec
    event.remove(Job.state, "set", rec)


class JobLifecycle(RuleBasedStateMachine):
    database_url: str
    recorder: Recorder

    def __init__(self) -> None:
        super().__init__()
        self.settings: Settings = load_settings(
            database_url=self.database_url, max_attempts=6, max_deliveries=3,
            retry_backoff_base_seconds=30, retry_backoff_max_seconds=60, lease_seconds=30,
        )
        self.jobs: list[uuid.UUID] = []
        self.claims: dict[uuid.UUID, list[Claim]] = {}
        self.seen: dict[uuid.UUID, JobState] = {}
        self.due: set[uuid.UUID] = set()  # retrying jobs whose backoff has passed

    # --- helpers ------------------------------------------------------------------------
    def _state(self, job_id: uuid.UUID) -> JobState:
        with session_scope(self.database_url) as session:
            job = session.get(Job, job_id, populate_existing=True)
            assert job is not None
            return job.state

    def _step(self, job_id: uuid.UUID, action: str, fn: Any) -> Any:
        """Run one service call in its own transaction and check what it did to the job."""
        before = self._state(job_id)
        assert before == self.seen[job_id], "the job changed between steps"
        self.recorder.changes.clear()
        refused = False
        outcome: Any = None
        try:
            with session_scope(self.database_url) as session:
                outcome = fn(session)
        except JobStateError:
            refused = True
        after = self._state(job_id)
        changes = [(old, new) for jid, old, new in self.recorder.changes if jid == job_id]
        for old, new in changes:
            assert new in ALLOWED_TRANSITIONS[old], f"{action}: illegal {old.value} -> {new.value}"
        if refused:
            assert after == before, f"{action} was refused but moved the job"
        elif changes:
            assert changes[0][0] == before and changes[-1][1] == after, (action, changes)
            for (_, new), (old, _) in zip(changes, changes[1:], strict=False):
                assert new == old, (action, changes)
        else:
            assert after == before, (action, before, after)
        if before in FINAL_STATES and after != before:
            assert action == "requeue" and after is JobState.QUEUED, (action, before, after)
        assert not (before is JobState.SUCCEEDED and after is not JobState.SUCCEEDED)
        self.seen[job_id] = after
        return outcome

    def _latest_claim(self, job_id: uuid.UUID, stale: bool) -> Claim | None:
        claims = self.claims.get(job_id, [])
        if not claims:
            return None
        return claims[0] if stale else claims[-1]

    # --- rules --------------------------------------------------------------------------
    @initialize()
    def create_jobs(self) -> None:
        with session_scope(self.database_url) as session:
            for i in range(N_JOBS):
                job = Job(backend="local", model="tiny", options={}, source_kind="file",
                          source_name=f"sm-{i}.png", max_attempts=self.settings.retries.max_attempts,
                          enqueued_at=utcnow())
                session.add(job)
                session.flush()
                self.jobs.append(job.id)
                self.seen[job.id] = JobState.QUEUED

    @rule(i=st.integers(0, N_JOBS - 1))
    def claim(self, i: int) -> None:
        job_id = self.jobs[i]
        before = self.seen[job_id]
        decision = self._step(job_id, "claim",
                              lambda s: service.claim(s, job_id, self.settings))
        if isinstance(decision, Claim):
            assert before in (JobState.QUEUED, JobState.RETRYING, JobState.RUNNING)
            assert before is not JobState.RETRYING or job_id in self.due, "a retry ran early"
            self.claims.setdefault(job_id, []).append(decision)
        elif isinstance(decision, Skip) and before in FINAL_STATES:
            assert "already" in decision.reason
        else:
            assert isinstance(decision, (Busy, Skip))

    @rule(i=st.integers(0, N_JOBS - 1), stale=st.booleans())
    def complete(self, i: int, stale: bool) -> None:
        job_id = self.jobs[i]
        claim = self._latest_claim(job_id, stale)
        if claim is None:
            return
        stored = StoredBytes(store="database", location=None, data=OUTPUT.data)
        before = self.seen[job_id]
        done = self._step(job_id, "complete", lambda s: service.complete(
            s, claim, OUTPUT, stored, "0" * 64, PRICING))
        # Only the delivery holding the lease may end the job; a stale one changes nothing.
        assert self.seen[job_id] is (JobState.SUCCEEDED if done else before)

    @rule(i=st.integers(0, N_JOBS - 1), stale=st.booleans())
    def fail(self, i: int, stale: bool) -> None:
        job_id = self.jobs[i]
        claim = self._latest_claim(job_id, stale)
        if claim is None:
            return
        before = self.seen[job_id]
        ok = self._step(job_id, "fail", lambda s: service.fail(
            s, claim, BackendRejected("refused"), Cost(), PRICING))
        assert self.seen[job_id] is (JobState.FAILED if ok else before)

    @rule(i=st.integers(0, N_JOBS - 1), stale=st.booleans())
    def schedule_retry(self, i: int, stale: bool) -> None:
        job_id = self.jobs[i]
        claim = self._latest_claim(job_id, stale)
        if claim is None:
            return
        delay = self._step(job_id, "schedule_retry", lambda s: service.schedule_retry(
            s, claim, FetchFailed("503"), Cost(), PRICING, self.settings))
        if delay is not None:
            assert self.seen[job_id] is JobState.RETRYING
            self.due.discard(job_id)

    @rule(i=st.integers(0, N_JOBS - 1))
    def cancel(self, i: int) -> None:
        job_id = self.jobs[i]
        self._step(job_id, "cancel", lambda s: service.cancel(s, job_id))

    @rule(i=st.integers(0, N_JOBS - 1))
    def requeue(self, i: int) -> None:
        job_id = self.jobs[i]
        self._step(job_id, "requeue", lambda s: service.requeue(s, job_id, self.settings))

    @rule(i=st.integers(0, N_JOBS - 1))
    def retry_time_comes(self, i: int) -> None:
        """The backoff of a retrying job has passed."""
        job_id = self.jobs[i]
        if self.seen[job_id] is not JobState.RETRYING:
            return
        with session_scope(self.database_url) as session:
            session.execute(update(Job).where(Job.id == job_id).values(
                next_attempt_at=utcnow() - timedelta(seconds=1)))
        self.due.add(job_id)

    @precondition(lambda self: bool(self.jobs))
    @rule(i=st.integers(0, N_JOBS - 1), live=st.booleans())
    def held_on_another_host(self, i: int, live: bool) -> None:
        """The running attempt belongs to a worker on another host, which is alive (its lease
        ahead) or died (its lease expired). Either way its deliveries are not ours to drive."""
        job_id = self.jobs[i]
        if self.seen[job_id] is not JobState.RUNNING:
            return
        self.claims.pop(job_id, None)
        expires = utcnow() + timedelta(seconds=60 if live else -1)
        with session_scope(self.database_url) as session:
            session.execute(update(Job).where(Job.id == job_id).values(
                lease_owner=f"other-host:4242:{uuid.uuid4().hex[:12]}", lease_expires_at=expires))
        assert self._state(job_id) is JobState.RUNNING

    # --- invariants ---------------------------------------------------------------------
    @invariant()
    def rows_agree_with_states(self) -> None:
        if not self.jobs:
            return
        with session_scope(self.database_url) as session:
            for job_id in self.jobs:
                job = session.get(Job, job_id, populate_existing=True)
                assert job is not None
                results = session.scalar(select(func.count()).select_from(Result)
                                         .where(Result.job_id == job_id))
                newest = session.scalars(select(Attempt).where(Attempt.job_id == job_id)
                                         .order_by(Attempt.number.desc()).limit(1)).first()
                assert results == (1 if job.state is JobState.SUCCEEDED else 0), job.state
                if job.state is JobState.RUNNING:
                    assert job.lease_owner is not None
                    assert newest is not None and newest.outcome is AttemptOutcome.RUNNING
                else:
                    # (a cancelled job's attempt stays open until its worker reports back)
                    assert job.lease_owner is None, job.state


def _tour(machine: JobLifecycle) -> None:
    """Every edge of the transition table once, through the same checked steps."""
    machine.create_jobs()
    machine.claim(0)                      # queued -> running
    machine.claim(0)                      # running -> running (the first delivery crashed)
    machine.complete(0, stale=True)       # the crashed delivery's result is refused
    machine.schedule_retry(0, stale=False)  # running -> retrying
    machine.claim(0)                      # not due yet: busy
    machine.cancel(0)                     # retrying -> cancelled
    machine.requeue(0)                    # cancelled -> queued
    machine.cancel(0)                     # queued -> cancelled
    machine.requeue(0)
    machine.claim(0)
    machine.schedule_retry(0, stale=False)
    machine.retry_time_comes(0)
    machine.claim(0)                      # retrying -> running
    machine.fail(0, stale=False)          # running -> failed
    machine.requeue(0)                    # failed -> queued
    machine.claim(0)
    machine.cancel(0)                     # running -> cancelled
    machine.complete(0, stale=False)      # the cancelled delivery's result is refused
    machine.requeue(0)
    machine.claim(0)
    machine.held_on_another_host(0, live=True)
    machine.claim(0)                      # held by a live worker elsewhere: busy
    machine.held_on_another_host(0, live=False)
    machine.claim(0)                      # its holder died: a new attempt
    machine.complete(0, stale=False)      # running -> succeeded
    machine.requeue(0)                    # refused: succeeded is final
    machine.cancel(0)                     # refused
    machine.rows_agree_with_states()


def test_no_illegal_job_transition_ever(database_url: str, recorder: Recorder) -> None:
    JobLifecycle.database_url = database_url
    JobLifecycle.recorder = recorder
    _tour(JobLifecycle())
    run_state_machine_as_test(JobLifecycle, settings=settings(
        max_examples=40, stateful_step_count=30, deadline=None, derandomize=True,
        suppress_health_check=list(HealthCheck), database=None,
    ))
    # The run went down every path of the table, so the checks above were really exercised.
    q, r, t, s, f, c = (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING,
                        JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
    wanted = {(q, r), (q, c), (r, r), (r, t), (r, s), (r, f), (r, c), (t, r), (t, c), (f, q),
              (c, q)}
    assert wanted <= recorder.ever, sorted((a.value, b.value) for a, b in wanted - recorder.ever)
