"""Pooled Postgres connections that Postgres has dropped: replaced after a ping when they sat
idle, and recovered by the caller's retry when they were in use a moment before."""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from orchestrator.db import session as db_session
from orchestrator.db.retry import is_connection_error, retry_db
from orchestrator.db.session import PING_AFTER_IDLE_SECONDS, get_engine


def _backend_pid(url: str) -> int:
    with get_engine(url).connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(url: str, pid: int) -> None:
    plain = url.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.fixture
def url(database_url: str) -> str:
    get_engine(database_url).dispose()
    return database_url


def test_an_idle_connection_that_was_dropped_is_replaced_before_use(url: str) -> None:
    dropped = _backend_pid(url)
    _terminate(url, dropped)
    time.sleep(PING_AFTER_IDLE_SECONDS + 0.1)

    assert _backend_pid(url) != dropped  # no error: the ping found it dead


def test_a_connection_in_steady_use_is_not_pinged(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pings: list[object] = []
    dialect = get_engine(url).dialect
    real = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda conn: pings.append(conn) or real(conn))
    for _ in range(20):
        _backend_pid(url)
    assert pings == []

    monkeypatch.setattr(db_session, "PING_AFTER_IDLE_SECONDS", 0.0)
    _backend_pid(url)
    assert len(pings) == 1


def test_a_connection_dropped_while_busy_fails_once_and_the_retry_recovers(url: str) -> None:
    dropped = _backend_pid(url)
    _terminate(url, dropped)

    with pytest.raises(OperationalError) as raised:
        _backend_pid(url)
    assert is_connection_error(raised.value)
    assert retry_db(lambda: _backend_pid(url), budget_seconds=5, what="a test") != dropped
