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
    Scaling,
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
    from core.forecast import neural
    from core.forecast.lite import LiteForecaster, read_artifact, write_artifact

    start, kw = _synthetic_site(30)
    small = neural.Candidate("small", FeatureConfig(), hidden_units=32)
    messages: list[str] = []
    result = neural.train(
        start,
        kw,
        TZ,
        time_budget_s=20.0,
        max_epochs=3,
        candidates=[small],
        progress=lambda fraction, message: messages.append(message),
    )
    assert messages and result.meta["candidate"] == "small"
    ours = result.holdout_metrics["ours"]
    # The synthetic site is highly regular: the model must beat persistence on the holdout.
    assert ours["rmse_1_60"] < result.holdout_metrics["persistence"]["rmse_1_60"]

    directory = write_artifact(tmp_path / "model", result.tflite_model, result.meta)
    model_bytes, meta = read_artifact(directory)
    assert model_bytes == result.tflite_model and meta["input_dim"] == result.meta["input_dim"]
    # Replacing an existing artifact works and leaves no temp dirs behind.
    write_artifact(tmp_path / "model", result.tflite_model, result.meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    forecaster = LiteForecaster.load(directory)
    config = FeatureConfig.from_dict(meta["features"])
    scaling = Scaling(**meta["scaling"])
    origins = np.arange(start + 20 * 1440, start + 20 * 1440 + 600, 7, dtype=np.int64)
    x = design_matrix(feature_blocks(start, kw, origins, TZ, config), scaling)
    keras_out = np.asarray(result.keras_model.predict(x, verbose=0), dtype=np.float64)
    lite_out = forecaster.predict_raw(x)
    assert lite_out.shape == keras_out.shape == (len(origins), 180)
    np.testing.assert_allclose(lite_out, keras_out, rtol=1e-4, atol=1e-4)

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

    gap = MinuteHistory(history.start_minute, np.full(len(history.values_kw), np.nan))
    assert forecaster.forecast(gap, TZ, made_at) is None
