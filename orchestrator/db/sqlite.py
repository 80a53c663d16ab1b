"""SQLite as the embedded database (``orchestrator dev``): several processes share one file.

- WAL lets readers go on while one process writes; ``busy_timeout`` makes a writer wait for the
  lock instead of failing with "database is locked".
- Every transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock up front. That is
  SQLite's stand-in for the row locks Postgres takes (``SELECT … FOR UPDATE``, which SQLite
  ignores): the read-check-write sequences of ``jobs.transitions`` run one at a time, and no
  transaction fails half-way when it turns from reading to writing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url

BUSY_TIMEOUT_SECONDS = 30


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_SECONDS})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver must not BEGIN on its own
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
