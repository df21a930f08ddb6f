"""Alembic: a fresh file migrates from empty to head, matching the models exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from core.clock import FakeClock
from core.commands import InputKey
from core.config import Settings
from core.demand import DemandTracker
from core.factory import build_core
from core.forecast.baseline import SeasonalMeanForecaster
from core.site_config import demand_config
from core.snapshot import Snapshot
from core.storage.migrate import alembic_config, head_revision, upgrade_to_head
from core.storage.models import Base
from core.storage.repository import Storage, create_db_engine
from tests.conftest import START

pytestmark = pytest.mark.integration


def test_upgrade_from_empty_to_head_on_a_fresh_file(tmp_path: Path) -> None:
    path = tmp_path / "fresh.sqlite3"
    assert not path.exists()
    engine = create_db_engine(f"sqlite:///{path}")
    revision = upgrade_to_head(engine)
    assert revision == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert {"minute_readings", "model_runs", "forecast_log", "service_state"} <= tables
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    # Idempotent: a second start-up migrates nothing.
    assert upgrade_to_head(engine) == revision
    engine.dispose()


def test_downgrade_to_base_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'roundtrip.sqlite3'}"
    engine = create_db_engine(url)
    upgrade_to_head(engine)
    command.downgrade(alembic_config(url), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade_to_head(engine)
    assert "minute_readings" in inspect(engine).get_table_names()
    engine.dispose()


def test_models_match_the_migrated_schema_on_each_backend(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def _database_at(path: Path, revision: str) -> Engine:
    """A SQLite file migrated by Alembic to ``revision`` (not to head)."""
    engine = create_db_engine(f"sqlite:///{path}")
    config = alembic_config(str(engine.url))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return engine


def _old_form_state(
    storage: Storage, settings: Settings, input_kw: float, target_kw: float
) -> None:
    """What a service saved before priority arrays: a snapshot and a demand tracker holding the
    operator's target, and no ``commands`` document."""
    tracker = DemandTracker(demand_config(settings))
    tracker.set_target(target_kw)
    storage.set_state("snapshot", Snapshot(input_kw=input_kw).to_state())
    storage.set_state("demand_tracker", tracker.to_state())


@pytest.mark.anyio
async def test_state_saved_before_priority_arrays_is_migrated_and_restored(
    tmp_path: Path, settings: Settings
) -> None:
    engine = _database_at(tmp_path / "old.sqlite3", "0008")
    storage = Storage(engine)
    _old_form_state(storage, settings, input_kw=12.5, target_kw=30.0)
    assert storage.get_state("commands") is None

    assert upgrade_to_head(engine) == head_revision()  # runs 0009
    saved = storage.get_state("commands")
    assert saved is not None
    assert saved["kw"] == {"priority_array": [None] * 16, "relinquish_default": 12.5}
    assert saved["demand_target_kw"]["priority_array"] == [None] * 15 + [30.0]

    core = build_core(settings, storage, FakeClock(START), SeasonalMeanForecaster())
    await core.start()
    try:
        # What the start-time translation gave: the last reading held as the relinquish default,
        # the operator's target commanded at REST's priority.
        meter = core.reads.command_state(InputKey.METER_KW)
        assert meter.active_priority is None
        assert meter.present_value == 12.5
        assert core.snapshot.input_kw == 12.5
        target = core.reads.command_state(InputKey.DEMAND_TARGET_KW)
        assert target.active_priority == 16
        assert target.present_value == 30.0
        assert target.relinquish_default == settings.demand_target_kw
        assert core.snapshot.demand_target_kw == 30.0
    finally:
        await core.stop()
    engine.dispose()


def test_the_priority_array_migration_leaves_new_state_alone(
    tmp_path: Path, settings: Settings
) -> None:
    engine = _database_at(tmp_path / "new.sqlite3", "0008")
    storage = Storage(engine)
    _old_form_state(storage, settings, input_kw=12.5, target_kw=30.0)
    commands = {
        "kw": {"priority_array": [None] * 7 + [40.0] + [None] * 8, "relinquish_default": 11.0},
        "demand_target_kw": {"priority_array": [None] * 16, "relinquish_default": None},
    }
    storage.set_state("commands", commands)
    upgrade_to_head(engine)
    assert storage.get_state("commands") == commands
    # Downgrade is a no-op for the data (0008's code reads this form too).
    command.downgrade(alembic_config(str(engine.url)), "0008")
    assert storage.get_state("commands") == commands
    engine.dispose()


def test_the_priority_array_migration_fills_only_what_the_old_state_knew(
    tmp_path: Path, settings: Settings
) -> None:
    engine = _database_at(tmp_path / "plain.sqlite3", "0008")
    storage = Storage(engine)
    # A configured target (not the operator's) and a snapshot without a reading.
    storage.set_state("snapshot", Snapshot().to_state())
    storage.set_state("demand_tracker", DemandTracker(demand_config(settings)).to_state())
    upgrade_to_head(engine)
    assert storage.get_state("commands") is None
    engine.dispose()
