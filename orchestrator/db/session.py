"""Engines and sessions, one engine per database URL per process."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.db.sqlite import create_sqlite_engine, is_sqlite


@lru_cache(maxsize=8)
def _engine(url: str, pid: int) -> Engine:
    # Keyed by pid: a connection pool must never be shared across a fork (Celery prefork).
    if is_sqlite(url):
        return create_sqlite_engine(url)
    engine = create_engine(url, pool_size=5, max_overflow=5)
    _ping_idle_connections(engine)
    return engine


# A pooled connection idle this long is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0
_RETURNED_AT = "orchestrator_returned_at"


def _ping_idle_connections(engine: Engine) -> None:
    """Pessimistic disconnect handling for connections that sat in the pool, none for those in
    steady use.

    ``pool_pre_ping`` pings on every checkout: a round trip and, with psycopg, a transaction
    of its own each time, which doubled the transactions a busy worker made per job. A
    connection returned less than a second ago is handed out as it is; should Postgres have
    dropped it in that second, the statement fails with a connection error, SQLAlchemy
    invalidates the pool, and the caller's retry (``retry_db``) gets a fresh connection. One
    idle longer (after a quiet spell, a Postgres restart or failover) is pinged first, and the
    pool replaces it if the ping fails: SQLAlchemy's documented recipe of a ``checkout`` event
    raising ``DisconnectionError``."""

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is None or time.monotonic() - returned_at < PING_AFTER_IDLE_SECONDS:
            return  # new, or in use a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # noqa: BLE001 - any failure means: replace it
            raise DisconnectionError(f"a pooled connection failed its ping: {exc}") from exc
        if not alive:
            raise DisconnectionError("a pooled connection failed its ping")


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
