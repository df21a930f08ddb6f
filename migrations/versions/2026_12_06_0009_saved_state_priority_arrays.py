"""Rewrite service state saved before the inputs had priority arrays into the priority-array form.

A service that saved its state before priority arrays existed has no priority array for the
meter or the demand target in the ``commands`` document. The core used to translate at every
start; this data migration does it once, so the core restores one form only:

- the meter (``kw``): an empty priority array whose relinquish default is the last reading the
  saved snapshot shows (``input_kw``), as a relinquish of every priority would hold it;
- the demand target (``demand_target_kw``): the operator's target the saved demand tracker held
  (``target_from_operator``), commanded at priority 16, REST's slot, where that write came from.

One difference from the translation at start: the migration cannot read the configured target,
so an operator's target equal to the configured one is commanded at priority 16 as well (the
value in force is the same; the start-time translation left the slot empty).

Downgrade changes nothing: revision 0008's code reads the priority-array form as it is.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Frozen here on purpose: a migration describes the data as it was, not as the code is now.
PRIORITY_COUNT = 16
REST_PRIORITY = 16
DEMAND_STATE_VERSION = 1
STATE_SNAPSHOT = "snapshot"
STATE_DEMAND = "demand_tracker"
STATE_COMMANDS = "commands"
METER_KEY = "kw"
TARGET_KEY = "demand_target_kw"

service_state = sa.table(
    "service_state",
    sa.column("key", sa.String(64)),
    sa.column("value", sa.JSON()),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)


def _number(value: Any) -> float | None:
    """A JSON number as a float; None for null, booleans, text and anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _operator_target(demand: Any) -> float | None:
    """The target the operator had set in a saved demand tracker, None if there was none."""
    if not isinstance(demand, dict) or demand.get("version") != DEMAND_STATE_VERSION:
        return None
    if not demand.get("target_from_operator"):
        return None
    return _number(demand.get("target_kw"))


def priority_arrays(snapshot: Any, demand: Any, commands: dict[str, Any]) -> dict[str, Any] | None:
    """The ``commands`` document with the missing meter and target arrays filled in from the
    saved snapshot and demand tracker; None when nothing is missing or nothing can fill it."""
    result = dict(commands)
    if METER_KEY not in result:
        input_kw = _number(snapshot.get("input_kw")) if isinstance(snapshot, dict) else None
        if input_kw is not None:
            result[METER_KEY] = {
                "priority_array": [None] * PRIORITY_COUNT,
                "relinquish_default": input_kw,
            }
    if TARGET_KEY not in result:
        target = _operator_target(demand)
        if target is not None:
            slots: list[float | None] = [None] * PRIORITY_COUNT
            slots[REST_PRIORITY - 1] = target
            result[TARGET_KEY] = {"priority_array": slots, "relinquish_default": None}
    return result if result != commands else None


def upgrade() -> None:
    bind = op.get_bind()
    keys = (STATE_SNAPSHOT, STATE_DEMAND, STATE_COMMANDS)
    rows = {
        key: value
        for key, value in bind.execute(
            sa.select(service_state.c.key, service_state.c.value).where(
                service_state.c.key.in_(keys)
            )
        )
    }
    saved = rows.get(STATE_COMMANDS)
    commands = saved if isinstance(saved, dict) else {}
    rewritten = priority_arrays(rows.get(STATE_SNAPSHOT), rows.get(STATE_DEMAND), commands)
    if rewritten is None:
        return
    now = datetime.now(UTC)
    if bind.dialect.name == "sqlite":  # the models store naive UTC there (UtcDateTime)
        now = now.replace(tzinfo=None)
    if STATE_COMMANDS in rows:
        bind.execute(
            service_state.update()
            .where(service_state.c.key == STATE_COMMANDS)
            .values(value=rewritten, updated_at=now)
        )
    else:
        bind.execute(
            service_state.insert().values(key=STATE_COMMANDS, value=rewritten, updated_at=now)
        )


def downgrade() -> None:
    # Nothing to undo: the priority-array form is what revision 0008's code reads too.
    pass
