"""remote attempts: fal submission and polling

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 06:30:01.981315
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


OUTCOMES_BEFORE = ("running", "succeeded", "failed", "retry", "crashed", "superseded", "cancelled")
OUTCOMES_AFTER = (*OUTCOMES_BEFORE, "lost")


def _outcome_check(values: tuple[str, ...]) -> None:
    op.drop_constraint(op.f("ck_attempts_attempt_outcome"), "attempts", type_="check")
    listed = ", ".join(f"'{v}'" for v in values)
    op.create_check_constraint(op.f("ck_attempts_attempt_outcome"), "attempts", f"outcome IN ({listed})")


def upgrade() -> None:
    _outcome_check(OUTCOMES_AFTER)
    op.add_column('attempts', sa.Column('submit_state', sa.Enum('sending', 'accepted', 'rejected', 'unknown', name='submit_state', native_enum=False, create_constraint=True, length=24), nullable=True))
    op.add_column('attempts', sa.Column('provider_request_id', sa.String(length=100), nullable=True))
    op.add_column('attempts', sa.Column('provider_status', sa.String(length=20), nullable=True))
    op.add_column('attempts', sa.Column('queue_position', sa.Integer(), nullable=True))
    op.add_column('attempts', sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('attempts', sa.Column('first_in_progress_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('attempts', sa.Column('next_poll_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('attempts', sa.Column('polls', sa.Integer(), server_default='0', nullable=False))
    op.add_column('attempts', sa.Column('poll_errors', sa.Integer(), server_default='0', nullable=False))
    op.create_index('ix_attempts_outcome_next_poll_at', 'attempts', ['outcome', 'next_poll_at'], unique=False)
    op.create_index('ix_attempts_provider_request_id', 'attempts', ['provider_request_id'], unique=False)
    op.add_column('jobs', sa.Column('possible_duplicate', sa.Boolean(), server_default='false', nullable=False))


def downgrade() -> None:
    op.drop_column('jobs', 'possible_duplicate')
    op.drop_index('ix_attempts_provider_request_id', table_name='attempts')
    op.drop_index('ix_attempts_outcome_next_poll_at', table_name='attempts')
    op.drop_column('attempts', 'poll_errors')
    op.drop_column('attempts', 'polls')
    op.drop_column('attempts', 'next_poll_at')
    op.drop_column('attempts', 'first_in_progress_at')
    op.drop_column('attempts', 'submitted_at')
    op.drop_column('attempts', 'queue_position')
    op.drop_column('attempts', 'provider_status')
    op.drop_column('attempts', 'provider_request_id')
    op.drop_column('attempts', 'submit_state')
    op.execute("UPDATE attempts SET outcome = 'failed' WHERE outcome = 'lost'")
    _outcome_check(OUTCOMES_BEFORE)
