"""The reconciler: re-drive, from Postgres, every job whose state stopped advancing.

Postgres is the source of truth and Redis only rings the bell, so a bell that never rang (a
publish that failed after the row committed), rang into a void (Redis restarted empty,
FLUSHALL) or whose listener died (a SIGKILLed worker's message sits in Redis's ``unacked``
hash until the visibility timeout) must be rung again. One pass:

1. **Waiting jobs without a message**: ``queued`` jobs (and ``retrying`` jobs whose retry is
   due) older than ``reconcile_stale_after_seconds`` whose id is in no message in Redis (the
   queue lists, then the ``unacked`` hash, where messages held by workers live, countdowns
   included) are re-published.
2. **Expired leases**: ``running`` jobs whose lease expired that long ago are re-published; the
   delivery's ``claim`` marks the dead attempt crashed (a fal attempt caught mid-submit: lost)
   and runs the job again, or resumes polling a request fal already accepted.
3. **Broken poll chains**: accepted fal requests overdue for a poll by that long (no poller has
   taken them) are polled here, by request id, when this process has ``FAL_KEY``.

Re-publishing a job that is in fact fine is harmless: ``claim`` skips a finished job and hands a
job under a live lease back with a countdown. To keep such duplicates rare anyway, steps 1 and 2
act on a job only when two passes in a row saw it stuck in the same state (so a heartbeat that
resumes after a database outage wins), and never more often than once per stale period
(``jobs.redriven_at``).

Only one reconciler acts at a time: each pass holds a Postgres advisory lock
(``pg_try_advisory_xact_lock``); a process that does not get it skips that pass.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import Engine, create_engine, exists, func, or_, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from orchestrator import backends
from orchestrator.db.models import Attempt, Job
from orchestrator.jobs import transitions
from orchestrator.jobs.availability import unavailable_reason
from orchestrator.jobs.remote import attempts as remote_attempts
from orchestrator.jobs.remote.attempts import PollItem
from orchestrator.jobs.states import AttemptOutcome, JobState, SubmitState
from orchestrator.jobs.transitions import utcnow
from orchestrator.queue.broker import is_redis, sqla_messages
from orchestrator.queue.celery_app import QUEUE_NAMES, publish_run, publisher_for
from orchestrator.settings import Settings
from orchestrator.storage.retention import GcSchedule

log = logging.getLogger("orchestrator.reconciler")

# pg_try_advisory_xact_lock key: any constant the application uses for nothing else.
ADVISORY_LOCK_KEY = 0x6F72636872656331  # "orchrec1"
BATCH = 5000
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# kombu's Redis transport: one list per queue and priority step, held messages in a hash.
_PRIORITY_STEPS = (0, 3, 6, 9)
_PRIORITY_SEP = "\x06\x16"
_UNACKED_KEY = "unacked"
_UNACKED_INDEX_KEY = "unacked_index"  # delivery tag -> when a worker took the message

Publish = Callable[[uuid.UUID, str], None]


@dataclass
class PassReport:
    ran: bool = True  # False: another reconciler held the lock
    republished: list[uuid.UUID] = field(default_factory=list)  # waiting, no message in Redis
    redriven: list[uuid.UUID] = field(default_factory=list)  # running, lease expired
    polled: int = 0  # overdue fal requests polled by this pass
    closed: int = 0  # running attempts of ended jobs whose worker is gone, closed
    overdue_polls: int = 0  # overdue fal requests seen
    suspects: int = 0  # stuck on this pass, acted on if still stuck on the next
    messages_seen: int = 0  # messages scanned in Redis
    broker_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ran": self.ran,
            "republished": [str(j) for j in self.republished],
            "redriven": [str(j) for j in self.redriven],
            "polled": self.polled,
            "closed": self.closed,
            "overdue_polls": self.overdue_polls,
            "suspects": self.suspects,
            "messages_seen": self.messages_seen,
            "broker_error": self.broker_error,
        }

    def acted(self) -> bool:
        return bool(self.republished or self.redriven or self.polled or self.closed)


@dataclass
class BrokerView:
    """Job ids in messages in Redis: waiting in a queue list, or held by a worker lately."""

    queued: set[str]
    held: set[str]
    messages: int


def job_ids_in_broker(broker_url: str, *, held_within: float) -> BrokerView:
    """Read every queue list, then the ``unacked`` entries delivered within ``held_within``
    seconds (the order matters: a message moves from a list to ``unacked`` when a worker
    takes it, so reading in that order cannot miss one in flight between the two).

    An older ``unacked`` entry is not counted: a live worker runs what it takes within a
    countdown, and a dead worker's entries come back only after the visibility timeout.
    """
    if not is_redis(broker_url):
        return _job_ids_in_sqla_broker(broker_url, held_within=held_within)
    client = redis.Redis.from_url(broker_url, socket_timeout=10, socket_connect_timeout=5)
    view = BrokerView(set(), set(), 0)
    try:
        for queue in QUEUE_NAMES:
            for step in _PRIORITY_STEPS:
                key = queue if step == 0 else f"{queue}{_PRIORITY_SEP}{step}"
                start = 0
                while True:
                    chunk: list[bytes] = client.lrange(key, start, start + 999)  # type: ignore[assignment]
                    for raw in chunk:
                        view.queued.update(m.decode() for m in _UUID.findall(raw))
                    view.messages += len(chunk)
                    if len(chunk) < 1000:
                        break
                    start += 1000
        since = time.time() - held_within
        tags: list[bytes] = client.zrangebyscore(_UNACKED_INDEX_KEY, since, "+inf")  # type: ignore[assignment]
        for offset in range(0, len(tags), 1000):
            held: list[bytes | None] = client.hmget(_UNACKED_KEY, tags[offset:offset + 1000])  # type: ignore[assignment]
            for entry in held:
                if entry is not None:
                    view.held.update(m.decode() for m in _UUID.findall(entry))
                    view.messages += 1
    finally:
        client.close()
    return view


def _job_ids_in_sqla_broker(broker_url: str, *, held_within: float) -> BrokerView:
    """The embedded broker (kombu's SQLAlchemy transport): waiting messages are its visible
    rows; a message a worker took stays as an invisible row (after its ack too), so only those
    sent within ``held_within`` seconds count as held."""
    view = BrokerView(set(), set(), 0)
    for payload, visible, age in sqla_messages(broker_url, QUEUE_NAMES):
        ids = {m.decode() for m in _UUID.findall(payload.encode())}
        if visible:
            view.queued |= ids
        elif age <= held_within:
            view.held |= ids
        else:
            continue
        view.messages += 1
    return view


def _signature(job: Job) -> tuple[Any, ...]:
    return (job.state, job.lease_owner, job.lease_expires_at, job.attempt_count,
            job.next_attempt_at)


class Reconciler:
    """Runs passes; remembers what it saw stuck on the previous one (``confirm_passes``)."""

    def __init__(self, settings: Settings, *, confirm_passes: int = 2,
                 publish: Publish | None = None) -> None:
        self.settings = settings
        self.confirm_passes = confirm_passes
        self._publish = publish
        self._suspects: dict[uuid.UUID, tuple[Any, ...]] = {}
        # Its own engine without a pool: it runs in a worker's main process, which forks pool
        # processes; no pooled connection may be inherited by them.
        self._engine: Engine = create_engine(settings.database.url.get_secret_value(), poolclass=NullPool)

    def close(self) -> None:
        self._engine.dispose()

    # -- one pass --------------------------------------------------------------------------

    def run_pass(self) -> PassReport:
        report = PassReport()
        stale = timedelta(seconds=self.settings.reconciler.stale_after_seconds)
        with Session(self._engine) as session, session.begin():
            if not self._lock(session):
                return PassReport(ran=False)
            now = utcnow()
            waiting = self._waiting(session, now - stale)
            expired = self._expired(session, now - stale)
            confirmed_waiting, confirmed_expired = self._confirm(waiting, expired, report)
            if confirmed_waiting or confirmed_expired:
                self._redrive(session, confirmed_waiting, confirmed_expired, now, report)
            polls = self._overdue_polls(session, now - stale, report)
            self._close_stale_attempts(session, now, report)
        for backend_name, items in polls.items():
            self._poll(backend_name, items, report)
        if report.acted():
            log.warning("reconciler: re-published %d waiting job(s), re-drove %d with an expired "
                        "lease, polled %d overdue fal request(s)", len(report.republished),
                        len(report.redriven), report.polled)
        return report

    def _lock(self, session: Session) -> bool:
        if session.get_bind().dialect.name != "postgresql":
            return True  # an embedded single-process database: nobody to exclude
        return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"),
                                   {"key": ADVISORY_LOCK_KEY}))

    def _waiting(self, session: Session, before: datetime) -> list[Job]:
        not_recent = or_(Job.redriven_at.is_(None), Job.redriven_at < before)
        queued = (Job.state == JobState.QUEUED) & (
            func.coalesce(Job.enqueued_at, Job.created_at) < before)
        due = (Job.state == JobState.RETRYING) & (Job.next_attempt_at < before)
        stmt = (select(Job).where(or_(queued, due), not_recent)
                .order_by(Job.created_at).limit(BATCH).with_for_update(skip_locked=True))
        return list(session.scalars(stmt))

    def _expired(self, session: Session, before: datetime) -> list[Job]:
        not_recent = or_(Job.redriven_at.is_(None), Job.redriven_at < before)
        polling = exists().where(
            Attempt.job_id == Job.id, Attempt.outcome == AttemptOutcome.RUNNING,
            Attempt.submit_state == SubmitState.ACCEPTED)
        # A fal job whose request was accepted holds no lease (the poller has it); anything
        # else running without a lease has lost its holder.
        lease_gone = or_(Job.lease_expires_at < before,
                         Job.lease_expires_at.is_(None) & (Job.updated_at < before) & ~polling)
        stmt = (select(Job).where(Job.state == JobState.RUNNING, lease_gone, not_recent)
                .order_by(Job.created_at).limit(BATCH).with_for_update(skip_locked=True))
        return list(session.scalars(stmt))

    def _confirm(self, waiting: list[Job], expired: list[Job],
                 report: PassReport) -> tuple[list[Job], list[Job]]:
        previous = self._suspects
        self._suspects = {job.id: _signature(job) for job in (*waiting, *expired)}
        report.suspects = len(self._suspects)
        if self.confirm_passes <= 1:
            return waiting, expired

        def confirmed(jobs: list[Job]) -> list[Job]:
            return [j for j in jobs if previous.get(j.id) == _signature(j)]

        return confirmed(waiting), confirmed(expired)

    def _redrive(self, session: Session, waiting: list[Job], expired: list[Job],
                 now: datetime, report: PassReport) -> None:
        to_publish: list[tuple[Job, list[uuid.UUID]]] = []
        if waiting:
            # Busy hand-backs wait at most a lease; a held message older than that (and than a
            # stale period) belongs to a worker that is gone.
            window = self.settings.retries.lease_seconds + self.settings.reconciler.stale_after_seconds + 5
            try:
                broker = job_ids_in_broker(self.settings.broker.url.get_secret_value(), held_within=window)
            except (redis.RedisError, SQLAlchemyError) as exc:
                report.broker_error = f"cannot read the broker: {exc}"
                log.warning("reconciler: %s", report.broker_error)
                return
            report.messages_seen = broker.messages
            to_publish += [(job, report.republished) for job in waiting
                           if not self._has_message(job, broker)]
        # An expired lease's message may still sit in the dead worker's unacked entry (Redis
        # hands it back only after the visibility timeout): publish regardless.
        to_publish += [(job, report.redriven) for job in expired]
        if not to_publish:
            return
        try:
            with publisher_for(self.settings).connection_for_write() as connection:
                for job, done in to_publish:
                    self._send(job, connection)
                    job.redriven_at = now
                    job.redrives += 1
                    done.append(job.id)
                    self._suspects.pop(job.id, None)
        except Exception as exc:  # noqa: BLE001 - Redis down: what was published stays marked
            report.broker_error = f"publishing failed: {exc}"
            log.warning("reconciler: %s", report.broker_error)

    @staticmethod
    def _has_message(job: Job, broker: BrokerView) -> bool:
        key = str(job.id)
        if key in broker.queued:
            return True
        # A held countdown would have run by now if its worker were alive: only a queued job
        # (taken by a worker a moment ago) counts as delivered by a held message.
        return job.state is JobState.QUEUED and key in broker.held

    def _send(self, job: Job, connection: Any) -> None:
        if self._publish is not None:
            self._publish(job.id, job.backend)
        else:
            publish_run(self.settings, job.id, job.backend, connection=connection)

    def _close_stale_attempts(self, session: Session, now: datetime, report: PassReport) -> None:
        """A job ended (cancelled, say) while an attempt ran, and that attempt's worker died
        before it noticed: nothing else would ever close the attempt. Waits two leases after
        the job ended, so a worker still finishing its inference closes it itself."""
        quiet = timedelta(seconds=2 * self.settings.retries.lease_seconds
                          + self.settings.reconciler.stale_after_seconds)
        stale = session.scalars(
            select(Attempt).join(Job, Job.id == Attempt.job_id).where(
                Attempt.outcome == AttemptOutcome.RUNNING,
                or_(Attempt.submit_state.is_(None), Attempt.submit_state == SubmitState.SENDING),
                Job.state.in_([s for s in JobState if s.is_final]),
                Job.finished_at < now - quiet)
            .limit(BATCH).with_for_update(of=Attempt, skip_locked=True)).all()
        for attempt in stale:
            job = session.get(Job, attempt.job_id)
            assert job is not None
            outcome = (AttemptOutcome.CANCELLED if job.state is JobState.CANCELLED
                       else AttemptOutcome.SUPERSEDED)
            transitions.close_stale_attempt(
                attempt, now, outcome=outcome,
                message=f"the job was {job.state.value} while this attempt ran, and its "
                        "worker stopped without closing it (closed by the reconciler)")
        report.closed = len(stale)

    def _overdue_polls(self, session: Session, before: datetime,
                       report: PassReport) -> dict[str, list[PollItem]]:
        counts = dict(session.execute(
            select(Attempt.backend, func.count()).where(
                Attempt.outcome == AttemptOutcome.RUNNING,
                Attempt.submit_state == SubmitState.ACCEPTED, Attempt.next_poll_at < before)
            .group_by(Attempt.backend)).tuples().all())
        report.overdue_polls = sum(counts.values())
        return {
            name: remote_attempts.claim_due_polls(session, name, limit=BATCH, due_before=before,
                                                  lease_seconds=self.settings.retries.lease_seconds)
            for name in counts
            if name in backends.NAMES and backends.is_remote(name)
            and unavailable_reason(name, self.settings) is None
        }

    def _poll(self, backend_name: str, items: list[PollItem], report: PassReport) -> None:
        from orchestrator.jobs.remote.poller import RemotePoller

        def publish(job_id: uuid.UUID, queue: str, countdown: float) -> None:
            publish_run(self.settings, job_id, queue, countdown)

        try:
            backend = backends.get_remote(backend_name, self.settings)
            RemotePoller(self.settings, backend, publish).poll_now(items)
            report.polled += len(items)
        except Exception:
            log.exception("reconciler: polling %d overdue %s request(s) failed", len(items),
                          backend_name)


class ReconcilerLoop(threading.Thread):
    """A pass every ``reconcile_interval_seconds`` until stopped; failures are logged, not fatal
    (the database or Redis may be away: the next pass tries again)."""

    def __init__(self, settings: Settings, *, interval: float | None = None,
                 on_pass: Callable[[PassReport], None] | None = None) -> None:
        super().__init__(name="reconciler", daemon=True)
        self.reconciler = Reconciler(settings)
        self.interval = interval or settings.reconciler.interval_seconds
        self.on_pass = on_pass
        self._stopping = threading.Event()
        self.gc = GcSchedule(settings)  # retention and the orphan sweep, every gc_interval

    def run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                report = self.reconciler.run_pass()
            except Exception as exc:  # noqa: BLE001 - the next pass tries again
                log.warning("reconciler pass failed: %s", str(exc).splitlines()[0][:300])
                continue
            if report.ran:  # the worker whose pass acted also sweeps, when it is due
                self.gc.maybe_start()
            if self.on_pass is not None:
                self.on_pass(report)
        self.reconciler.close()

    def stop(self, timeout: float = 10) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)
        self.gc.join(timeout)


def reconcile_once(settings: Settings) -> PassReport:
    """One pass that acts on everything stuck now (no second look): ``orchestrator reconcile``."""
    reconciler = Reconciler(settings, confirm_passes=1)
    try:
        return reconciler.run_pass()
    finally:
        reconciler.close()


__all__ = ["BrokerView", "PassReport", "Reconciler", "ReconcilerLoop", "job_ids_in_broker", "reconcile_once"]
