"""The trained day-ahead forecast served through LiteRT: 96 clock-aligned steps with a band."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from core.forecast import day_ahead as da
from core.forecast.base import DayAheadForecaster, MinuteHistory
from core.forecast.baseline import SeasonalMeanForecaster
from core.forecast.evaluation import cvrmse_pct
from core.forecast.features import FeatureConfig, local_minutes, minute_of_local

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TZ = ZoneInfo("America/Chicago")
DAYS = 40


def _site(days: int, seed: int = 11) -> tuple[int, np.ndarray]:
    """Weekdays 7-18 h busy, Saturdays half, Sundays closed, day-to-day level changes, noise.

    Starts 2022-10-10 so that the last days cross the fall-back change (2022-11-06).
    """
    rng = np.random.default_rng(seed)
    start = minute_of_local("2022-10-10 00:00", TZ)
    minutes = np.arange(start, start + days * 1440)
    local = local_minutes(minutes, TZ)
    minute_of_day = local % 1440
    weekday = (local // 1440 + 3) % 7
    busy = (minute_of_day >= 7 * 60) & (minute_of_day < 18 * 60)
    level = np.where(weekday == 6, 0.0, np.where(weekday == 5, 0.5, 1.0))
    # The day's level drifts (AR(1)): recent days tell something about tomorrow.
    level_days = np.zeros(days + 2)
    for d in range(1, days + 2):
        level_days[d] = 0.8 * level_days[d - 1] + rng.normal(0, 1.5)
    daily = np.repeat(level_days, 1440)[: len(minutes)]
    kw = 4.0 + busy * level * (10.0 + daily) + rng.normal(0, 0.8, len(minutes))
    return start, np.maximum(kw, 0.0)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, np.ndarray]]:
    """One small training on the first 33 days (the rest is never seen), exported."""
    from core.forecast import neural
    from core.forecast.lite import write_artifact

    start, kw = _site(DAYS)
    train_days = 33
    small = neural.Candidate("small", FeatureConfig(), hidden_units=32)
    result = neural.train(
        start, kw[: train_days * 1440], TZ, time_budget_s=90.0, max_epochs=4, candidates=[small]
    )
    assert result.day_ahead_model is not None
    directory = write_artifact(
        tmp_path_factory.mktemp("da") / "model",
        result.tflite_model,
        result.meta,
        result.day_ahead_model,
    )
    yield directory, start, kw


def test_day_ahead_steps_are_clock_aligned_from_the_step_in_progress(
    artifact: tuple[Path, int, np.ndarray],
) -> None:
    from core.forecast.lite import LiteForecaster

    directory, start, kw = artifact
    forecaster = LiteForecaster.load(directory)
    assert isinstance(forecaster, DayAheadForecaster)
    span = forecaster.day_ahead_history_minutes
    made_at = datetime(2022, 11, 16, tzinfo=UTC)
    for offset in (0, 1, 7, 14):
        origin = start + 35 * 1440 + 600 + offset
        history = MinuteHistory(
            origin - span + 1, kw[origin - span + 1 - start : origin - start + 1]
        )
        forecast = forecaster.day_ahead(history, TZ, made_at)
        assert forecast is not None and forecast.steps == 96
        assert forecast.start_minute % 15 == 0
        # The step in progress holds the minute after the origin (the origin minute is done).
        assert forecast.start_minute <= origin + 1 < forecast.start_minute + 15
        assert forecast.step_start(1) - forecast.step_start(0) == timedelta(minutes=15)
        # The same step grid as the seasonal baseline's (the planner mixes neither).
        baseline = SeasonalMeanForecaster(2).day_ahead(history, TZ, made_at)
        assert baseline is not None and baseline.start_minute == forecast.start_minute


def test_day_ahead_beats_the_seasonal_mean_and_its_band_is_calibrated(
    artifact: tuple[Path, int, np.ndarray],
) -> None:
    from core.forecast.lite import LiteForecaster

    directory, start, kw = artifact
    forecaster = LiteForecaster.load(directory)
    # Unseen days 33..39 (the fall-back change is on day 27, seen in training); an origin
    # every 15 minutes with all 96 steps inside the data.
    end = start + len(kw) - 1
    origins = np.arange(start + 33 * 1440 + 14, end - 96 * 15, 15, dtype=np.int64)
    p50, p10, p90 = forecaster.predict_day_ahead(start, kw, origins, TZ)
    actual = da.day_ahead_targets(start, kw, origins)
    base = da.day_ahead_blocks(start, kw, origins, TZ).baseline_kw
    ours = cvrmse_pct(p50, actual)
    seasonal = cvrmse_pct(base, actual)
    # The shrink toward the seasonal mean is chosen on validation days: never clearly worse.
    assert ours <= 1.03 * seasonal, (ours, seasonal)
    coverage = float(np.mean((actual >= p10) & (actual <= p90)))
    # A small, quickly trained model on a few held-out days: calibrated within a loose band.
    assert 0.65 <= coverage <= 0.95, coverage
    assert np.all(p10 <= p50 + 1e-9) and np.all(p50 <= p90 + 1e-9)


def test_serving_the_day_ahead_never_imports_tensorflow(
    artifact: tuple[Path, int, np.ndarray],
) -> None:
    directory, start, kw = artifact
    data = directory.parent / "kw.npy"
    np.save(data, kw)
    code = (
        "import sys, numpy as np\n"
        "from datetime import UTC, datetime\n"
        "from zoneinfo import ZoneInfo\n"
        "from core.forecast.base import MinuteHistory\n"
        "from core.forecast.lite import LiteForecaster\n"
        f"kw = np.load({str(data)!r}); start = {start}\n"
        f"f = LiteForecaster.load({str(directory)!r})\n"
        "origin = start + 36 * 1440 + 5; span = f.day_ahead_history_minutes\n"
        "h = MinuteHistory(origin - span + 1, kw[origin - span + 1 - start: origin - start + 1])\n"
        "fc = f.day_ahead(h, ZoneInfo('America/Chicago'), datetime.now(UTC))\n"
        "assert fc is not None and fc.steps == 96\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
