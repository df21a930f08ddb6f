"""Training in a separate process through the service's manager, over a real SQLite file.

Accepted models are served and reloaded after a restart; rejected, failed and interrupted runs keep
the previous model and are recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete

from core.clock import FakeClock
from core.config import Settings
from core.errors import Busy
from core.factory import build_core
from core.forecast.baseline import SeasonalMeanForecaster
from core.service import DsmCore
from core.storage.models import MinuteReading
from core.storage.repository import Storage
from core.timegrid import minute_of, minute_start
from core.training import TrainingManager

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]

END = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)


def _site(days: int, noise_kw: float, seed: int = 3) -> tuple[int, np.ndarray]:
    """Occupied 7-18 h except Sundays, a cycling compressor, noise; ends at END."""
    rng = np.random.default_rng(seed)
    start = minute_of(END) - days * 1440
    t = np.arange(days * 1440)
    minute_of_day = t % 1440
    weekday = (t // 1440 + minute_start(start).weekday()) % 7
    occupied = (minute_of_day >= 7 * 60) & (minute_of_day < 18 * 60) & (weekday != 6)
    cycle = ((t % 19) < 9).astype(np.float64)
    kw = 3.0 + occupied * (6.0 + 6.0 * cycle)
    if noise_kw:
        kw = kw + rng.normal(0, noise_kw, len(t)) + occupied * rng.normal(0, 2.0, len(t))
    return start, kw


def _weekly_repeat(days: int) -> tuple[int, np.ndarray]:
    """A load that repeats exactly every week: the seasonal baseline is perfect on it."""
    start = minute_of(END) - days * 1440
    rng = np.random.default_rng(5)
    week = 5 + 4 * rng.random(7 * 1440)
    return start, np.tile(week, days // 7 + 1)[: days * 1440]


async def _manager(settings: Settings, storage: Storage) -> tuple[DsmCore, TrainingManager]:
    clock = FakeClock(END + timedelta(seconds=30))
    core = build_core(settings, storage, clock, SeasonalMeanForecaster())
    await core.start()
    manager = TrainingManager(settings, storage, clock, core, core.writer)
    await manager.start()
    return core, manager


@pytest.fixture
def train_settings(settings: Settings, tmp_path: Path) -> Settings:
    """Settings with a short training budget and the real database file."""
    return settings.model_copy(
        update={"training_time_budget_s": 20.0, "db": f"sqlite:///{tmp_path / 'train.sqlite3'}"}
    )


@pytest.fixture
def train_storage(train_settings: Settings) -> Storage:
    """Storage on the file the training child process opens too."""
    from core.storage.migrate import upgrade_to_head
    from core.storage.repository import create_db_engine

    engine = create_db_engine(train_settings.database_url)
    upgrade_to_head(engine)
    return Storage(engine)


async def test_accepted_model_is_served_and_reloaded(train_settings, train_storage) -> None:
    start, kw = _site(35, noise_kw=0.4)
    train_storage.insert_missing_minutes(start, kw, "import")
    core, manager = await _manager(train_settings, train_storage)
    assert manager.served_run_id is None
    run_id = await manager.trigger("api")
    outcome = await manager.wait()
    assert outcome is not None and outcome.run_id == run_id, outcome
    assert outcome.status == "accepted", outcome.message
    run = (await core.reads.model_runs())[0]
    assert run.status == "accepted" and Path(str(run.artifact_path)).is_dir()
    assert run.rmse_kw is not None and run.baseline_metrics is not None
    assert run.rmse_kw < run.baseline_metrics["mean-2-weeks"]["rmse_60"]
    assert run.rmse_kw < run.baseline_metrics["persistence"]["rmse_60"]
    assert run.training_minutes and run.rows_used == 35 * 1440

    snapshot = await core.tick()
    assert manager.served_run_id == run_id
    assert snapshot.model.forecaster.startswith("mlp")
    assert snapshot.model.heldout_rmse_kw == pytest.approx(run.rmse_kw)
    assert snapshot.model.rmse_kw == pytest.approx(run.rmse_kw)
    assert snapshot.model.training_minutes == pytest.approx(run.training_minutes)
    forecast = snapshot.forecast
    assert forecast is not None and forecast.forecaster == snapshot.model.forecaster
    assert forecast.p10_kw is not None and forecast.p90_kw is not None
    assert all(
        lo <= mid <= hi
        for lo, mid, hi in zip(forecast.p10_kw, forecast.kw, forecast.p90_kw, strict=True)
    )
    await core.stop()

    # A restart serves the same model.
    again, manager2 = await _manager(train_settings, train_storage)
    assert manager2.served_run_id == run_id
    assert (await again.tick()).model.version == run.model_version

    # The load turns exactly weekly: the next run cannot beat the seasonal baseline, is
    # rejected, writes no artifact, and the accepted model keeps serving.
    with train_storage.session() as session, session.begin():
        session.execute(delete(MinuteReading))
    start, kw = _weekly_repeat(35)
    train_storage.insert_missing_minutes(start, kw, "import")
    await manager2.trigger("schedule")
    second = await manager2.wait()
    assert second is not None and second.status == "rejected", second.message
    assert "does not beat" in second.message
    assert [p.name for p in train_settings.models_dir.iterdir()] == [run.model_version]
    assert manager2.served_run_id == run_id
    assert (await again.tick()).model.version == run.model_version
    await again.stop()


async def test_interrupted_and_failed_runs_keep_the_baseline(train_settings, train_storage):
    # An interrupted run (the service died mid-training) is marked failed at start-up.
    stale = train_storage.add_model_run(started_at=END, status="running", trigger="schedule")
    start, kw = _site(10, noise_kw=0.4)
    train_storage.insert_missing_minutes(start, kw, "import")
    core, manager = await _manager(train_settings, train_storage)
    runs = {r.id: r for r in await core.reads.model_runs()}
    assert runs[stale].status == "failed" and "interrupted" in str(runs[stale].error_text)
    await manager.trigger("cli")
    with pytest.raises(Busy):
        await manager.trigger("api")  # one run at a time
    outcome = await manager.wait()
    assert outcome is not None and outcome.status == "failed"
    assert "28 days" in outcome.message
    run = (await core.reads.model_runs())[0]
    assert run.status == "failed" and "28 days" in str(run.error_text)
    assert manager.served_run_id is None
    assert (await core.tick()).model.forecaster == "mean-2-weeks"
    await core.stop()


def test_window_after_a_gap_uses_the_history_it_has(storage: Storage) -> None:
    from core.trainer import choose_window

    start, kw = _site(35, noise_kw=0.4)
    old_start = start - 300 * 1440  # the import ends about ten months before the live minutes
    storage.insert_missing_minutes(old_start, kw, "import")
    live = minute_of(END) - 30
    storage.insert_missing_minutes(live, np.full(31, 7.0), "live")
    window = choose_window(storage, 20.0)
    assert window is not None
    lo, end, notes = window
    assert end == old_start + 35 * 1440 - 1
    assert lo == old_start
    assert len(notes) == 1 and "skipped 31 newer stored minutes" in notes[0]
    # With enough recent data nothing is skipped.
    storage.insert_missing_minutes(start, kw, "import")
    lo, end, notes = choose_window(storage, 20.0) or (0, 0, ["none"])
    assert end == minute_of(END) and notes == []


def test_cli_training_after_an_old_import_with_outdoor_air(
    train_settings: Settings, train_storage: Storage
) -> None:
    from core.trainer import run_training

    start, kw = _site(34, noise_kw=0.4)
    old_start = start - 200 * 1440
    t = np.arange(len(kw))
    air = 70.0 + 10.0 * np.sin(2 * np.pi * ((t % 1440) - 540) / 1440)
    air = air + np.convolve(
        np.random.default_rng(2).normal(0, 1, len(t)), np.ones(1440) / 40, "same"
    )
    kw = kw + 0.5 * np.maximum(air - 72.0, 0.0)
    train_storage.insert_missing_minutes(old_start, kw, "import")
    stored = train_storage.upsert_weather(
        {old_start + i: float(v) for i, v in enumerate(air.tolist())}
    )
    assert stored == len(kw)
    train_storage.insert_missing_minutes(minute_of(END) - 9, np.full(10, 6.0), "live")
    outcome = run_training(
        train_settings.database_url,
        str(train_settings.models_dir),
        "UTC",
        "cli",
        time_budget_s=25.0,
    )
    assert outcome.status in ("accepted", "rejected"), outcome.message
    assert "skipped 10 newer stored minutes" in outcome.message
    run = train_storage.model_runs(1)[0]
    assert run.train_end == minute_start(old_start + len(kw) - 1)
    if outcome.artifact_path:
        from core.forecast.lite import LiteForecaster

        served = LiteForecaster.load(outcome.artifact_path)
        # Outdoor air was offered: the validation compared the model with and without it.
        names = [v["candidate"] for v in served.meta.validation]
        assert any(name.endswith("+air") for name in names), names
        assert served.meta.notes and "skipped" in served.meta.notes[0]
