"""Run a database step again, with backoff, while Postgres is unreachable.

A worker that has computed (or paid for) a result must not lose it because the database was
away for a while: it keeps the result in memory and retries the write until it lands or
``db_retry_seconds`` run out. Only connection-level failures are retried; a constraint or a
programming error is raised at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger("orchestrator.db")

T = TypeVar("T")

FIRST_DELAY = 0.5
MAX_DELAY = 5.0


def is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def retry_db(fn: Callable[[], T], *, budget_seconds: float, what: str) -> T:
    """``fn()``, repeated with jittered exponential backoff while the database is unreachable."""
    deadline = time.monotonic() + budget_seconds
    delay = FIRST_DELAY
    failures = 0
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not is_connection_error(exc) or time.monotonic() + delay > deadline:
                raise
            failures += 1
            if failures == 1 or failures % 10 == 0:
                log.warning("the database is unreachable while %s (try %d); retrying: %s",
                            what, failures, str(exc).splitlines()[0][:200])
            time.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, MAX_DELAY)
            continue
        if failures:
            log.warning("the database is back; %s succeeded after %d failed tries", what, failures)
        return result
