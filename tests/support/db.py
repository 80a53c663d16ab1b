from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, selectinload

from orchestrator.db.models import Attempt, Job, Result
from orchestrator.jobs.states import JobState
from tests.support.wait import WaitTimeout, wait_until


def load_jobs(database_url: str) -> list[Job]:
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            jobs = session.scalars(
                select(Job).options(selectinload(Job.attempts), selectinload(Job.result))
            ).all()
            session.expunge_all()
            return list(jobs)
    finally:
        engine.dispose()


def job_by_id(database_url: str, job_id: str | uuid.UUID) -> Job:
    key = uuid.UUID(str(job_id))
    return next(j for j in load_jobs(database_url) if j.id == key)


def count(database_url: str, model: Any) -> int:
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            return len(session.scalars(select(model)).all())
    finally:
        engine.dispose()


def wait_for_state(
    database_url: str, job_id: str | uuid.UUID, states: set[JobState], timeout: float = 120
) -> Job:
    last: list[Job] = []

    def reached() -> Job | None:
        job = job_by_id(database_url, job_id)
        last[:] = [job]
        return job if job.state in states else None

    try:
        return wait_until(reached, timeout=timeout, what=f"job {job_id} to reach {sorted(states)}")
    except WaitTimeout:
        job = last[0]
        raise WaitTimeout(f"job {job_id} still {job.state} after {timeout} s: {job.error_message}") from None


def wait_all_final(database_url: str, timeout: float = 180, expected: int | None = None) -> list[Job]:
    """Wait until there are jobs (``expected`` of them, if given) and every one is final."""

    def final() -> list[Job] | None:
        jobs = load_jobs(database_url)
        enough = len(jobs) == expected if expected is not None else bool(jobs)
        return jobs if enough and all(j.state.is_final for j in jobs) else None

    try:
        return wait_until(final, timeout=timeout, interval=0.2, what="every job to be final")
    except WaitTimeout:
        open_jobs = [(j.source_name, j.state.value) for j in load_jobs(database_url) if not j.state.is_final]
        raise WaitTimeout(f"jobs not final after {timeout} s: {open_jobs[:20]}") from None


__all__ = ["Attempt", "Job", "Result", "count", "job_by_id", "load_jobs", "wait_all_final", "wait_for_state"]
