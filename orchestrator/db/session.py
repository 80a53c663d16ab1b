"""Engines and sessions, one engine per database URL per process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.db.sqlite import create_sqlite_engine, is_sqlite


@lru_cache(maxsize=8)
def _engine(url: str, pid: int) -> Engine:
    # Keyed by pid: a connection pool must never be shared across a fork (Celery prefork).
    if is_sqlite(url):
        return create_sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def get_engine(url: str) -> Engine:
    return _engine(url, os.getpid())


@lru_cache(maxsize=8)
def _session_factory(url: str, pid: int) -> sessionmaker[Session]:
    # One factory per engine: sessionmaker() defines a new Session subclass each time, and
    # SQLAlchemy sets up that class's event dispatch on its first session (a cost per call
    # that grew with every class made before it).
    return sessionmaker(bind=_engine(url, pid), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    factory = _session_factory(url, os.getpid())
    with factory() as session, session.begin():
        yield session
