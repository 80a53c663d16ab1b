"""cost report indexes: attempts and jobs by UTC day and backend (covering), jobs by client

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 09:05:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DAY = "date_trunc('day', timezone('UTC', {}))"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":  # expression indexes in Postgres's SQL
        _create_day_indexes()
    op.create_index('ix_jobs_client_created_at', 'jobs', ['client', 'created_at'], unique=False,
                    postgresql_include=['backend', 'state', 'finished_at'])


def _create_day_indexes() -> None:
    op.create_index('ix_attempts_report_day', 'attempts',
                    [sa.text(UTC_DAY.format('started_at')), 'backend'], unique=False,
                    postgresql_include=['started_at', 'number', 'compute_seconds', 'cost_usd',
                                        'fal_equivalent_usd'])
    op.create_index('ix_jobs_report_day', 'jobs',
                    [sa.text(UTC_DAY.format('created_at')), 'backend'], unique=False,
                    postgresql_include=['created_at', 'state', 'finished_at'])


def downgrade() -> None:
    op.drop_index('ix_jobs_client_created_at', table_name='jobs')
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index('ix_jobs_report_day', table_name='jobs')
        op.drop_index('ix_attempts_report_day', table_name='attempts')
