"""Each tenant's stored input bytes as a running total (``tenant_usage``), so the stored-input
quota costs one row per tenant, not a sum over every input the tenant has.

The producer adds in the transaction that records the inputs, retention subtracts in the one
that expires them, so the total is always the sum of the tenant's unexpired ``job_inputs``
sizes. Adding locks the tenant's row until commit: concurrent submits of one tenant each see
the total including the others' committed inputs, which makes the quota exact under races.
Rows are always touched in client order (no deadlock between two batches).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from orchestrator.db.models import TenantUsage

USAGE = cast(Table, TenantUsage.__table__)


def add_stored_inputs(session: Session, added: Mapping[str, int]) -> dict[str, int]:
    """Add each tenant's new input bytes to its total; each tenant's total afterwards."""
    rows = [{"client": client, "stored_input_bytes": added[client]}
            for client in sorted(added) if added[client]]
    if not rows:
        return {}
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    values = insert(USAGE).values(rows)
    upsert = values.on_conflict_do_update(
        index_elements=[USAGE.c.client],
        set_={"stored_input_bytes": USAGE.c.stored_input_bytes
              + values.excluded.stored_input_bytes},
    ).returning(USAGE.c.client, USAGE.c.stored_input_bytes)
    return {client: int(total) for client, total in session.execute(upsert)}


def remove_stored_inputs(session: Session, removed: Mapping[str, int]) -> None:
    """Subtract expired inputs' bytes from their tenants' totals."""
    rows = [{"tenant": client, "size": removed[client]}
            for client in sorted(removed) if removed[client]]
    if rows:
        session.execute(
            update(USAGE).where(USAGE.c.client == bindparam("tenant"))
            .values(stored_input_bytes=USAGE.c.stored_input_bytes - bindparam("size")),
            rows)


def stored_input_bytes(session: Session, client: str) -> int:
    """The tenant's stored input bytes, as its running total has them."""
    return int(session.scalar(select(USAGE.c.stored_input_bytes)
                              .where(USAGE.c.client == client)) or 0)
