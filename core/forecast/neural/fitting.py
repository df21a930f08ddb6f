"""Steps both models share: fitting epoch by epoch against V, scores, shrinkage, conformal band."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from core.forecast.features import (
    FloatArray,
    Scaling,
    _moving_mean,
)
from core.forecast.meta import BandCalibration
from core.forecast.neural.model import QUANTILES
from core.forecast.neural.samples import SampleSet

logger = logging.getLogger(__name__)


def predict_kw(
    model: Any, data: SampleSet, scaling: Scaling, horizon: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(point, P10, P90) kW of ``model`` on ``data``: its residual added to the base."""
    out = np.asarray(model.predict(data.x, batch_size=4096, verbose=0), dtype=np.float64)
    kw = data.baseline_kw + scaling.scale_kw * out[:, :horizon]
    p10 = data.baseline_kw + scaling.scale_kw * out[:, horizon : 2 * horizon]
    p90 = data.baseline_kw + scaling.scale_kw * out[:, 2 * horizon :]
    return kw, p10, p90


def _score(predicted_kw: FloatArray, actual_kw: FloatArray) -> float:
    """What the site cares about: the 60-minute value and the 15-minute average ending there
    (both kW RMSE)."""
    err60 = predicted_kw[:, -1] - actual_kw[:, -1]
    err15 = predicted_kw[:, -15:].mean(axis=1) - actual_kw[:, -15:].mean(axis=1)
    return float(np.sqrt(np.mean(err60**2)) + np.sqrt(np.mean(err15**2)))


def _smoothed(scores: list[float]) -> list[float]:
    """Centred 3-point mean of a validation curve (ends: what exists): one epoch's score is
    noisy, so the epoch count is chosen where the curve is low, not at a lucky dip."""
    out = []
    for i in range(len(scores)):
        window = scores[max(0, i - 1) : i + 2]
        out.append(float(np.mean(window)))
    return out


def fit_epochs(
    model: Any,
    train: SampleSet,
    epochs: int,
    val: SampleSet | None,
    scaling: Scaling,
    horizon: int,
    deadline: float,
    patience: int = 3,
    score_fn: Callable[[FloatArray, FloatArray], float] | None = None,
    batch_size: int = 256,
) -> tuple[int, float, list[float]]:
    """Fit epoch by epoch; with ``val``, stop when the smoothed validation score has not improved
    for ``patience`` epochs and keep that epoch's weights. Returns (best epoch, smoothed score,
    per-epoch validation scores)."""
    scores: list[float] = []
    weights: list[Any] = []
    for epoch in range(1, epochs + 1):
        model.fit(train.x, train.residual, batch_size=batch_size, epochs=1, verbose=0, shuffle=True)
        if val is not None:
            kw, _, _ = predict_kw(model, val, scaling, horizon)
            scores.append((score_fn or _score)(kw, val.actual_kw))
            weights.append(model.get_weights())
            smooth = _smoothed(scores)
            # The last point's smoothed value is provisional (one neighbour), so patience
            # counts from the best of the settled ones.
            if epoch - 1 - int(np.argmin(smooth)) > patience:
                break
        if time.monotonic() > deadline:
            logger.info("time budget reached after epoch %d", epoch)
            break
    if val is None or not scores:
        return epochs, float("inf"), scores
    smooth = _smoothed(scores)
    best = int(np.argmin(smooth))
    model.set_weights(weights[best])
    return best + 1, smooth[best], scores


SHRINK_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1)
# Width (steps) of the moving mean over the per-step shrink factors.
SHRINK_SMOOTH_STEPS = 9


def choose_step_shrink(
    model: Any, val: SampleSet, scaling: Scaling, horizon: int
) -> tuple[FloatArray, float]:
    """Per-step factors on the predicted residual (toward the seasonal base), chosen on V: for
    each step the factor of SHRINK_GRID with the lowest RMSE at that step, then smoothed over
    SHRINK_SMOOTH_STEPS neighbouring steps; (factors, V score with them).

    One factor for the whole hour was chosen by the far end (the 60-minute value and the last
    quarter hour); where the base is good an hour out but the first minutes need the recent
    level, it pulled the near steps toward the base too (seen on the year-long hourly file with
    the weekday-group base: 0.8 at every step, steps 1-60 worse than with 1.0)."""
    kw, _, _ = predict_kw(model, val, scaling, horizon)
    residual = kw - val.baseline_kw
    grid = np.asarray(SHRINK_GRID)
    rmse = np.stack(
        [
            np.sqrt(np.nanmean((val.baseline_kw + a * residual - val.actual_kw) ** 2, axis=0))
            for a in grid
        ]
    )  # (grid, horizon)
    factors = _moving_mean(grid[np.argmin(rmse, axis=0)][None, :], SHRINK_SMOOTH_STEPS)[0]
    score = _score(val.baseline_kw + factors[None, :] * residual, val.actual_kw)
    return factors, score


def conformal_band(
    point: FloatArray,
    p10: FloatArray,
    p90: FloatArray,
    actual: FloatArray,
    *,
    pooled: bool = False,
    coverage: float = QUANTILES[1] - QUANTILES[0],
    symmetric: bool = False,
) -> BandCalibration:
    """Split conformal calibration: shifts that make P10/P90 the 10th/90th percentiles of the
    outcomes on a calibration set (per step, or one pair for all steps with ``pooled``); with
    ``coverage`` above 0.8 the band aims that much wider (its tails stay symmetric).

    ``symmetric`` (pooled only): conformalised quantile regression, one shift q for both sides,
    the ``coverage`` quantile of max(P10 - y, y - P90). A calibration set of a few days whose
    load ran below the forecast throughout would otherwise move both edges down, and the next
    days, running above it, fall out of the band (seen on a site whose daily level drifts)."""
    steps = actual.shape[1]
    q_low = (1.0 - coverage) / 2.0
    q_high = 1.0 - q_low
    if symmetric:
        score = np.maximum(p10 - actual, actual - p90)
        q = float(np.quantile(score, coverage))
        low = np.full(steps, -q)
        high = np.full(steps, q)
    elif pooled:
        low = np.full(steps, float(np.quantile(actual - p10, q_low)))
        high = np.full(steps, float(np.quantile(actual - p90, q_high)))
    else:
        low = np.asarray(np.quantile(actual - p10, q_low, axis=0), dtype=np.float64)
        high = np.asarray(np.quantile(actual - p90, q_high, axis=0), dtype=np.float64)
    band = BandCalibration(
        p10_shift_kw=tuple(float(v) for v in low),
        p90_shift_kw=tuple(float(v) for v in high),
    )
    lo_b, hi_b = apply_band(point, p10, p90, band)
    coverage = float(np.mean((actual >= lo_b) & (actual <= hi_b)))
    return replace(band, validation_coverage=coverage)


def apply_band(
    kw: FloatArray, p10: FloatArray, p90: FloatArray, band: BandCalibration
) -> tuple[FloatArray, FloatArray]:
    """P10 and P90 moved by a calibrated band, never across the point forecast."""
    if not band.p10_shift_kw:
        return p10, p90
    low = np.asarray(band.p10_shift_kw)
    high = np.asarray(band.p90_shift_kw)
    return np.minimum(p10 + low, kw), np.maximum(p90 + high, kw)
