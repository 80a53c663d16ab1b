"""reconciler: when a job was last re-driven, and how often

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 09:20:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('redriven_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('jobs', sa.Column('redrives', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:  # SQLite rebuilds the table
        batch.drop_column('redrives')
        batch.drop_column('redriven_at')
