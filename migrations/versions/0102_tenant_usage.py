"""tenant_usage: each tenant's stored input bytes as a running total (the quota reads it)

Revision ID: 0102
Revises: 0101
Create Date: 2026-11-30 11:40:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0102'
down_revision: str | None = '0101'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'tenant_usage',
        sa.Column('client', sa.String(length=100), nullable=False),
        sa.Column('stored_input_bytes', sa.BigInteger(), server_default='0', nullable=False),
        sa.PrimaryKeyConstraint('client', name=op.f('pk_tenant_usage')),
    )
    # From here on the producer and retention keep it (stop submits and gc while migrating).
    op.execute("INSERT INTO tenant_usage (client, stored_input_bytes) "
               "SELECT jobs.client, SUM(job_inputs.size_bytes) FROM job_inputs "
               "JOIN jobs ON jobs.id = job_inputs.job_id "
               "WHERE job_inputs.expired_at IS NULL GROUP BY jobs.client")


def downgrade() -> None:
    op.drop_table('tenant_usage')
