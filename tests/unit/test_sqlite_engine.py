"""The embedded database: processes sharing one SQLite file neither lose updates nor fail with
"database is locked" — what row locks give on Postgres, BEGIN IMMEDIATE gives here."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Column, DateTime, Integer, MetaData, Table, select, text

from orchestrator.db.session import get_engine, session_scope
from orchestrator.db.types import UTCDateTime

INCREMENTS = 40


def _increment(url: str) -> None:
    for _ in range(INCREMENTS):
        with session_scope(url) as session:  # read, then write, as jobs.transitions does
            n = session.execute(text("SELECT n FROM counter")).scalar_one()
            session.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})


def test_concurrent_read_modify_write_transactions_serialise(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with session_scope(url) as session:
        session.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
        session.execute(text("INSERT INTO counter VALUES (0)"))
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_increment, args=(url,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]  # no "database is locked"
    with session_scope(url) as session:
        assert session.execute(text("SELECT n FROM counter")).scalar_one() == 4 * INCREMENTS
    with get_engine(url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_timestamps_come_back_aware_and_compare_in_utc(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True),
                  Column("at", UTCDateTime), Column("naive", DateTime(timezone=True)))
    table.metadata.create_all(get_engine(url))
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(url) as session:
        session.execute(table.insert().values(id=1, at=at))
        back = session.execute(select(table.c.at)).scalar_one()
        assert back == at and back.tzinfo is UTC
        # SQL comparisons see UTC on both sides
        earlier = at - timedelta(seconds=1)
        assert session.execute(select(table.c.id).where(table.c.at > earlier)).scalar_one() == 1
        assert session.execute(select(table.c.id).where(table.c.at > at)).first() is None
