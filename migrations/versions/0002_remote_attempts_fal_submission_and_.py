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
    # Batch mode: plain ALTERs on Postgres, a copy of the table on SQLite (no ALTER CONSTRAINT).
    listed = ", ".join(f"'{v}'" for v in values)
    with op.batch_alter_table("attempts") as batch:
        batch.drop_constraint(op.f("ck_attempts_attempt_outcome"), type_="check")
        batch.create_check_constraint(op.f("ck_attempts_attempt_outcome"), sa.text(f"outcome IN ({listed})"))


def _new_attempt_columns() -> list[sa.Column[object]]:
    return [
        sa.Column('submit_state', sa.Enum('sending', 'accepted', 'rejected', 'unknown', name='submit_state', native_enum=False, create_constraint=True, length=24), nullable=True),
        sa.Column('provider_request_id', sa.String(length=100), nullable=True),
        sa.Column('provider_status', sa.String(length=20), nullable=True),
        sa.Column('queue_position', sa.Integer(), nullable=True),
        sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('first_in_progress_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('next_poll_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('polls', sa.Integer(), server_default='0', nullable=False),
        sa.Column('poll_errors', sa.Integer(), server_default='0', nullable=False),
    ]


def upgrade() -> None:
    _outcome_check(OUTCOMES_AFTER)
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot ALTER in submit_state's CHECK constraint: add the columns in a table copy.
        with op.batch_alter_table('attempts', recreate='always') as batch:
            for column in _new_attempt_columns():
                batch.add_column(column)
    else:
        for column in _new_attempt_columns():
            op.add_column('attempts', column)
    op.create_index('ix_attempts_outcome_next_poll_at', 'attempts', ['outcome', 'next_poll_at'], unique=False)
    op.create_index('ix_attempts_provider_request_id', 'attempts', ['provider_request_id'], unique=False)
    op.add_column('jobs', sa.Column('possible_duplicate', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    op.drop_column('jobs', 'possible_duplicate')
    op.drop_index('ix_attempts_provider_request_id', table_name='attempts')
    op.drop_index('ix_attempts_outcome_next_poll_at', table_name='attempts')
    with op.batch_alter_table('attempts') as batch:  # a table copy on SQLite, ALTERs elsewhere
        batch.drop_constraint(op.f('ck_attempts_submit_state'), type_='check')
        for column in reversed(_new_attempt_columns()):
            batch.drop_column(column.name)
    op.execute("UPDATE attempts SET outcome = 'failed' WHERE outcome = 'lost'")
    _outcome_check(OUTCOMES_BEFORE)
