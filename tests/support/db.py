from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, selectinload

from orchestrator.db.models import Attempt, Job, Result
from orchestrator.jobs.states import JobState


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
    deadline = time.monotonic() + timeout
    job = job_by_id(database_url, job_id)
    while time.monotonic() < deadline:
        job = job_by_id(database_url, job_id)
        if job.state in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.state} after {timeout} s: {job.error_message}")


def wait_all_final(database_url: str, timeout: float = 180) -> list[Job]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = load_jobs(database_url)
        if jobs and all(j.state.is_final for j in jobs):
            return jobs
        time.sleep(0.2)
    raise AssertionError(f"jobs not final: {[(j.source_name, j.state) for j in load_jobs(database_url)]}")


__all__ = ["Attempt", "Job", "Result", "count", "job_by_id", "load_jobs", "wait_all_final", "wait_for_state"]
