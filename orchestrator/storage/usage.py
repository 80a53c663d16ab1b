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

from sqlalchemy import Table, bindparam, text, update
from sqlalchemy.orm import Session

from orchestrator.db.models import TenantUsage

USAGE = cast(Table, TenantUsage.__table__)


# One tenant's upsert, as SQL text: the same statement on Postgres and SQLite (3.35+), and no
# statement building per batch (a batch nearly always has one tenant).
_ADD = text(
    "INSERT INTO tenant_usage (client, stored_input_bytes) VALUES (:client, :size) "
    "ON CONFLICT (client) DO UPDATE "
    "SET stored_input_bytes = tenant_usage.stored_input_bytes + excluded.stored_input_bytes "
    "RETURNING stored_input_bytes")


def add_stored_inputs(session: Session, added: Mapping[str, int]) -> dict[str, int]:
    """Add each tenant's new input bytes to its total; each tenant's total afterwards."""
    return {client: int(session.execute(_ADD, {"client": client, "size": added[client]})
                        .scalar_one())
            for client in sorted(added) if added[client]}


def remove_stored_inputs(session: Session, removed: Mapping[str, int]) -> None:
    """Subtract expired inputs' bytes from their tenants' totals."""
    rows = [{"tenant": client, "size": removed[client]}
            for client in sorted(removed) if removed[client]]
    if rows:
        session.execute(
            update(USAGE).where(USAGE.c.client == bindparam("tenant"))
            .values(stored_input_bytes=USAGE.c.stored_input_bytes - bindparam("size")),
            rows)

