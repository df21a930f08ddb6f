"""The site calendar: dates (single, ranges, BACnet week-n-day) and the day type of each.

The weekday a closed day runs like is kept beside the entries in ``service_state`` ("calendar").

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calendar_entries",
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("day_type", sa.String(length=16), nullable=False),
        sa.Column("entry", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_calendar_entries")),
    )


def downgrade() -> None:
    op.drop_table("calendar_entries")
