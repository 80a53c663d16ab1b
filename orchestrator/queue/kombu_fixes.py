"""A workaround for a kombu bug that kills the worker when Redis goes away.

On a lost broker connection Celery closes the channel, and kombu's Redis transport then tries
to hand the messages this worker holds (countdowns, prefetched) back to Redis through a
connection that no longer exists: ``AttributeError: 'NoneType' object has no attribute
'hostname'`` in ``_connparams``, which Celery treats as an unrecoverable error and the worker
exits instead of reconnecting (kombu 5.7.0; the same failure as celery/kombu#582 and #970).
Handing them back cannot work without a connection anyway; their jobs are in Postgres, and the
reconciler re-publishes every job whose message Redis no longer holds (or holds only in an
``unacked`` entry older than any countdown), so the worker logs it and goes on reconnecting.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as redis_transport

log = logging.getLogger("orchestrator.queue")

_restore_unacked = redis_transport.QoS.restore_unacked


def _restore_unacked_without_a_connection(self: Any, client: Any = None) -> Any:
    try:
        return _restore_unacked(self, client)  # type: ignore[no-untyped-call]
    except AttributeError:
        log.warning("could not hand %d held message(s) back to Redis: the connection is gone; "
                    "the reconciler re-publishes their jobs", len(self._delivered))
        return None


def apply() -> None:
    redis_transport.QoS.restore_unacked = _restore_unacked_without_a_connection  # type: ignore[method-assign]
