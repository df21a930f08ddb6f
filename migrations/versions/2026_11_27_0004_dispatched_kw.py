"""The battery and EV kW this service dispatched, beside each stored minute (nullable).

The forecasters learn the building's base load, the meter less what the service dispatched, so
that a battery shaving last week's peaks is not learnt as the building's behaviour.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("minute_readings") as batch:
        batch.add_column(sa.Column("dispatched_kw", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("minute_readings") as batch:
        batch.drop_column("dispatched_kw")
