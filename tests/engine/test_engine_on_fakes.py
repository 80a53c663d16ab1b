"""The job engine driven directly on the fake backends: no Celery, no worker processes.

Each test records jobs with the producer in the real test database, then plays the worker's
part by calling the engine (an inline delivery, a remote delivery, the poller) and collecting
what it would publish. The fakes' faults (a busy provider, a lost reply, a failed run, an input
error) are set per test, so every path of the engine runs in well under a second.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from PIL import Image
from sqlalchemy import select

from orchestrator import backends
from orchestrator.backends.fake_inline import FakeInlineBackend, fake_cutout
from orchestrator.backends.fake_remote import FakeProvider, FakeRemoteBackend
from orchestrator.commands.cancel import ProviderAnswer, cancel_at_provider
from orchestrator.db.models import Job
from orchestrator.db.session import session_scope
from orchestrator.errors import BackendBusy, CorruptImage, ErrorCode
from orchestrator.jobs import transitions
from orchestrator.jobs.producer import Source, submit
from orchestrator.jobs.remote import attempts
from orchestrator.jobs.remote.poller import RemotePoller
from orchestrator.jobs.remote.submit import submit_delivery
from orchestrator.jobs.runner import run_delivery
from orchestrator.jobs.states import AttemptOutcome, JobState, SubmitState
from orchestrator.results import read_result
from orchestrator.settings import Settings, load_settings
from tests.support.images import subject
from tests.support.wait import wait_until

Published = list[tuple[uuid.UUID, str, float]]
_SOON = timedelta(seconds=1)


def png(size: tuple[int, int] = (48, 32)) -> bytes:
    buf = io.BytesIO()
    subject(size).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings(database_url=env["ORCH_DATABASE_URL"], broker_url=env["ORCH_BROKER_URL"],
                         fake_backends=True, retry_backoff_base_seconds=0.01,
                         retry_backoff_max_seconds=0.05)


@pytest.fixture
def published() -> Published:
    return []


def record(published: Published):  # type: ignore[no-untyped-def]
    def publish(job_id: uuid.UUID, queue: str, countdown: float) -> None:
        published.append((job_id, queue, countdown))
    return publish


def new_job(settings: Settings, backend: str, data: bytes | None = None) -> uuid.UUID:
    [done] = submit([Source("in", data=data if data is not None else png())], settings=settings,
                    backend=backend)
    return done.job_id


def load(settings: Settings, job_id: uuid.UUID) -> Job:
    with session_scope(settings.database.url.get_secret_value()) as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        job.attempts, job.result  # noqa: B018 - load them before the session closes
        session.expunge_all()
        return job


# -- inline -----------------------------------------------------------------------------------


def test_inline_success_stores_the_cutout_and_its_cost(settings: Settings,
                                                       published: Published) -> None:
    data = png()
    job_id = new_job(settings, backends.FAKE_INLINE, data)
    backend = FakeInlineBackend(settings, price_per_second=Decimal("2"))
    report = run_delivery(job_id, settings=settings, backend=backend, publish=record(published))
    assert report.outcome == "succeeded" and not published
    job = load(settings, job_id)
    assert job.state is JobState.SUCCEEDED and job.result is not None
    [attempt] = job.attempts
    assert attempt.outcome is AttemptOutcome.SUCCEEDED
    assert attempt.cost_usd == (attempt.compute_seconds * 2).quantize(Decimal("0.000000001"))
    with Image.open(io.BytesIO(read_result(settings, job.result))) as got:
        expected = fake_cutout(Image.open(io.BytesIO(data)), crop_to_bbox=False)
        assert got.tobytes() == expected.tobytes()


def test_inline_transient_failure_is_retried_then_succeeds(settings: Settings,
                                                           published: Published) -> None:
    job_id = new_job(settings, backends.FAKE_INLINE)
    backend = FakeInlineBackend(settings, failures=[BackendBusy("busy for now")])
    assert run_delivery(job_id, settings=settings, backend=backend,
                        publish=record(published)).outcome == "retry"
    job = load(settings, job_id)
    assert job.state is JobState.RETRYING and job.error_code == ErrorCode.BACKEND_BUSY
    assert published == [(job_id, backends.FAKE_INLINE, pytest.approx(published[0][2]))]
    wait_until(lambda: load(settings, job_id).next_attempt_at <= transitions.utcnow(),
               timeout=5, what="the retry to be due")
    assert run_delivery(job_id, settings=settings, backend=backend,
                        publish=record(published)).outcome == "succeeded"
    job = load(settings, job_id)
    assert [a.outcome for a in sorted(job.attempts, key=lambda a: a.number)] == [
        AttemptOutcome.RETRY, AttemptOutcome.SUCCEEDED]
    assert job.error_code is None


def test_inline_permanent_failure_is_not_retried(settings: Settings, published: Published) -> None:
    job_id = new_job(settings, backends.FAKE_INLINE)
    backend = FakeInlineBackend(settings, failures=[CorruptImage("not an image")])
    assert run_delivery(job_id, settings=settings, backend=backend,
                        publish=record(published)).outcome == "failed"
    job = load(settings, job_id)
    assert job.state is JobState.FAILED and job.error_code == ErrorCode.CORRUPT_IMAGE
    assert not published


def test_a_second_delivery_of_a_finished_job_does_nothing(settings: Settings,
                                                          published: Published) -> None:
    job_id = new_job(settings, backends.FAKE_INLINE)
    backend = FakeInlineBackend(settings)
    run_delivery(job_id, settings=settings, backend=backend, publish=record(published))
    again = run_delivery(job_id, settings=settings, backend=backend, publish=record(published))
    assert again.outcome == "skipped" and backend.runs == 1


# -- remote -----------------------------------------------------------------------------------


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider(latency=0.05)


@pytest.fixture
def remote(settings: Settings, provider: FakeProvider) -> Iterator[FakeRemoteBackend]:
    yield FakeRemoteBackend(settings, provider=provider, price_per_second=Decimal("0.00111"))


def poll_until_final(settings: Settings, backend: FakeRemoteBackend, job_id: uuid.UUID,
                     published: Published) -> Job:
    """Play the poller: claim what is due, poll it, until the job is final."""
    poller = RemotePoller(settings, backend, record(published))

    def step() -> bool:
        with session_scope(settings.database.url.get_secret_value()) as session:
            items = attempts.claim_due_polls(session, backend.name, limit=10, lease_seconds=5,
                                             due_before=transitions.utcnow() + _SOON)
        if items:
            poller.poll_now(items)
        job = load(settings, job_id)
        return job.state.is_final or job.state is JobState.RETRYING

    wait_until(step, timeout=10, interval=0.02, what=f"job {job_id} to leave running")
    return load(settings, job_id)


def test_remote_submits_once_polls_and_stores_the_result(
    settings: Settings, remote: FakeRemoteBackend, provider: FakeProvider, published: Published
) -> None:
    job_id = new_job(settings, backends.FAKE_REMOTE)
    report = submit_delivery(job_id, settings=settings, backend=remote, publish=record(published))
    assert report.outcome == "submitted" and provider.accepted == [report.detail]
    # Delivered again (a worker died after the submit): no second payment, polling resumes.
    again = submit_delivery(job_id, settings=settings, backend=remote, publish=record(published))
    assert again.outcome == "skipped" and len(provider.accepted) == 1
    job = poll_until_final(settings, remote, job_id, published)
    assert job.state is JobState.SUCCEEDED and job.result is not None
    [attempt] = job.attempts
    assert attempt.provider_request_id == provider.accepted[0]
    assert attempt.compute_seconds == Decimal("0.050000")
    assert attempt.cost_usd == Decimal("0.000055500")


def test_a_not_finished_answer_is_written_once_and_a_stale_one_is_dropped(
    settings: Settings, remote: FakeRemoteBackend, provider: FakeProvider, published: Published
) -> None:
    provider.latency = 30.0  # every poll of this test answers "in progress"
    job_id = new_job(settings, backends.FAKE_REMOTE)
    other_id = new_job(settings, backends.FAKE_REMOTE, png((40, 40)))  # other bytes: not merged
    for key in (job_id, other_id):
        assert submit_delivery(key, settings=settings, backend=remote,
                               publish=record(published)).outcome == "submitted"
    url = settings.database.url.get_secret_value()
    with session_scope(url) as session:
        items = attempts.claim_due_polls(session, remote.name, limit=10, lease_seconds=60,
                                         due_before=transitions.utcnow() + _SOON)
    [item] = [i for i in items if i.job_id == job_id]
    assert {i.job_id for i in items} == {job_id, other_id}  # two answers: one statement for both
    before = transitions.utcnow()
    RemotePoller(settings, remote, record(published)).poll_now(items)

    [attempt] = load(settings, job_id).attempts
    [other] = load(settings, other_id).attempts
    assert other.polls == attempt.polls
    assert (attempt.polls, attempt.provider_status) == (item.polls + 1, attempts.IN_PROGRESS)
    assert attempt.first_in_progress_at is not None
    interval = attempts.poll_interval(item.polls + 1, None, remote.policy())
    assert attempt.next_poll_at is not None
    assert before + timedelta(seconds=interval) <= attempt.next_poll_at
    assert attempt.next_poll_at <= transitions.utcnow() + timedelta(seconds=interval)

    # The same answer again, as from a poller whose lease ran out: the row has moved on.
    stale = attempts.PollAnswer(item.attempt_id, item.polls, attempts.IN_QUEUE, 7,
                                transitions.utcnow())
    with session_scope(url) as session:
        attempts.record_statuses(session, [stale], remote.policy())
    [again] = load(settings, job_id).attempts
    assert (again.polls, again.provider_status, again.queue_position) == (
        attempt.polls, attempts.IN_PROGRESS, None)
    assert again.next_poll_at == attempt.next_poll_at
    assert again.first_in_progress_at == attempt.first_in_progress_at


def test_a_job_of_another_backend_on_a_remote_queue_goes_to_its_own_queue(
    settings: Settings, remote: FakeRemoteBackend, provider: FakeProvider, published: Published
) -> None:
    job_id = new_job(settings, backends.FAKE_INLINE)  # e.g. rerouted while its message waited
    report = submit_delivery(job_id, settings=settings, backend=remote, publish=record(published))
    assert report.outcome == "rerouted" and provider.accepted == []
    assert published == [(job_id, backends.FAKE_INLINE, 0)]
    job = load(settings, job_id)
    assert job.state is JobState.QUEUED and job.attempts == []


def test_remote_busy_provider_buys_nothing_and_retries(
    settings: Settings, remote: FakeRemoteBackend, provider: FakeProvider, published: Published
) -> None:
    provider.busy_submits = 1
    job_id = new_job(settings, backends.FAKE_REMOTE)
    assert submit_delivery(job_id, settings=settings, backend=remote,
                           publish=record(published)).outcome == "retry"
    job = load(settings, job_id)
    assert job.state is JobState.RETRYING and job.error_code == ErrorCode.BACKEND_BUSY
    assert job.attempts[0].submit_state is SubmitState.REJECTED and provider.accepted == []
    assert published and published[0][1] == backends.FAKE_REMOTE


def test_remote_lost_reply_is_flagged_a_possible_duplicate(
    settings: Settings, remote: FakeRemoteBackend, provider: FakeProvider, published: Published
) -> None:
    provider.lost_replies = 1
    job_id = new_job(settings, backends.FAKE_REMOTE)
    assert submit_delivery(job_id, settings=settings, backend=remote,
                           publish=record(published)).outcome == "retry"
    job = load(settings, job_id)
    assert job.state is JobState.RETRYING and job.error_code == ErrorCode.SUBMIT_REPLY_LOST
    assert job.attempts[0].outcome is AttemptOutcome.LOST
    assert published[-1][2] == pytest.approx(remote.policy().resubmit_after_seconds)
    wait_until(lambda: load(settings, job_id).next_attempt_at <= transitions.utcnow(),
               timeout=5, what="the resubmit to be due")
    assert submit_delivery(job_id, settings=settings, backend=remote,
                           publish=record(published)).outcome == "submitted"
    job = poll_until_final(settings, remote, job_id, published)
    assert job.state is JobState.SUCCEEDED and job.possible_duplicate
    assert len(provider.accepted) == 2  # the lost one was bought too: that is why it is flagged


def test_remote_failed_run_gets_a_new_attempt(
    settings: Settings, remote: FakeRemoteBackend, provider: FakeProvider, published: Published
) -> None:
    provider.failed_runs = 1
    job_id = new_job(settings, backends.FAKE_REMOTE)
    submit_delivery(job_id, settings=settings, backend=remote, publish=record(published))
    job = poll_until_final(settings, remote, job_id, published)
    assert job.state is JobState.RETRYING and job.error_code == ErrorCode.REMOTE_RUN_FAILED
    assert job.attempts[0].outcome is AttemptOutcome.RETRY
    assert job.attempts[0].cost_usd > 0  # a failed run is billed too
    wait_until(lambda: load(settings, job_id).next_attempt_at <= transitions.utcnow(),
               timeout=5, what="the retry to be due")
    submit_delivery(job_id, settings=settings, backend=remote, publish=record(published))
    assert poll_until_final(settings, remote, job_id, published).state is JobState.SUCCEEDED


def test_remote_bad_input_fails_before_paying(
    settings: Settings, remote: FakeRemoteBackend, provider: FakeProvider, published: Published
) -> None:
    job_id = new_job(settings, backends.FAKE_REMOTE, b"definitely not an image")
    assert submit_delivery(job_id, settings=settings, backend=remote,
                           publish=record(published)).outcome == "failed"
    job = load(settings, job_id)
    assert job.state is JobState.FAILED and job.error_code == ErrorCode.CORRUPT_IMAGE
    assert provider.accepted == []


def test_remote_poll_errors_back_off_then_recover(
    settings: Settings, remote: FakeRemoteBackend, provider: FakeProvider, published: Published
) -> None:
    provider.status_errors = 3
    job_id = new_job(settings, backends.FAKE_REMOTE)
    submit_delivery(job_id, settings=settings, backend=remote, publish=record(published))
    job = poll_until_final(settings, remote, job_id, published)
    assert job.state is JobState.SUCCEEDED and job.attempts[0].poll_errors == 3


def test_cancel_reaches_the_provider(
    settings: Settings, provider: FakeProvider, published: Published
) -> None:
    provider.latency = 30
    backend = backends.get_remote(backends.FAKE_REMOTE, settings)
    assert isinstance(backend, FakeRemoteBackend)
    backend.provider = provider
    job_id = new_job(settings, backends.FAKE_REMOTE)
    report = submit_delivery(job_id, settings=settings, backend=backend, publish=record(published))
    assert (cancel_at_provider(settings, backends.FAKE_REMOTE, report.detail)
            is ProviderAnswer.CANCELLED)
    assert provider.requests[report.detail].cancelled
    with session_scope(settings.database.url.get_secret_value()) as session:
        transitions.cancel(session, job_id)
    assert load(settings, job_id).state is JobState.CANCELLED


def test_a_job_cancelled_while_its_submit_is_in_the_air_is_cancelled_at_the_provider(
    settings: Settings, provider: FakeProvider, published: Published
) -> None:
    provider.latency = 30
    url = settings.database.url.get_secret_value()

    class CancelledMeanwhile(FakeRemoteBackend):
        def submit(self, payload, *, callback_url):  # type: ignore[no-untyped-def]
            accepted = super().submit(payload, callback_url=callback_url)
            with session_scope(url) as session:  # an operator's cancel, between POST and reply
                transitions.cancel(session, job_id)
            return accepted

    backend = CancelledMeanwhile(settings, provider=provider)
    job_id = new_job(settings, backends.FAKE_REMOTE)
    report = submit_delivery(job_id, settings=settings, backend=backend, publish=record(published))

    assert report.outcome == "submitted"
    assert provider.requests[report.detail].cancelled
    job = load(settings, job_id)
    assert job.state is JobState.CANCELLED
    assert job.attempts[0].provider_request_id == report.detail  # its cost can still be found


def test_a_paid_submit_lets_go_of_its_own_lease_only(settings: Settings) -> None:
    job_id = new_job(settings, backends.FAKE_REMOTE)
    url = settings.database.url.get_secret_value()
    backend = backends.get_remote(backends.FAKE_REMOTE, settings)
    with session_scope(url) as session:
        claim = attempts.claim_submit(session, job_id, settings, backend.policy())
    assert isinstance(claim, transitions.Claim)
    with session_scope(url) as session:  # another delivery has taken the lease meanwhile
        job = session.get(Job, job_id)
        assert job is not None and job.lease_owner == str(claim.owner)
        job.lease_owner = "someone-else"
    with session_scope(url) as session:
        assert attempts.record_accepted(session, claim, "req-1", attempts.IN_QUEUE, 3,
                                        backend.policy())
    job = load(settings, job_id)
    assert job.lease_owner == "someone-else" and job.lease_expires_at is not None
    assert (job.attempts[0].provider_request_id, job.attempts[0].queue_position) == ("req-1", 3)

    with session_scope(url) as session:
        session.get(Job, job_id).lease_owner = str(claim.owner)  # type: ignore[union-attr]
    with session_scope(url) as session:
        assert attempts.record_accepted(session, claim, "req-1", attempts.IN_QUEUE, 3,
                                        backend.policy())
    job = load(settings, job_id)
    assert job.lease_owner is None and job.lease_expires_at is None


def test_reconciler_closes_the_attempt_a_dead_worker_left_running(settings: Settings) -> None:
    """Cancelled while running, and the worker died before it noticed: the reconciler closes
    the attempt once the job has been quiet for two leases (found by the state machine)."""
    from orchestrator.jobs.reconciler import Reconciler

    job_id = new_job(settings, backends.FAKE_INLINE)
    with session_scope(settings.database.url.get_secret_value()) as session:
        claim = transitions.claim(session, job_id, settings)
        assert isinstance(claim, transitions.Claim)
    with session_scope(settings.database.url.get_secret_value()) as session:
        transitions.cancel(session, job_id)
    reconciler = Reconciler(settings, confirm_passes=1)
    try:
        assert reconciler.run_pass().closed == 0  # just cancelled: its worker may still close it
        with session_scope(settings.database.url.get_secret_value()) as session:
            job = session.get(Job, job_id)
            assert job is not None and job.finished_at is not None
            job.finished_at -= timedelta(seconds=2 * settings.retries.lease_seconds
                                         + settings.reconciler.stale_after_seconds + 1)
        assert reconciler.run_pass().closed == 1
    finally:
        reconciler.close()
    [attempt] = load(settings, job_id).attempts
    assert attempt.outcome is AttemptOutcome.CANCELLED and attempt.finished_at is not None
    assert attempt.error_code == ErrorCode.WORKER_LOST and attempt.cost_usd == 0
