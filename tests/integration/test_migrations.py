"""Alembic: a fresh file migrates from empty to head, matching the models exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from core.storage.migrate import alembic_config, head_revision, upgrade_to_head
from core.storage.models import Base
from core.storage.repository import create_db_engine

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
