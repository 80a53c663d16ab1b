"""Process set-up for talking to the broker, done where workers and broker connections start
(worker start-up, the first publisher, the API's start-up, ``orchestrator dev``), never on import.

Importing the package must not change kombu for an application that embeds it; a process that
runs a worker or publishes needs kombu's Redis fix and the fast-polling SQLAlchemy transport
before its first connection. Idempotent and cheap, so every start path may call it.
"""

from __future__ import annotations

import threading

from orchestrator.queue import kombu_fixes, sqla_transport

_lock = threading.Lock()
_done = False


def prepare_broker() -> None:
    """Apply the kombu fix and register the embedded broker's transport, once per process."""
    global _done
    with _lock:
        if _done:
            return
        kombu_fixes.apply()
        sqla_transport.register()
        _done = True
