"""jobs and attempts store a stable error code (error_code), not an exception's class name

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 05:30:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (not imported) so the migration means the same whatever the code becomes.
CLASS_NAME_TO_CODE: dict[str, str] = {
    "WorkerLost": "worker_lost",
    "AttemptsExhausted": "attempts_exhausted",
    "Cancelled": "cancelled",
    "InputError": "input_invalid",
    "InputTooLarge": "input_too_large",
    "UnsupportedFormat": "unsupported_format",
    "CorruptImage": "corrupt_image",
    "InputUnreachable": "input_unreachable",
    "BudgetExceeded": "budget_exceeded",
    "BackendUnavailable": "backend_unavailable",
    "CredentialsRefused": "credentials_refused",
    "ProviderFallback": "provider_fallback",
    "BackendRejected": "backend_rejected",
    "FetchFailed": "fetch_failed",
    "BackendBusy": "backend_busy",
    "RemoteRunFailed": "remote_run_failed",
    "SubmitReplyLost": "submit_reply_lost",
    "TransientJobError": "retry",
    "PermanentJobError": "permanent_failure",
}
TABLES = ("jobs", "attempts")


def _map(table: str, pairs: dict[str, str], column: str) -> None:
    for old, new in pairs.items():
        op.execute(sa.text(f"UPDATE {table} SET {column} = :new WHERE {column} = :old")
                   .bindparams(old=old, new=new))


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:  # SQLite rebuilds the table
            batch.alter_column('error_type', new_column_name='error_code',
                               existing_type=sa.String(100), existing_nullable=True)
        _map(table, CLASS_NAME_TO_CODE, 'error_code')
        # Any other class name was an unexpected exception (retried as transient).
        known = ", ".join(f"'{c}'" for c in set(CLASS_NAME_TO_CODE.values()))
        op.execute(f"UPDATE {table} SET error_code = 'internal_error' "
                   f"WHERE error_code IS NOT NULL AND error_code NOT IN ({known})")


def downgrade() -> None:
    back = {code: name for name, code in CLASS_NAME_TO_CODE.items()}
    for table in TABLES:
        _map(table, back, 'error_code')
        with op.batch_alter_table(table) as batch:
            batch.alter_column('error_code', new_column_name='error_type',
                               existing_type=sa.String(100), existing_nullable=True)
