"""Shared fixtures: settings, a migrated SQLite file, a core on a fake clock; the layer markers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from core.clock import FakeClock
from core.config import Settings
from core.factory import build_core
from core.forecast.baseline import SeasonalMeanForecaster
from core.service import DsmCore
from core.storage.migrate import upgrade_to_head
from core.storage.repository import Storage, create_db_engine

START = datetime(2026, 7, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a temporary data dir, loopback BACnet, UTC."""
    return Settings(
        data_dir=tmp_path / "data",
        bacnet_address="127.0.0.1/8:47808",
        timezone="UTC",
        stale_after_s=300,
        flag_min_history_minutes=60,
    )


POSTGRES_URL_VAR = "OPEN_DSM_TEST_POSTGRES_URL"


def _reset_postgres(url: str) -> None:
    """Drop every table so each test migrates an empty database."""
    engine = create_db_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head by Alembic in this session; each test's SQLite database
    starts as a byte copy of it (the same file a migration per test made, without 60-100 ms of
    Alembic per test)."""
    path = tmp_path_factory.mktemp("migrated") / "head.sqlite3"
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade_to_head(engine)
    engine.dispose()  # the last connection closed: the WAL is checkpointed into the file
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_sqlite_file: Path
) -> Iterator[Engine]:
    """A real database migrated to head by Alembic: a SQLite file, and PostgreSQL when
    OPEN_DSM_TEST_POSTGRES_URL names a server (CI starts one)."""
    if request.param == "sqlite":
        database = tmp_path / "test.sqlite3"
        shutil.copyfile(migrated_sqlite_file, database)
        engine = create_db_engine(f"sqlite:///{database}")
    else:
        url = os.environ.get(POSTGRES_URL_VAR, "")
        if not url:
            pytest.skip(f"{POSTGRES_URL_VAR} is not set")
        _reset_postgres(url)
        engine = create_db_engine(url)
        upgrade_to_head(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def storage(engine: Engine) -> Storage:
    """The repository over the migrated file."""
    return Storage(engine)


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when told."""
    return FakeClock(START)


@pytest.fixture
def make_core(settings: Settings, storage: Storage, clock: FakeClock):  # type: ignore[no-untyped-def]
    """Build a DsmCore over the real database and the fake clock."""

    def build(**overrides: object) -> DsmCore:
        merged = settings.model_copy(update=overrides) if overrides else settings
        return build_core(merged, storage, clock, SeasonalMeanForecaster())

    return build


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the service's loop)."""
    return "asyncio"


_LAYERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its layer from its folder (tests/unit -> ``unit``, ...), unless the
    test names a layer itself (one e2e test lives beside the integration tests it shares helpers
    with); ``pytest -m unit`` then runs exactly the fast layer."""
    for item in items:
        if any(item.get_closest_marker(layer) for layer in _LAYERS):
            continue
        parts = item.path.parts
        for layer in _LAYERS:
            if "tests" in parts and layer in parts[parts.index("tests") :]:
                item.add_marker(getattr(pytest.mark, layer))
                break
