"""fal budgets and their alerts; the requested backend and routing decision of a job

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 09:20:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('fal_budgets',
    sa.Column('scope', sa.String(length=100), nullable=False),
    sa.Column('daily_usd', sa.Numeric(precision=18, scale=9), nullable=True),
    sa.Column('monthly_usd', sa.Numeric(precision=18, scale=9), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('scope', name=op.f('pk_fal_budgets'))
    )
    op.create_table('fal_budget_alerts',
    sa.Column('scope', sa.String(length=100), nullable=False),
    sa.Column('period', sa.String(length=10), nullable=False),
    sa.Column('threshold', sa.Integer(), nullable=False),
    sa.Column('spent_usd', sa.Numeric(precision=18, scale=9), nullable=False),
    sa.Column('limit_usd', sa.Numeric(precision=18, scale=9), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('scope', 'period', 'threshold', name=op.f('pk_fal_budget_alerts'))
    )
    op.add_column('jobs', sa.Column('requested_backend', sa.String(length=16), nullable=True))
    op.add_column('jobs', sa.Column('routing', sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column('jobs', 'routing')
    op.drop_column('jobs', 'requested_backend')
    op.drop_table('fal_budget_alerts')
    op.drop_table('fal_budgets')
