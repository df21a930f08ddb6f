"""Training on a small synthetic site, TFLite export and serving without TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from core.forecast.base import MinuteHistory
from core.forecast.features import (
    FeatureConfig,
    design_matrix,
    feature_blocks,
    minute_of_local,
)

TZ = ZoneInfo("America/Chicago")


def _synthetic_site(days: int, seed: int = 1) -> tuple[int, np.ndarray]:
    """Occupied weekdays 7-18 h with a cycling compressor, closed Sundays, noise."""
    rng = np.random.default_rng(seed)
    start = minute_of_local("2022-07-01 00:00", TZ)
    t = np.arange(days * 1440)
    minute_of_day = t % 1440
    weekday = (t // 1440 + 4) % 7  # 2022-07-01 was a Friday (Monday = 0)
    occupied = (minute_of_day >= 7 * 60) & (minute_of_day < 18 * 60) & (weekday != 6)
    cycle = ((t % 19) < 9).astype(np.float64)
    kw = 3.0 + occupied * (6.0 + 6.0 * cycle) + rng.normal(0, 0.3, len(t))
    return start, kw


def test_serving_module_does_not_import_tensorflow() -> None:
    code = (
        "import sys, core.forecast.lite, core.forecast.neural;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('tensorflow','keras')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_too_little_history_is_refused() -> None:
    from core.forecast import neural

    start, kw = _synthetic_site(10)
    with pytest.raises(neural.InsufficientHistoryError, match="28 days"):
        neural.train(start, kw, TZ)


@pytest.mark.slow
def test_train_export_and_serve(tmp_path: Path) -> None:
    from core.forecast import day_ahead as da
    from core.forecast import neural
    from core.forecast.base import DayAheadForecaster
    from core.forecast.lite import LiteForecaster, read_artifact, write_artifact

    start, kw = _synthetic_site(36)
    small = neural.Candidate("small", FeatureConfig(), hidden_units=32)
    messages: list[str] = []
    result = neural.train(
        start,
        kw,
        TZ,
        time_budget_s=90.0,
        max_epochs=3,
        candidates=[small],
        progress=lambda fraction, message: messages.append(message),
    )
    assert messages and result.meta.candidate == "small"
    ours = result.holdout_metrics["ours"]
    # The synthetic site is highly regular: the model must beat persistence on the holdout.
    assert ours["rmse_1_60"] < result.holdout_metrics["persistence"]["rmse_1_60"]
    assert len(result.meta.band.p10_shift_kw) == 60
    assert result.meta.day_ahead is not None and result.day_ahead_model is not None

    directory = write_artifact(
        tmp_path / "model", result.tflite_model, result.meta, result.day_ahead_model
    )
    model_bytes, meta, day_bytes = read_artifact(directory)
    assert model_bytes == result.tflite_model and meta == result.meta
    assert day_bytes == result.day_ahead_model
    # Replacing an existing artifact works and leaves no temp dirs behind.
    write_artifact(tmp_path / "model", result.tflite_model, result.meta, result.day_ahead_model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    forecaster = LiteForecaster.load(directory)
    assert isinstance(forecaster, DayAheadForecaster)
    origins = np.arange(start + 20 * 1440, start + 20 * 1440 + 600, 7, dtype=np.int64)
    x = design_matrix(feature_blocks(start, kw, origins, TZ, meta.features), meta.scaling)
    keras_out = np.asarray(result.keras_model.predict(x, verbose=0), dtype=np.float64)
    lite_out = forecaster.predict_raw(x)
    assert lite_out.shape == keras_out.shape == (len(origins), 180)
    np.testing.assert_allclose(lite_out, keras_out, rtol=1e-4, atol=1e-4)
    # The day-ahead output too.
    blocks = da.day_ahead_blocks(start, kw, origins, TZ)
    xd = da.day_ahead_matrix(blocks, meta.scaling)
    keras_day = np.asarray(result.keras_day_ahead.predict(xd, verbose=0), dtype=np.float64)
    lite_day = forecaster.predict_day_ahead_raw(xd)
    assert lite_day.shape == keras_day.shape == (len(origins), 3 * 96)
    np.testing.assert_allclose(lite_day, keras_day, rtol=1e-4, atol=1e-4)

    origin = start + 29 * 1440 + 600
    span = forecaster.history_minutes
    history = MinuteHistory(origin - span + 1, kw[origin - span + 1 - start : origin - start + 1])
    made_at = datetime(2022, 7, 30, tzinfo=UTC)
    forecast = forecaster.forecast(history, TZ, made_at)
    assert forecast is not None
    assert forecast.origin_minute == origin and len(forecast.kw) == 60
    assert forecast.p10_kw is not None and forecast.p90_kw is not None
    p10, point, p90 = (np.array(v) for v in (forecast.p10_kw, forecast.kw, forecast.p90_kw))
    assert np.all(p10 <= point + 1e-9) and np.all(point <= p90 + 1e-9)
    assert np.all(np.isfinite(point))

    day_span = forecaster.day_ahead_history_minutes
    day_history = MinuteHistory(
        origin - day_span + 1, kw[origin - day_span + 1 - start : origin - start + 1]
    )
    day = forecaster.day_ahead(day_history, TZ, made_at)
    assert day is not None and day.steps == 96 and day.step_minutes == 15
    # Step 0 is the step in progress at the origin.
    assert day.start_minute <= origin + 1 < day.start_minute + 15 and day.start_minute % 15 == 0
    assert day.p10_kw is not None and day.p90_kw is not None
    d10, d50, d90 = (np.array(v) for v in (day.p10_kw, day.p50_kw, day.p90_kw))
    assert np.all(d10 <= d50 + 1e-9) and np.all(d50 <= d90 + 1e-9)
    # The synthetic site is closed at night and busy by day: the forecast says so.
    actual = da.day_ahead_targets(start, kw, np.array([origin]))[0]
    assert np.sqrt(np.nanmean((d50 - actual) ** 2)) < 3.0

    gap = MinuteHistory(history.start_minute, np.full(len(history.values_kw), np.nan))
    assert forecaster.forecast(gap, TZ, made_at) is None
    assert forecaster.day_ahead(gap, TZ, made_at) is None


def _synthetic_air(days: int, seed: int = 5) -> tuple[int, np.ndarray, np.ndarray]:
    """A site whose load follows the outdoor air (cooling): a warm spell adds kW."""
    start, kw = _synthetic_site(days, seed)
    rng = np.random.default_rng(seed)
    t = np.arange(days * 1440)
    # Daily swing plus slow weather fronts (a random walk, smoothed), degrees F.
    fronts = np.convolve(rng.normal(0, 1.0, len(t)), np.ones(2880) / 60.0, mode="same")
    air = 75.0 + 8.0 * np.sin(2 * np.pi * ((t % 1440) - 540) / 1440) + fronts
    kw = kw + 0.6 * np.maximum(air - 70.0, 0.0)
    return start, kw, air


@pytest.mark.slow
def test_training_with_and_without_outdoor_air() -> None:
    from core.forecast import neural

    start, kw, air = _synthetic_air(32)
    small = neural.Candidate("small", FeatureConfig(), hidden_units=32)
    with_air = neural.train(
        start,
        kw,
        TZ,
        outdoor_air=air,
        time_budget_s=90.0,
        max_epochs=3,
        candidates=[small],
        day_ahead=False,
    )
    names = [v["candidate"] for v in with_air.validation]
    # Outdoor air was offered and compared by validation.
    assert names == ["small", "small+air"]
    assert with_air.meta.scaling.scale_air > 1.0
    # Without outdoor air (most sites) the same training works, and nothing asks for it.
    without = neural.train(
        start, kw, TZ, time_budget_s=30.0, max_epochs=2, candidates=[small], day_ahead=False
    )
    assert [v["candidate"] for v in without.validation] == ["small"]
    assert not without.meta.features.outdoor_air
    # Too little outdoor air (a few days) is not offered.
    sparse = np.full(len(air), np.nan)
    sparse[-3 * 1440 :] = air[-3 * 1440 :]
    few = neural.train(
        start,
        kw,
        TZ,
        outdoor_air=sparse,
        time_budget_s=30.0,
        max_epochs=2,
        candidates=[small],
        day_ahead=False,
    )
    assert [v["candidate"] for v in few.validation] == ["small"]


def test_conformal_band_hits_its_coverage() -> None:
    from core.forecast import neural

    rng = np.random.default_rng(0)
    actual = rng.normal(10.0, 2.0, (4000, 5))
    point = np.full_like(actual, 10.0)
    # A band that is far too wide (about 99 %) is narrowed to 80 %.
    band = neural.conformal_band(point, point - 6.0, point + 6.0, actual)
    assert band.validation_coverage is not None
    assert abs(band.validation_coverage - 0.8) < 0.02
    fresh = rng.normal(10.0, 2.0, (4000, 5))
    low = point - 6.0 + np.array(band.p10_shift_kw)
    high = point + 6.0 + np.array(band.p90_shift_kw)
    assert abs(np.mean((fresh >= low) & (fresh <= high)) - 0.8) < 0.03
    pooled = neural.conformal_band(point, point - 1.0, point + 1.0, actual, pooled=True)
    assert len(set(pooled.p10_shift_kw)) == 1
    # Aiming wider (to make up for drift measured on the holdout) keeps the tails symmetric.
    wider = neural.conformal_band(point, point - 6.0, point + 6.0, actual, coverage=0.86)
    assert wider.validation_coverage is not None
    assert abs(wider.validation_coverage - 0.86) < 0.02
    assert np.all(np.array(wider.p10_shift_kw) < np.array(band.p10_shift_kw))
    assert np.all(np.array(wider.p90_shift_kw) > np.array(band.p90_shift_kw))


def test_symmetric_conformal_band_moves_both_edges_by_one_shift() -> None:
    from core.forecast import neural
    from core.forecast.meta import BandCalibration

    rng = np.random.default_rng(1)
    # Calibration days ran 2 kW below the forecast: the per-side band moves both edges down,
    # the symmetric one widens both by the same amount and still covers 80 % there.
    point = np.full((4000, 4), 10.0)
    below = rng.normal(8.0, 2.0, point.shape)
    per_side = neural.conformal_band(point, point - 1.0, point + 1.0, below, pooled=True)
    assert per_side.p90_shift_kw[0] < 0.0
    sym = neural.conformal_band(point, point - 1.0, point + 1.0, below, symmetric=True)
    assert sym.p10_shift_kw[0] == -sym.p90_shift_kw[0] and sym.p90_shift_kw[0] > 0.0
    assert sym.validation_coverage is not None
    assert abs(sym.validation_coverage - 0.8) < 0.02
    # Days that then run 2 kW above it stay far better covered than by the per-side band.
    above = rng.normal(12.0, 2.0, point.shape)

    def covered(band: BandCalibration) -> float:
        low = point - 1.0 + np.array(band.p10_shift_kw)
        high = point + 1.0 + np.array(band.p90_shift_kw)
        return float(np.mean((above >= low) & (above <= high)))

    assert covered(sym) > covered(per_side) + 0.2


def test_shrink_is_chosen_and_applied_per_step() -> None:
    from core.forecast import neural
    from core.forecast.features import FeatureConfig, Scaling

    rng = np.random.default_rng(4)
    horizon, n = 60, 3000
    residual = rng.normal(0.0, 1.0, (n, horizon))
    # The predicted residual is right in full for the first steps and twice too large an hour
    # out: the best factor runs from 1.0 down to 0.5.
    truth = np.interp(np.arange(horizon), [0, 20, 40, 59], [1.0, 1.0, 0.5, 0.5])
    base = np.full((n, horizon), 10.0)
    actual = base + truth * residual + rng.normal(0.0, 0.05, (n, horizon))
    outputs = np.concatenate([residual, residual - 1.0, residual + 1.0], axis=1)

    class Fixed:
        """Stands in for a Keras model: its outputs are given (the choice is pure logic)."""

        def predict(self, x: np.ndarray, **_: object) -> np.ndarray:
            return outputs

    val = neural.SampleSet(
        x=np.zeros((n, 1), dtype=np.float32),
        residual=residual,
        baseline_kw=base,
        actual_kw=actual,
        origins=np.arange(n),
    )
    factors, _ = neural.choose_step_shrink(Fixed(), val, Scaling(0.0, 1.0), horizon)
    assert factors.shape == (horizon,)
    assert factors[:12] == pytest.approx(1.0, abs=0.02)
    assert factors[-5:] == pytest.approx(0.5, abs=0.02)
    assert np.all(np.diff(factors) <= 1e-9)

    # Applied inside a real network: each step of the point head scales by its factor and the
    # P10/P90 heads keep their widths around it.
    model = neural.make_model(8, neural.Candidate("t", FeatureConfig(), hidden_units=8), 4, 0)
    x = rng.normal(size=(5, 8)).astype(np.float32)
    before = model.predict(x, verbose=0)
    step_factors = np.array([1.0, 0.5, 0.0, 1.1])
    neural.apply_shrink(model, step_factors)
    after = model.predict(x, verbose=0)
    np.testing.assert_allclose(after[:, :4], before[:, :4] * step_factors, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        after[:, 4:] - np.tile(after[:, :4], 2),
        before[:, 4:] - np.tile(before[:, :4], 2),
        atol=1e-4,
    )
