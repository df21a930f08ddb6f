"""Outdoor air temperature beside each stored minute (nullable).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("minute_readings") as batch:
        batch.add_column(sa.Column("outdoor_air_temp", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("minute_readings") as batch:
        batch.drop_column("outdoor_air_temp")
