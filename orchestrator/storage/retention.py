"""Retention and the orphan sweep (``orchestrator gc``, and the reconciler's loop).

- Inputs go ``input_retention_seconds`` after their job ended; results ``result_retention_days``
  after they were stored. Rows stay (the cost history): their bytes and location become NULL and
  ``expired_at`` is stamped. The row is updated first and the bytes deleted after it commits, so
  a row never points at a missing object; a crash in between leaves an orphan, swept below.
- Orphans: objects under ``inputs/`` and ``results/`` that no row names (a crash between the
  PUT and the commit), older than ``orphan_grace_seconds`` (younger ones may still commit).

Two sweeps at once are safe (a worker's loop and ``orchestrator gc``): expiry locks its rows
with ``SKIP LOCKED``, and deleting an orphan twice deletes it once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from orchestrator.db.models import Job, JobInput, Result
from orchestrator.db.session import session_scope
from orchestrator.jobs.states import FINAL_STATES
from orchestrator.settings import Settings
from orchestrator.storage import BlobStore, Listed, store_named
from orchestrator.storage.keys import INPUTS, RESULTS
from orchestrator.storage.usage import remove_stored_inputs

log = logging.getLogger("orchestrator.gc")

BATCH = 500
LIST_BATCH = 1000


@dataclass
class GcReport:
    inputs: int = 0
    input_bytes: int = 0
    results: int = 0
    result_bytes: int = 0
    orphans: int = 0
    orphan_bytes: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def bytes_freed(self) -> int:
        return self.input_bytes + self.result_bytes + self.orphan_bytes


def _now() -> datetime:
    from orchestrator.jobs.transitions import utcnow

    return utcnow()


def collect(settings: Settings, *, dry_run: bool = False, now: datetime | None = None,
            on_progress: Callable[[GcReport], None] | None = None) -> GcReport:
    """One retention pass over every store; with ``dry_run``, only count what would go."""
    now = now or _now()
    report = GcReport(dry_run=dry_run)
    _expire_inputs(settings, now, dry_run, report)
    _expire_results(settings, now, dry_run, report)
    for store in external_stores(settings):
        _sweep_orphans(settings, store, now, dry_run, report, on_progress)
    return report


def external_stores(settings: Settings) -> list[BlobStore]:
    """The stores that hold objects of their own (the database store has none to sweep)."""
    names = {settings.results.store} | ({"s3"} if settings.storage.object_store_url else set())
    return [store_named(settings, name) for name in sorted(names) if name != "database"]


def _expire_inputs(settings: Settings, now: datetime, dry_run: bool, report: GcReport) -> None:
    cutoff = now - timedelta(seconds=settings.retention.input_retention_seconds)
    due = (select(JobInput.job_id, JobInput.store, JobInput.location, JobInput.size_bytes,
                  Job.client)
           .join(Job, Job.id == JobInput.job_id)
           .where(JobInput.expired_at.is_(None), Job.state.in_(list(FINAL_STATES)),
                  Job.finished_at < cutoff))
    if dry_run:
        with session_scope(settings.database.url.get_secret_value()) as session:
            count, size = _count(session, due)
        report.inputs += count
        report.input_bytes += size
        return
    while True:
        with session_scope(settings.database.url.get_secret_value()) as session:
            rows = session.execute(due.limit(BATCH).with_for_update(skip_locked=True,
                                                                    of=JobInput)).all()
            if rows:
                session.execute(update(JobInput)
                                .where(JobInput.job_id.in_([r.job_id for r in rows]))
                                .values(data=None, location=None, expired_at=now))
                removed: dict[str, int] = {}
                for r in rows:
                    removed[r.client] = removed.get(r.client, 0) + r.size_bytes
                remove_stored_inputs(session, removed)  # the tenants' totals, same commit
        # Committed: now the bytes can go (an input belongs to one job only).
        _delete(settings, [(r.store, r.location) for r in rows])
        report.inputs += len(rows)
        report.input_bytes += sum(r.size_bytes for r in rows)
        if len(rows) < BATCH:
            return


def _expire_results(settings: Settings, now: datetime, dry_run: bool, report: GcReport) -> None:
    if settings.retention.result_retention_days <= 0:
        return
    cutoff = now - timedelta(days=settings.retention.result_retention_days)
    due = (select(Result.job_id, Result.store, Result.location, Result.size_bytes)
           .where(Result.expired_at.is_(None), Result.created_at < cutoff))
    if dry_run:
        with session_scope(settings.database.url.get_secret_value()) as session:
            count, size = _count(session, due)
        report.results += count
        report.result_bytes += size
        return
    while True:
        with session_scope(settings.database.url.get_secret_value()) as session:
            rows = session.execute(due.limit(BATCH).with_for_update(skip_locked=True)).all()
            if rows:
                session.execute(update(Result)
                                .where(Result.job_id.in_([r.job_id for r in rows]))
                                .values(data=None, location=None, expired_at=now))
            locations = [r.location for r in rows if r.location]
            # A deduplicated job's result row names its original's object: keep the object
            # while any row still names it (the last one to expire deletes it).
            shared = set(session.scalars(select(Result.location)
                                         .where(Result.location.in_(locations)))) if locations else set()
        _delete(settings, [(r.store, r.location) for r in rows if r.location not in shared])
        report.results += len(rows)
        report.result_bytes += sum(r.size_bytes for r in rows)
        if len(rows) < BATCH:
            return


def _count(session: Session, due: Any) -> tuple[int, int]:
    sub = due.subquery()
    count, size = session.execute(
        select(func.count(), func.coalesce(func.sum(sub.c.size_bytes), 0))).one()
    return int(count), int(size)


def _delete(settings: Settings, items: list[tuple[str, str | None]]) -> None:
    by_store: dict[str, list[str]] = {}
    for store, location in items:
        if location is not None and store != "database":
            by_store.setdefault(store, []).append(location)
    for store, locations in by_store.items():
        # A failure here leaves orphans (rows already say "expired"): the sweep retries them.
        try:
            store_named(settings, store).delete(locations)
        except Exception as exc:  # noqa: BLE001
            log.warning("gc: deleting %d expired object(s) from %s failed: %s",
                        len(locations), store, exc)


def _sweep_orphans(settings: Settings, store: BlobStore, now: datetime, dry_run: bool,
                   report: GcReport, on_progress: Callable[[GcReport], None] | None) -> None:
    young = now - timedelta(seconds=settings.retention.orphan_grace_seconds)
    for prefix in (INPUTS, RESULTS):
        batch: list[Listed] = []
        for item in store.list(prefix):
            if item.modified >= young:
                continue
            batch.append(item)
            if len(batch) >= LIST_BATCH:
                _sweep_batch(settings, store, batch, dry_run, report)
                batch = []
                if on_progress is not None:
                    on_progress(report)
        if batch:
            _sweep_batch(settings, store, batch, dry_run, report)


def _sweep_batch(settings: Settings, store: BlobStore, batch: list[Listed], dry_run: bool,
                 report: GcReport) -> None:
    locations = [item.location for item in batch]
    with session_scope(settings.database.url.get_secret_value()) as session:
        named = set(session.scalars(select(JobInput.location)
                                    .where(JobInput.location.in_(locations))))
        named |= set(session.scalars(select(Result.location).where(Result.location.in_(locations))))
    orphans = [item for item in batch if item.location not in named]
    if orphans and not dry_run:
        store.delete([item.location for item in orphans])
    report.orphans += len(orphans)
    report.orphan_bytes += sum(item.size for item in orphans)


class GcSchedule:
    """Starts ``collect`` in a thread of its own at most every ``gc_interval_seconds`` (from the
    reconciler's loop, which a long sweep must not hold up)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Not at start-up: a worker (re)starting has better things to do first.
        self._next = time.monotonic() + min(settings.retention.gc_interval_seconds, 60.0)
        self._running = threading.Lock()
        self.thread: threading.Thread | None = None

    def maybe_start(self) -> bool:
        interval = self.settings.retention.gc_interval_seconds
        if interval <= 0 or time.monotonic() < self._next or not self._running.acquire(False):
            return False
        self._next = time.monotonic() + interval
        self.thread = threading.Thread(target=self._run, name="gc", daemon=True)
        self.thread.start()
        return True

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def _run(self) -> None:
        try:
            report = collect(self.settings)
            if report.inputs or report.results or report.orphans:
                log.info("gc: deleted %d input(s), %d result(s), %d orphan(s); %d bytes freed",
                         report.inputs, report.results, report.orphans, report.bytes_freed)
        except Exception as exc:  # noqa: BLE001 - the next interval tries again
            log.warning("gc pass failed: %s", str(exc).splitlines()[0][:300])
        finally:
            self._running.release()
