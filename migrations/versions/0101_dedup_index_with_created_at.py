"""the dedup lookup's index also holds created_at, so it is chosen without table statistics

Revision ID: 0101
Revises: 0100
Create Date: 2026-11-30 11:30:00
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0101'
down_revision: str | None = '0100'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_jobs_client_input_sha256_created_at', 'jobs',
                    ['client', 'input_sha256', 'created_at'], unique=False)
    op.drop_index('ix_jobs_client_input_sha256', table_name='jobs')


def downgrade() -> None:
    op.create_index('ix_jobs_client_input_sha256', 'jobs', ['client', 'input_sha256'],
                    unique=False)
    op.drop_index('ix_jobs_client_input_sha256_created_at', table_name='jobs')
