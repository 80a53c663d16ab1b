"""object store: inputs can live outside the row; retention stamps; location indexes

Revision ID: 0100
Revises: 0007
Create Date: 2026-11-30 04:45:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0100'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('job_inputs') as batch:  # SQLite rebuilds the table
        batch.add_column(sa.Column('store', sa.String(length=16), server_default='database',
                                   nullable=False))
        batch.add_column(sa.Column('location', sa.Text(), nullable=True))
        batch.add_column(sa.Column('expired_at', sa.DateTime(timezone=True), nullable=True))
        batch.alter_column('data', existing_type=sa.LargeBinary(), nullable=True)
    op.create_index('ix_job_inputs_location', 'job_inputs', ['location'])
    op.add_column('results', sa.Column('expired_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_results_location', 'results', ['location'])
    op.create_index('ix_results_created_at', 'results', ['created_at'])


def downgrade() -> None:
    op.drop_index('ix_results_created_at', table_name='results')
    op.drop_index('ix_results_location', table_name='results')
    with op.batch_alter_table('results') as batch:
        batch.drop_column('expired_at')
    op.drop_index('ix_job_inputs_location', table_name='job_inputs')
    # Inputs whose bytes are elsewhere cannot go back into a NOT NULL column: drop those rows'
    # content first (downgrade is for development databases).
    op.execute("DELETE FROM job_inputs WHERE data IS NULL")
    with op.batch_alter_table('job_inputs') as batch:
        batch.alter_column('data', existing_type=sa.LargeBinary(), nullable=False)
        batch.drop_column('expired_at')
        batch.drop_column('location')
        batch.drop_column('store')
