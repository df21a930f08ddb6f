"""Demand intervals (demand-charge management).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "demand_intervals",
        sa.Column("start_minute", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("length_minutes", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("average_kw", sa.Float(), nullable=False),
        sa.Column("observed_minutes", sa.Integer(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("period_start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("counted_for_peak", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("start_minute", "length_minutes", name=op.f("pk_demand_intervals")),
    )


def downgrade() -> None:
    op.drop_table("demand_intervals")
