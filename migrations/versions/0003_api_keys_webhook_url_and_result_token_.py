"""api keys, webhook url and result token on jobs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 07:09:45.153447
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('admin', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash'))
    )
    op.create_index(op.f('ix_api_keys_name'), 'api_keys', ['name'], unique=False)
    op.add_column('jobs', sa.Column('webhook_url', sa.Text(), nullable=True))
    op.add_column('jobs', sa.Column('result_token', sa.String(length=64), nullable=True))
    op.add_column('jobs', sa.Column('deduplicated_from', sa.Uuid(), nullable=True))
    op.add_column('jobs', sa.Column('dedup_attached', sa.Integer(), server_default='0', nullable=False))
    op.create_index('ix_jobs_client_input_sha256', 'jobs', ['client', 'input_sha256'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_jobs_client_input_sha256', table_name='jobs')
    op.drop_column('jobs', 'dedup_attached')
    op.drop_column('jobs', 'deduplicated_from')
    op.drop_column('jobs', 'result_token')
    op.drop_column('jobs', 'webhook_url')
    op.drop_index(op.f('ix_api_keys_name'), table_name='api_keys')
    op.drop_table('api_keys')
