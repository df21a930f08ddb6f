"""The dispatch self-tuning's nightly runs: the choice and every candidate's replayed bill.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dispatch_tuning_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("night_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("chosen", sa.String(length=64), nullable=True),
        sa.Column("level_kw", sa.Float(), nullable=True),
        sa.Column("no_battery_kw", sa.Float(), nullable=True),
        sa.Column("history_days", sa.Float(), nullable=True),
        sa.Column("candidates", sa.JSON(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_tuning_runs")),
    )


def downgrade() -> None:
    op.drop_table("dispatch_tuning_runs")
