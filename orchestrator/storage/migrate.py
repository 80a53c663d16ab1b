"""``orchestrator results migrate --to s3``: move bytes kept in Postgres to the object store.

Batches of rows still holding bytes are locked (``FOR UPDATE SKIP LOCKED``, so workers, the API
and a second migrator carry on), their bytes PUT under the same keys new rows use (with
Content-MD5, so the store verifies them), then the rows switched to the store and their bytes
nulled in the same transaction. Interrupted, a run leaves each row either moved or untouched
(a PUT whose row did not switch is overwritten by the next run): run it again to resume.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from orchestrator.db.models import JobInput, Result
from orchestrator.db.session import session_scope
from orchestrator.errors import ConfigError, StoreUnavailable
from orchestrator.settings import Settings
from orchestrator.storage import BlobStore, store_named
from orchestrator.storage.keys import input_key, result_key

log = logging.getLogger("orchestrator.migrate")

PUT_THREADS = 8


@dataclass
class MigrateReport:
    inputs: int = 0
    results: int = 0
    bytes: int = 0
    failed: list[str] = field(default_factory=list)  # "result <job id>: why"


def pending(settings: Settings) -> tuple[int, int, int]:
    """Inputs and results still in the database, and their bytes."""
    with session_scope(settings.database.url.get_secret_value()) as session:
        inputs, in_bytes = session.execute(
            select(func.count(), func.coalesce(func.sum(JobInput.size_bytes), 0))
            .where(JobInput.store == "database", JobInput.data.is_not(None))).one()
        results, out_bytes = session.execute(
            select(func.count(), func.coalesce(func.sum(Result.size_bytes), 0))
            .where(Result.store == "database", Result.data.is_not(None))).one()
    return int(inputs), int(results), int(in_bytes) + int(out_bytes)


def migrate_to_s3(settings: Settings, *, batch_size: int = 100,
                  on_batch: Callable[[int, int], None] | None = None) -> MigrateReport:
    """Move every input and result held in the database to S3; ``on_batch(rows, bytes)``
    after each committed batch."""
    if not settings.storage.object_store_url:
        raise ConfigError("ORCH_OBJECT_STORE_URL is not set: say where the objects go "
                          "(s3://bucket/prefix)")
    store = store_named(settings, "s3")
    report = MigrateReport()
    with ThreadPoolExecutor(max_workers=PUT_THREADS) as pool:
        for table in ("inputs", "results"):
            skip: set[uuid.UUID] = set()
            while True:
                moved, size = _batch(settings, store, pool, table, batch_size, skip, report)
                if moved < 0:
                    break
                if table == "inputs":
                    report.inputs += moved
                else:
                    report.results += moved
                report.bytes += size
                if on_batch is not None:
                    on_batch(moved, size)
    return report


def _batch(settings: Settings, store: BlobStore, pool: ThreadPoolExecutor, table: str,
           batch_size: int, skip: set[uuid.UUID], report: MigrateReport) -> tuple[int, int]:
    """One batch: rows moved and bytes, or -1 when no row is left."""
    model: Any = JobInput if table == "inputs" else Result
    with session_scope(settings.database.url.get_secret_value()) as session:
        query = (select(model).where(model.store == "database", model.data.is_not(None))
                 .order_by(model.job_id).limit(batch_size).with_for_update(skip_locked=True))
        if skip:
            query = query.where(model.job_id.not_in(skip))
        rows = list(session.scalars(query))
        if not rows:
            return -1, 0
        futures = {row.job_id: pool.submit(store.put, _key(row, table), row.data,
                                           getattr(row, "content_type", "application/octet-stream"))
                   for row in rows}
        moved = 0
        size = 0
        for row in rows:
            try:
                stored = futures[row.job_id].result()
            except StoreUnavailable:
                raise  # the store is away: stop here; a new run resumes
            except Exception as exc:  # noqa: BLE001 - reported, and the row keeps its bytes
                skip.add(row.job_id)
                report.failed.append(f"{table[:-1]} of job {row.job_id}: {exc}")
                continue
            _switch(session, model, row.job_id, stored.location)
            moved += 1
            size += row.size_bytes
        session.expunge_all()  # the bytes are no longer needed in memory
    return moved, size


def _key(row: Any, table: str) -> str:
    return input_key(row.job_id) if table == "inputs" else result_key(row.job_id, row.attempt_id)


def _switch(session: Session, model: Any, job_id: uuid.UUID, location: str | None) -> None:
    session.execute(update(model).where(model.job_id == job_id)
                    .values(store="s3", location=location, data=None))
