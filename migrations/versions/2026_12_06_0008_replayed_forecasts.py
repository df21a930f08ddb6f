"""Mark logged forecasts that were replayed over imported history rather than made live.

The service replays the forecaster it serves over the last day of imported minutes so that the
forecast-against-actual chart has a line from the first minute; those rows carry replayed = true
and are left out of the live error.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("forecast_log") as batch:
        batch.add_column(
            sa.Column("replayed", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("forecast_log") as batch:
        batch.drop_column("replayed")
