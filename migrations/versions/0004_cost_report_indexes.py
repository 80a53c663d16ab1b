"""cost report indexes: covering indexes on attempts.started_at and jobs.created_at

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 09:05:00
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ATTEMPT_FIGURES = ['backend', 'number', 'compute_seconds', 'cost_usd', 'fal_equivalent_usd']
JOB_FIGURES = ['backend', 'state', 'finished_at']


def upgrade() -> None:
    # The covering indexes lead with the same column as the plain ones they replace.
    op.create_index('ix_attempts_started_at_report', 'attempts', ['started_at'], unique=False,
                    postgresql_include=ATTEMPT_FIGURES)
    op.drop_index('ix_attempts_started_at', table_name='attempts')
    op.create_index('ix_jobs_created_at_report', 'jobs', ['created_at'], unique=False,
                    postgresql_include=JOB_FIGURES)
    op.drop_index('ix_jobs_created_at', table_name='jobs')
    op.create_index('ix_jobs_client_created_at', 'jobs', ['client', 'created_at'], unique=False,
                    postgresql_include=JOB_FIGURES)


def downgrade() -> None:
    op.drop_index('ix_jobs_client_created_at', table_name='jobs')
    op.create_index('ix_jobs_created_at', 'jobs', ['created_at'], unique=False)
    op.drop_index('ix_jobs_created_at_report', table_name='jobs')
    op.create_index('ix_attempts_started_at', 'attempts', ['started_at'], unique=False)
    op.drop_index('ix_attempts_started_at_report', table_name='attempts')
