"""kombu's SQLAlchemy transport (the embedded broker of ``orchestrator dev``), polling its table
every 0.1 s instead of every second.

A worker with prefetch 1 asks the broker for its next message only after the last one is done,
and kombu's virtual transports sleep a whole ``polling_interval`` whenever a poll finds nothing
to take — so with kombu's default of 1 s every job waited up to a second (measured: 30 tiny jobs
took 29 s). The interval cannot be passed as a transport option, because this transport hands
every option to ``create_engine()``; hence this subclass, registered for the ``sqla+`` and
``sqlalchemy+`` URL schemes by :func:`register`.
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Transport as SqlaTransport

POLLING_INTERVAL_SECONDS = 0.1


class Transport(SqlaTransport):
    polling_interval = POLLING_INTERVAL_SECONDS


def register() -> None:
    """Make ``sqla+…`` broker URLs use this transport in this process."""
    for scheme in ("sqla", "sqlalchemy"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
