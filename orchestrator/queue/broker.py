"""The broker behind Celery: Redis in production, or kombu's SQLAlchemy transport on a SQLite
file for the embedded mode (``orchestrator dev``), which needs no server and works across the
processes of one host.

Celery only needs a URL; this module answers what else the orchestrator asks of its broker —
which kind it is, how deep a queue is, whether it answers — for both kinds.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any

import redis
from sqlalchemy import bindparam
from sqlalchemy.engine import make_url

from orchestrator.settings import Settings

REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://")
SQLA_SCHEMES = ("sqla+", "sqlalchemy+")
# How long a process waits for the SQLite broker file's lock before giving up.
SQLITE_BROKER_TIMEOUT_SECONDS = 30


@lru_cache(maxsize=4)
def redis_client(url: str) -> redis.Redis:
    """One client (and connection pool) per Redis URL and process."""
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def is_redis(url: str) -> bool:
    return url.startswith(REDIS_SCHEMES)


def is_sqla(url: str) -> bool:
    return url.startswith(SQLA_SCHEMES)


def sqla_database_url(url: str) -> str:
    """The SQLAlchemy URL inside a ``sqla+…`` broker URL."""
    for scheme in SQLA_SCHEMES:
        if url.startswith(scheme):
            return url[len(scheme):]
    raise ValueError(f"not a sqla+ broker URL: {url}")


def transport_options(settings: Settings) -> dict[str, Any]:
    """Celery's ``broker_transport_options`` for this broker."""
    url = settings.broker.url.get_secret_value()
    if is_redis(url):
        return {
            # Redis redelivers a message not acknowledged within this long.
            "visibility_timeout": settings.broker.visibility_timeout_seconds,
            # Sweep for messages of dead workers every interval (kombu's default is ~100 s).
            "unacked_restore_interval": settings.broker.unacked_restore_interval_seconds,
            "unacked_restore_throttle": 1,
        }
    if is_sqla(url) and make_url(sqla_database_url(url)).get_backend_name() == "sqlite":
        # kombu passes these to create_engine(): wait for the file lock instead of failing.
        return {"connect_args": {"timeout": SQLITE_BROKER_TIMEOUT_SECONDS}}
    return {}


def queue_depth(settings: Settings, queue: str) -> int:
    """Messages waiting in ``queue`` (not those a worker holds)."""
    if is_redis(settings.broker.url.get_secret_value()):
        return int(redis_client(settings.broker.url.get_secret_value()).llen(queue))
    from orchestrator.queue.celery_app import publisher_for

    with publisher_for(settings).pool.acquire(block=True, timeout=10) as connection:
        declared = connection.default_channel.queue_declare(queue=queue, passive=True)
        return int(declared.message_count)


def ping(settings: Settings) -> None:
    """Raise if the broker does not answer."""
    if is_redis(settings.broker.url.get_secret_value()):
        redis_client(settings.broker.url.get_secret_value()).ping()
        return
    from orchestrator import backends

    queue_depth(settings, backends.DEFAULT)


def prepare_sqlite_broker(url: str) -> None:
    """Ready the embedded broker's SQLite file before any process uses it: WAL (readers do not
    wait for the writer), and messages delivered in earlier runs removed — kombu's SQLAlchemy
    transport keeps a taken message as a row marked invisible, so the file would only grow."""
    from sqlalchemy import create_engine, inspect

    engine = create_engine(sqla_database_url(url), connect_args={"timeout": SQLITE_BROKER_TIMEOUT_SECONDS})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            if inspect(conn).has_table("kombu_message"):
                conn.exec_driver_sql("DELETE FROM kombu_message WHERE visible = 0")
                conn.commit()
    finally:
        engine.dispose()


def sqla_messages(url: str, queues: Iterable[str]) -> list[tuple[str, bool, float]]:
    """Every message of ``queues`` in the embedded broker: payload, still waiting (visible),
    seconds since it was sent. kombu creates its tables on first use: none yet, no messages."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(sqla_database_url(url), connect_args={"timeout": SQLITE_BROKER_TIMEOUT_SECONDS})
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("kombu_message"):
                return []
            names = list(queues)
            rows = conn.execute(
                text("SELECT m.payload, m.visible, m.timestamp FROM kombu_message m "
                     "JOIN kombu_queue q ON q.id = m.queue_id WHERE q.name IN :names")
                .bindparams(bindparam("names", expanding=True)),
                {"names": names},
            ).all()
    finally:
        engine.dispose()
    # kombu stamps messages with the host's local time (datetime.now), naive.
    now = datetime.now()
    out = []
    for payload, visible, sent in rows:
        sent_at = sent if isinstance(sent, datetime) else datetime.fromisoformat(str(sent)) if sent else now
        out.append((str(payload), bool(visible), (now - sent_at).total_seconds()))
    return out
