"""Training of the neural forecaster (the only module that imports TensorFlow).

Model: a direct multi-output MLP. Inputs are the last minutes (1-minute, then block means),
(optionally) level offsets of the last 15..360 minutes against the seasonal mean,
smoothed same-wall-clock windows 1 day and 1..3 weeks earlier (context before the origin plus
the 60 target minutes), the seasonal-mean baseline and the local calendar. It predicts the 60
minutes as a residual over the smoothed seasonal mean, with P10/P90 heads (pinball loss) that are
constructed to bracket the point forecast. All scaling, window lengths and the number of epochs
are chosen on the site's own history (training statistics and an inner validation split).

Splits, oldest to newest: fit part | inner validation (V) | holdout (H). Candidates are trained on
the fit part and compared on V (with and without outdoor air where the site has it); the chosen
candidate is scored on H (never used for a choice) beside persistence and mean-2-weeks, and that
very model is exported as TFLite (a refit on everything would leave the exported weights, their
band and their figures unchecked; the features carry the newest days' level). The P10/P90 band
is calibrated by split conformal shifts per step (on V for the holdout figures, on V and H for
the served band). A second, day-ahead model (96 clock-aligned 15-minute steps,
residual over the mean-2-weeks day-ahead) is trained, chosen and calibrated the same way.

Cost does not grow with history: training reads a bounded window (the trainer loads at most
``TRAINING_HISTORY_WEEKS``) and fits on every ``TRAIN_STRIDE``-th origin (thinner where needed to
stay under ``MAX_FIT_SAMPLES``) of at most ``MAX_TRAIN_WEEKS`` weeks.

TensorFlow is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import io
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.calendar import SiteCalendar
from core.forecast import day_ahead as da
from core.forecast.base import HORIZON_MINUTES
from core.forecast.evaluation import cvrmse_pct, forecast_metrics
from core.forecast.features import (
    NO_GROUPS,
    FeatureConfig,
    FloatArray,
    IntArray,
    Scaling,
    WeekdayGroups,
    _moving_mean,
    design_matrix,
    feature_blocks,
    persistence_windows,
    seasonal_mean_windows,
    target_windows,
    training_origins,
)
from core.forecast.meta import BandCalibration, DayAheadMeta, ModelMeta
from core.timegrid import MINUTES_PER_DAY, MINUTES_PER_WEEK

logger = logging.getLogger(__name__)

MODEL_NAME = "mlp-residual"
# Two weeks of lags before the first training origin plus two weeks of origins to split.
MIN_HISTORY_DAYS = 28
MIN_VALID_FRACTION = 0.7
# Origins need at least this much history for their seasonal windows (1 and 2 weeks back).
FIRST_ORIGIN_DAYS = 14
# The rolling training window never exceeds this, so nightly cost stays bounded.
MAX_TRAIN_WEEKS = 12
QUANTILES = (0.1, 0.9)
# The widest coverage the served P10-P90 band may aim at to make up for drift after training.
MAX_BAND_COVERAGE = 0.86
# Neighbouring minutes' origins are nearly the same sample: every third one is enough.
TRAIN_STRIDE = 3
MAX_FIT_SAMPLES = 25_000
# Outdoor air is offered to the models when at least this share of the minutes have it.
MIN_AIR_COVERAGE = 0.5
DAY_AHEAD_STRIDE = 15
# Weeks of origins (before H) each model's seasonal base (weekday groups or not) is chosen on.
BASE_CHOICE_WEEKS = 4

_CHUNK = 4096
_M_ARENA_MAX = -8  # glibc mallopt parameter

ProgressFn = Callable[[float, str], None]


class InsufficientHistoryError(ValueError):
    """Too little (valid) history to train and validate a model."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One configuration compared on the inner validation split."""

    name: str
    features: FeatureConfig
    hidden_units: int = 128
    dropout: float = 0.3
    l2: float = 1e-4
    # 3e-4 rather than 1e-3: a flatter validation curve, so the epoch count chosen on V carries
    # over to the refit on more data (at 1e-3 the 60-minute error is best after 1-2 epochs).
    learning_rate: float = 3e-4
    train_weeks: int | None = None  # None: everything up to MAX_TRAIN_WEEKS


LEVEL_MINUTES = (15, 60, 180, 360)


def default_candidates() -> list[Candidate]:
    """The few configurations the inner validation chooses between."""
    short = FeatureConfig()
    level = FeatureConfig(level_minutes=LEVEL_MINUTES)
    long_context = FeatureConfig(
        seasonal_days=(1, 7, 14, 21),
        baseline_weeks=3,
        seasonal_context_minutes=180,
        recent_coarse_minutes=360,
        coarse_step_minutes=10,
        seasonal_step_minutes=10,
        level_minutes=LEVEL_MINUTES,
    )
    return [
        Candidate("2w-ctx60", short),
        Candidate("2w-ctx60-level", level),
        Candidate("3w-ctx180-level", long_context),
    ]


@dataclass(slots=True)
class TrainResult:
    """The exported models, their metadata and the honest holdout evaluation."""

    tflite_model: bytes
    meta: ModelMeta
    holdout_metrics: dict[str, dict[str, float]]
    validation: list[dict[str, Any]]
    train_s: float
    day_ahead_model: bytes | None = None
    keras_model: Any = field(default=None, repr=False)
    keras_day_ahead: Any = field(default=None, repr=False)


@dataclass(slots=True)
class SampleSet:
    """Training samples: one row per origin, the residual to learn and what it is added to."""

    x: npt.NDArray[np.float32]
    residual: FloatArray
    baseline_kw: FloatArray
    actual_kw: FloatArray
    origins: IntArray


def _check_history(values_kw: FloatArray) -> None:
    days = len(values_kw) / MINUTES_PER_DAY
    valid = float(np.mean(~np.isnan(values_kw))) if len(values_kw) else 0.0
    if days < MIN_HISTORY_DAYS or valid * days < MIN_HISTORY_DAYS * MIN_VALID_FRACTION:
        raise InsufficientHistoryError(
            f"need at least {MIN_HISTORY_DAYS} days of minute history with "
            f">= {MIN_VALID_FRACTION:.0%} valid minutes; have {days:.1f} days, "
            f"{valid:.0%} valid"
        )


def _build(
    start_minute: int,
    values_kw: FloatArray,
    origins: IntArray,
    tz: ZoneInfo,
    config: FeatureConfig,
    scaling: Scaling,
    outdoor_air: FloatArray | None = None,
    calendar: SiteCalendar | None = None,
) -> SampleSet:
    # Chunks bound the temporary windows' memory (the training process must stay small).
    parts: list[SampleSet] = []
    for lo in range(0, max(len(origins), 1), _CHUNK):
        chunk = origins[lo : lo + _CHUNK]
        blocks = feature_blocks(start_minute, values_kw, chunk, tz, config, outdoor_air, calendar)
        actual = target_windows(start_minute, values_kw, chunk, config.horizon_minutes)
        residual = (actual - blocks.baseline_kw) / scaling.scale_kw
        parts.append(
            SampleSet(
                x=design_matrix(blocks, scaling),
                residual=residual.astype(np.float32),
                baseline_kw=blocks.baseline_kw.astype(np.float32),
                actual_kw=actual.astype(np.float32),
                origins=chunk,
            )
        )
    return _concat(parts)


def make_model(input_dim: int, candidate: Candidate, horizon: int, seed: int) -> Any:
    """The untrained network of ``candidate``: ``horizon`` point outputs, then P10 and P90."""
    import keras

    keras.utils.set_random_seed(seed)
    reg = keras.regularizers.l2(candidate.l2) if candidate.l2 > 0 else None
    inputs = keras.Input((input_dim,), name="features")
    h = keras.layers.Dense(candidate.hidden_units, activation="relu", kernel_regularizer=reg)(
        inputs
    )
    h = keras.layers.Dropout(candidate.dropout)(h)
    h = keras.layers.Dense(candidate.hidden_units, activation="relu", kernel_regularizer=reg)(h)
    h = keras.layers.Dropout(candidate.dropout)(h)
    mean = keras.layers.Dense(horizon, name="mean")(h)
    # Band widths are non-negative by construction, so P10 <= point <= P90 always holds.
    low = keras.layers.Dense(horizon, activation="softplus", name="low_width")(h)
    high = keras.layers.Dense(horizon, activation="softplus", name="high_width")(h)
    p10 = keras.layers.Subtract(name="p10")([mean, low])
    p90 = keras.layers.Add(name="p90")([mean, high])
    outputs = keras.layers.Concatenate(name="mean_p10_p90")([mean, p10, p90])
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(candidate.learning_rate),
        loss=_make_loss(horizon),
    )
    return model


def _make_loss(horizon: int) -> Callable[[Any, Any], Any]:
    from keras import ops

    q_low, q_high = QUANTILES

    def pinball(err: Any, q: float) -> Any:
        return ops.mean(ops.maximum(q * err, (q - 1.0) * err))

    def loss(y_true: Any, y_pred: Any) -> Any:
        mean = y_pred[:, :horizon]
        p10 = y_pred[:, horizon : 2 * horizon]
        p90 = y_pred[:, 2 * horizon :]
        mse = ops.mean(ops.square(y_true - mean))
        return mse + pinball(y_true - p10, q_low) + pinball(y_true - p90, q_high)

    return loss


def _predict_kw(
    model: Any, data: SampleSet, scaling: Scaling, horizon: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
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


def _fit(
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
            kw, _, _ = _predict_kw(model, val, scaling, horizon)
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
    kw, _, _ = _predict_kw(model, val, scaling, horizon)
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


def apply_shrink(model: Any, factor: float | FloatArray) -> None:
    """Scale the point head (P10/P90 keep their widths around it) inside the model itself: one
    factor, or one per output step."""
    factors = np.asarray(factor, dtype=np.float32)
    if factors.ndim == 0 and float(factors) == 1.0:
        return
    layer = model.get_layer("mean")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * factors, bias * factors])


def _window_start(end_origin: int, first_origin: int, weeks: int | None) -> int:
    weeks = MAX_TRAIN_WEEKS if weeks is None else min(weeks, MAX_TRAIN_WEEKS)
    return max(first_origin, end_origin - weeks * MINUTES_PER_WEEK)


def export_tflite(model: Any) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer with builtin ops only."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    # Keras prints the intermediate SavedModel's signature to stdout; keep stdout clean.
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        flatbuffer = bytes(converter.convert())
    logger.debug("TFLite conversion output: %s", captured.getvalue())
    return flatbuffer


def _coverage(values: FloatArray | None) -> float:
    if values is None or len(values) == 0:
        return 0.0
    return float(np.mean(~np.isnan(values)))


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
    lo_b, hi_b = _calibrated(point, p10, p90, band)
    coverage = float(np.mean((actual >= lo_b) & (actual <= hi_b)))
    return replace(band, validation_coverage=coverage)


def _calibrated(
    kw: FloatArray, p10: FloatArray, p90: FloatArray, band: BandCalibration
) -> tuple[FloatArray, FloatArray]:
    if not band.p10_shift_kw:
        return p10, p90
    low = np.asarray(band.p10_shift_kw)
    high = np.asarray(band.p90_shift_kw)
    return np.minimum(p10 + low, kw), np.maximum(p90 + high, kw)


def _day_ahead_score(predicted: FloatArray, actual: FloatArray) -> float:
    return float(np.sqrt(np.mean((predicted - actual) ** 2)))


def _build_day_ahead(
    start_minute: int,
    values_kw: FloatArray,
    origins: IntArray,
    tz: ZoneInfo,
    scaling: Scaling,
    outdoor_air: FloatArray | None,
    use_air: bool,
    smooth_steps: int = 1,
    groups: WeekdayGroups | None = None,
    calendar: SiteCalendar | None = None,
) -> SampleSet:
    parts: list[SampleSet] = []
    for lo in range(0, max(len(origins), 1), _CHUNK):
        chunk = origins[lo : lo + _CHUNK]
        blocks = da.day_ahead_blocks(
            start_minute, values_kw, chunk, tz, outdoor_air, use_air, smooth_steps, groups, calendar
        )
        actual = da.day_ahead_targets(start_minute, values_kw, chunk)
        residual = (actual - blocks.baseline_kw) / scaling.scale_kw
        parts.append(
            SampleSet(
                x=da.day_ahead_matrix(blocks, scaling),
                residual=residual.astype(np.float32),
                baseline_kw=blocks.baseline_kw.astype(np.float32),
                actual_kw=actual.astype(np.float32),
                origins=chunk,
            )
        )
    return _concat(parts)


# Few distinct days to learn from: a small network, small batches, a faster learning rate.
DAY_AHEAD_CANDIDATE = Candidate(
    "day-ahead", FeatureConfig(), hidden_units=32, dropout=0.1, learning_rate=1e-3
)
DAY_AHEAD_BATCH = 32
DAY_AHEAD_MAX_EPOCHS = 30
DAY_AHEAD_SHRINK_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(slots=True)
class _DayAheadResult:
    tflite: bytes
    meta: DayAheadMeta
    keras_model: Any
    validation: list[dict[str, Any]]


def _train_day_ahead(
    start_minute: int,
    values_kw: FloatArray,
    tz: ZoneInfo,
    outdoor_air: FloatArray | None,
    air_ok: bool,
    bounds: tuple[int, int, int],
    scaling: Scaling,
    max_epochs: int,
    seed: int,
    deadline: float,
    found: WeekdayGroups = NO_GROUPS,
    calendar: SiteCalendar | None = None,
) -> _DayAheadResult | None:
    """Choose epochs and shrink on V, calibrate on V, score on H; the served band is calibrated
    on V and H together. ``air_ok``: use outdoor air (the 60-minute validation chose it);
    ``found``: the weekday groups found on the days before V, a candidate base."""
    import keras

    fit_lo, val_start, holdout_start = bounds
    steps_span = da.STEPS * da.STEP
    horizon = da.STEPS
    end_minute = start_minute + len(values_kw) - 1

    def origins(lo: int, hi: int) -> IntArray:
        return da.day_ahead_origins(start_minute, values_kw, lo, hi, DAY_AHEAD_STRIDE)

    # Fit origins' 24 h end before V; V's before H (where the history allows); H's in the data.
    fit_o = origins(fit_lo, val_start - steps_span - 16)
    val_o = origins(val_start, holdout_start - steps_span - 16)
    if len(val_o) < 50:
        # Short histories: V's day-ahead targets may run into H (choices only, never scores).
        val_o = origins(val_start, holdout_start - 1)
    hold_o = origins(holdout_start, end_minute - steps_span - 16)
    if len(fit_o) < 2 * 96 or len(val_o) < 20:
        logger.info("day-ahead: too few origins (%d fit, %d validation)", len(fit_o), len(val_o))
        return None
    # The seasonal base (same weekday, or every day of the weekday's group, found on the days
    # before V) and its smoothing, chosen by the base's own error before any network. The bases
    # fit nothing, so they are scored on the fit origins of the last BASE_CHOICE_WEEKS weeks
    # before V as well as on V: a few V days alone swing the choice (on the shared file the 6 V days
    # favour the same weekday while every other stretch of 6 days or more favours the groups).
    choice_lo = max(
        val_start - BASE_CHOICE_WEEKS * MINUTES_PER_WEEK, start_minute + da.HISTORY_MINUTES
    )
    choice_o = np.concatenate([fit_o[fit_o >= choice_lo], val_o])
    bases: dict[WeekdayGroups | None, FloatArray] = {
        None: da.day_ahead_blocks(
            start_minute, values_kw, choice_o, tz, calendar=calendar
        ).baseline_kw
    }
    if found != NO_GROUPS:
        bases[found] = da.day_ahead_blocks(
            start_minute, values_kw, choice_o, tz, groups=found, calendar=calendar
        ).baseline_kw
    groups, smooth, base_scores = da.choose_base(
        bases, da.day_ahead_targets(start_minute, values_kw, choice_o)
    )
    del bases
    logger.info(
        "day-ahead base: weekday groups %s (found %s), smoothing %d steps "
        "(CV(RMSE) over %d origins: %s)",
        groups,
        found,
        smooth,
        len(choice_o),
        {k: round(v, 2) for k, v in base_scores.items()},
    )
    # Outdoor air: used when the 60-minute model's validation chose it (same site, same air);
    # comparing both here too would halve the day-ahead model's share of the time budget.
    options = [air_ok]
    results: list[dict[str, Any]] = []
    best: tuple[float, bool, Any, int] | None = None
    for k, use_air in enumerate(options):
        if best is not None and time.monotonic() > deadline:
            break
        # Each option gets an equal share of the time left.
        share = time.monotonic() + (deadline - time.monotonic()) / (len(options) - k)
        fit = _build_day_ahead(
            start_minute,
            values_kw,
            fit_o,
            tz,
            scaling,
            outdoor_air,
            use_air,
            smooth,
            groups,
            calendar,
        )
        val = _build_day_ahead(
            start_minute,
            values_kw,
            val_o,
            tz,
            scaling,
            outdoor_air,
            use_air,
            smooth,
            groups,
            calendar,
        )
        model = make_model(fit.x.shape[1], DAY_AHEAD_CANDIDATE, horizon, seed)
        epoch, score, curve = _fit(
            model,
            fit,
            DAY_AHEAD_MAX_EPOCHS,
            val,
            scaling,
            horizon,
            share,
            score_fn=_day_ahead_score,
            batch_size=DAY_AHEAD_BATCH,
        )
        kw, _, _ = _predict_kw(model, val, scaling, horizon)
        results.append(
            {
                "candidate": f"day-ahead{'+air' if use_air else ''}",
                "best_epoch": epoch,
                "score": score,
                "curve": [round(x, 4) for x in curve],
                "cvrmse_15min_day_ahead": cvrmse_pct(kw, val.actual_kw),
                "baseline_cvrmse": cvrmse_pct(val.baseline_kw, val.actual_kw),
            }
        )
        logger.info("day-ahead candidate %s", results[-1])
        if best is None or score < best[0]:
            best = (score, use_air, model.get_weights(), epoch)
        del fit, model
        keras.backend.clear_session()
        gc.collect()
    assert best is not None
    _, use_air, weights, epochs = best
    val = _build_day_ahead(
        start_minute, values_kw, val_o, tz, scaling, outdoor_air, use_air, smooth, groups, calendar
    )
    model = make_model(val.x.shape[1], DAY_AHEAD_CANDIDATE, horizon, seed)

    def shrunk(factor: float) -> None:
        model.set_weights(weights)
        apply_shrink(model, factor)

    def choose_shrink(data: SampleSet) -> float:
        shrunk(1.0)
        residual = _predict_kw(model, data, scaling, horizon)[0] - data.baseline_kw
        scored = [
            (_day_ahead_score(data.baseline_kw + a * residual, data.actual_kw), a)
            for a in DAY_AHEAD_SHRINK_GRID
        ]
        return min(scored)[1]

    # Shrink toward the seasonal mean, chosen on V (0 gives mean-2-weeks itself).
    shrink = choose_shrink(val)
    shrunk(shrink)
    kw_v, p10_v, p90_v = _predict_kw(model, val, scaling, horizon)
    band = conformal_band(
        kw_v, p10_v, p90_v, val.actual_kw.astype(np.float64), pooled=True, symmetric=True
    )
    holdout: dict[str, dict[str, float]] = {}
    if len(hold_o):
        hold = _build_day_ahead(
            start_minute,
            values_kw,
            hold_o,
            tz,
            scaling,
            outdoor_air,
            use_air,
            smooth,
            groups,
            calendar,
        )
        # The reference mean-2-weeks: plain weekdays, as the benchmarks score it.
        seasonal_h = da.day_ahead_blocks(start_minute, values_kw, hold_o, tz).baseline_kw
        kw_h, p10_h, p90_h = _predict_kw(model, hold, scaling, horizon)
        c10_h, c90_h = _calibrated(kw_h, p10_h, p90_h, band)
        actual = hold.actual_kw.astype(np.float64)
        holdout["ours"] = {
            "cvrmse_15min_day_ahead": cvrmse_pct(kw_h, actual),
            "coverage_p10_p90": float(np.mean((actual >= c10_h) & (actual <= c90_h))),
            "origins": float(len(hold_o)),
            "shrink": shrink,
        }
        holdout["mean-2-weeks"] = {
            "cvrmse_15min_day_ahead": cvrmse_pct(seasonal_h, actual),
            "origins": float(len(hold_o)),
        }
        # The base the network corrects (weekday groups or mean-2-weeks, smoothed or not, as
        # chosen before the network).
        holdout["base"] = {
            "cvrmse_15min_day_ahead": cvrmse_pct(hold.baseline_kw.astype(np.float64), actual),
            "origins": float(len(hold_o)),
            "smooth_steps": float(smooth),
            "weekday_groups": float(groups is not None),
        }
        logger.info("day-ahead holdout (shrink %.2f): %s", shrink, holdout)
        # Served: the shrink chosen again on V and H together (a few days each; one choice on
        # twice the days is steadier), and the band calibrated on both.
        both = _concat([val, hold])
        beats = (
            holdout["ours"]["cvrmse_15min_day_ahead"] < holdout["base"]["cvrmse_15min_day_ahead"]
        )
        # As for the 60-minute model, the network's correction is served only if it beats its
        # base on H; otherwise P50 is the base itself (as chosen before the network)
        # (the band stays calibrated).
        shrink = choose_shrink(both) if beats else 0.0
        shrunk(shrink)
        kw_b, p10_b, p90_b = _predict_kw(model, both, scaling, horizon)
        band = conformal_band(
            kw_b, p10_b, p90_b, both.actual_kw.astype(np.float64), pooled=True, symmetric=True
        )
        logger.info("day-ahead served shrink (V and H) %.2f", shrink)
    meta = DayAheadMeta(
        baseline_smooth_steps=smooth,
        weekday_groups=groups,
        input_dim=int(val.x.shape[1]),
        outdoor_air=use_air,
        history_minutes=da.HISTORY_MINUTES,
        epochs=epochs,
        band=band,
        holdout_metrics=holdout,
    )
    return _DayAheadResult(export_tflite(model), meta, model, results)


def _choose_base_groups(
    start_minute: int,
    values_kw: FloatArray,
    tz: ZoneInfo,
    config: FeatureConfig,
    first_origin: int,
    val_start: int,
    holdout_start: int,
    found: WeekdayGroups,
    calendar: SiteCalendar | None = None,
) -> WeekdayGroups | None:
    """The weekday groups ``found`` for the 60-minute model's residual base, or None (same
    weekday).

    The two bases fit nothing, so they are compared on every 7th origin of the last
    BASE_CHOICE_WEEKS weeks before H (fit part and V), by the RMSE over the whole hour.
    """
    if found == NO_GROUPS:
        return None
    horizon = config.horizon_minutes
    lo = max(first_origin, val_start - BASE_CHOICE_WEEKS * MINUTES_PER_WEEK)
    last = holdout_start - horizon - 1  # targets end before H
    origins = training_origins(start_minute, values_kw, lo, last, horizon)[::7]
    if len(origins) == 0:
        return None
    actual = target_windows(start_minute, values_kw, origins, horizon)
    scores: dict[str, float] = {}
    for name, cfg in (("weeks", config), ("groups", replace(config, weekday_groups=found))):
        base = np.empty_like(actual)
        for lo_i in range(0, len(origins), _CHUNK):
            chunk = origins[lo_i : lo_i + _CHUNK]
            base[lo_i : lo_i + len(chunk)] = feature_blocks(
                start_minute, values_kw, chunk, tz, cfg, calendar=calendar
            ).baseline_kw
        ok = ~np.isnan(actual)
        scores[name] = float(np.sqrt(np.mean((base[ok] - actual[ok]) ** 2)))
    chosen = found if scores["groups"] < scores["weeks"] else None
    logger.info(
        "60-minute base: weekday groups %s (found %s; RMSE over %d origins: %s)",
        chosen,
        found,
        len(origins),
        {k: round(v, 3) for k, v in scores.items()},
    )
    return chosen


@dataclass(frozen=True, slots=True)
class _Split:
    """Where the origins of the fit part, the inner validation V and the holdout H lie."""

    first_origin: int  # the first origin with the seasonal windows it needs
    last_origin: int  # the last origin whose targets the history holds
    val_start: int
    holdout_start: int
    days: int  # the length of V, and of H

    @classmethod
    def of(cls, start_minute: int, end_minute: int, horizon: int) -> _Split:
        """V and H: a fifth of the sampled days each, between one and seven days."""
        first_origin = start_minute + FIRST_ORIGIN_DAYS * MINUTES_PER_DAY
        last_origin = end_minute - horizon
        sample_days = (last_origin - first_origin) / MINUTES_PER_DAY
        days = int(min(7, max(1, sample_days // 5)))
        holdout_start = last_origin - days * MINUTES_PER_DAY + 1
        val_start = holdout_start - days * MINUTES_PER_DAY
        return cls(first_origin, last_origin, val_start, holdout_start, days)


def _reporter(progress: ProgressFn | None) -> ProgressFn:
    """Log each step of a training run (with the peak RSS) and pass it to ``progress``."""

    def report(fraction: float, message: str) -> None:
        logger.info("train %3.0f%%: %s (peak RSS %.0f MB)", 100 * fraction, message, _peak_rss_mb())
        if progress is not None:
            progress(fraction, message)

    return report


def _air_usable(start_minute: int, outdoor_air: FloatArray | None, val_start: int) -> bool:
    """Whether outdoor air covers enough of the fit part and of V and H to offer it."""
    fit_slice = slice(0, val_start - start_minute)
    air_ok = (
        outdoor_air is not None
        and _coverage(outdoor_air[fit_slice]) >= MIN_AIR_COVERAGE
        and _coverage(outdoor_air[val_start - start_minute :]) >= MIN_AIR_COVERAGE
    )
    if outdoor_air is not None and not air_ok:
        logger.info("outdoor air covers too little of the history; not offered to the models")
    return air_ok


class _CandidateSearch:
    """Trains candidates on the fit part and scores them on V, keeping the best one's weights.

    V and H samples are kept per feature configuration (small); a candidate's fit part is built
    for it and dropped after it, so at most one fit part is in memory.
    """

    def __init__(
        self,
        start_minute: int,
        values_kw: FloatArray,
        tz: ZoneInfo,
        outdoor_air: FloatArray | None,
        split: _Split,
        scaling: Scaling,
        max_epochs: int,
        seed: int,
        deadline_all: float,
        calendar: SiteCalendar | None = None,
    ) -> None:
        self._start_minute = start_minute
        self._values_kw = values_kw
        self._tz = tz
        self._outdoor_air = outdoor_air
        self._split = split
        self._scaling = scaling
        self._max_epochs = max_epochs
        self._seed = seed
        self._deadline_all = deadline_all
        self._calendar = calendar
        self._horizon = HORIZON_MINUTES
        self._fit_end = split.val_start - self._horizon  # fit-part targets end before V starts
        self._data: dict[FeatureConfig, tuple[SampleSet, SampleSet]] = {}
        self.fit_counts: dict[FeatureConfig, int] = {}
        self.results: list[dict[str, Any]] = []
        # (V score, candidate, weights, best epoch) of the best candidate so far.
        self.best: tuple[float, Candidate, Any, int] | None = None

    def run(
        self,
        candidates: list[Candidate],
        air_ok: bool,
        search_deadline: float,
        air_deadline_cap: float,
        report: ProgressFn,
    ) -> None:
        """Each candidate in turn until ``search_deadline``; the first one again with outdoor
        air (where ``air_ok``), and the later ones with it only if it validated better."""
        use_air = False
        for i, cand in enumerate(candidates):
            if self.best is not None and time.monotonic() > search_deadline:
                logger.info("skipping candidate %s: search time used up", cand.name)
                continue
            if use_air:
                cand = replace(
                    cand,
                    name=f"{cand.name}+air",
                    features=replace(cand.features, outdoor_air=True),
                )
            report(0.05 + 0.4 * i / len(candidates), f"candidate {cand.name}")
            began = time.monotonic()
            ran = self.evaluate(cand, search_deadline)
            if i == 0 and air_ok and self.best is not None:
                # As much time as the first took, so both see about as many epochs.
                air_deadline = min(
                    time.monotonic() + 1.5 * (time.monotonic() - began), air_deadline_cap
                )
                # The first configuration again with outdoor air, given as many epochs; the
                # later candidates use outdoor air only if it validated better here.
                first = self.best[1]
                with_air = replace(
                    first,
                    name=f"{first.name}+air",
                    features=replace(first.features, outdoor_air=True),
                )
                report(0.05 + 0.4 * (i + 0.5) / len(candidates), f"candidate {with_air.name}")
                # The same number of epochs as the first got: a fair comparison.
                self.evaluate(with_air, air_deadline, max(1, ran))
                use_air = self.best[1].features.outdoor_air

    def evaluate(self, cand: Candidate, deadline: float, epochs: int | None = None) -> int:
        """Train and score one candidate on V; returns how many epochs it ran (0: none)."""
        import keras

        split, horizon, scaling = self._split, self._horizon, self._scaling
        start_minute, values_kw = self._start_minute, self._values_kw
        cfg = cand.features
        all_origins = training_origins(
            start_minute,
            values_kw,
            split.first_origin,
            split.last_origin,
            horizon,
            recent_minutes=cfg.recent_minutes,
        )
        if cfg not in self._data:
            in_v = (all_origins >= split.val_start) & (all_origins < split.holdout_start)
            v_o, h_o = all_origins[in_v], all_origins[all_origins >= split.holdout_start]
            self._data[cfg] = (self._samples(v_o, cfg), self._samples(h_o, cfg))
        val, _ = self._data[cfg]
        lo = _window_start(self._fit_end, split.first_origin, cand.train_weeks)
        fit_o = all_origins[(all_origins >= lo) & (all_origins < self._fit_end)]
        # A fixed ceiling on samples: a long window is thinned more, not held whole.
        fit_o = fit_o[:: max(TRAIN_STRIDE, -(-len(fit_o) // MAX_FIT_SAMPLES))]
        self.fit_counts[cfg] = len(fit_o)
        fit = self._samples(fit_o, cfg)
        if len(fit.origins) < MINUTES_PER_DAY // TRAIN_STRIDE or len(val.origins) == 0:
            logger.info("candidate %s: too few samples", cand.name)
            return 0
        model = make_model(fit.x.shape[1], cand, horizon, self._seed)
        epoch, score, curve = _fit(
            model,
            fit,
            self._max_epochs if epochs is None else epochs,
            val,
            scaling,
            horizon,
            min(deadline, self._deadline_all),
        )
        kw, _, _ = _predict_kw(model, val, scaling, horizon)
        metrics = forecast_metrics(kw, val.actual_kw)
        self.results.append(
            {
                "candidate": cand.name,
                "best_epoch": epoch,
                "score": score,
                "curve": [round(x, 4) for x in curve],
                **metrics,
                "train_samples": len(fit.origins),
            }
        )
        logger.info(
            "candidate %s: epoch %d score %.3f rmse_60 %.3f rmse_1_60 %.3f cv15 %.1f%%",
            cand.name,
            epoch,
            score,
            metrics["rmse_60"],
            metrics["rmse_1_60"],
            metrics["cvrmse_15min_60"],
        )
        best = self.best
        if best is None or score < best[0]:
            if best is not None and best[1].features != cfg:
                self._data.pop(best[1].features, None)
            self.best = (score, cand, model.get_weights(), epoch)
        elif best is not None and cfg != best[1].features:
            self._data.pop(cfg, None)
        # Only the weights are kept: dropping the graphs keeps the process small.
        del fit, model
        keras.backend.clear_session()
        gc.collect()
        _trim_malloc()
        return len(curve)

    def val_and_holdout(self, cfg: FeatureConfig) -> tuple[SampleSet, SampleSet]:
        """The V and H samples of a configuration that was evaluated."""
        return self._data[cfg]

    def release(self) -> None:
        """Drop the samples and the best weights (the chosen model has been built)."""
        self._data.clear()
        self.best = None

    def _samples(self, origins: IntArray, cfg: FeatureConfig) -> SampleSet:
        return _build(
            self._start_minute,
            self._values_kw,
            origins,
            self._tz,
            cfg,
            self._scaling,
            self._outdoor_air,
            self._calendar,
        )


@dataclass(slots=True)
class _Chosen:
    """The candidate chosen on V, shrunk, scored on H and with its served band calibrated."""

    candidate: Candidate
    epochs: int
    model: Any
    shrink_steps: FloatArray
    band: BandCalibration
    holdout: dict[str, dict[str, float]]
    input_dim: int
    train_origins: int


def _choose_and_score(
    search: _CandidateSearch,
    start_minute: int,
    values_kw: FloatArray,
    tz: ZoneInfo,
    split: _Split,
    scaling: Scaling,
    seed: int,
    report: ProgressFn,
) -> _Chosen:
    """Rebuild the best candidate, choose its shrinkage and band on V, score it on H beside
    persistence and mean-2-weeks, and calibrate the served band on V and H."""
    horizon = HORIZON_MINUTES
    if search.best is None:
        raise InsufficientHistoryError("no candidate could be trained on this history")
    _, chosen, chosen_weights, chosen_epochs = search.best
    val, hold = search.val_and_holdout(chosen.features)
    chosen_model = make_model(val.x.shape[1], chosen, horizon, seed)
    chosen_model.set_weights(chosen_weights)
    # Shrinkage of the residual toward the smoothed seasonal mean, chosen on V.
    shrink_steps, shrink_score = choose_step_shrink(chosen_model, val, scaling, horizon)
    apply_shrink(chosen_model, shrink_steps)
    logger.info(
        "shrink factors %s (steps 1, 15, 30, 45, 60; V score %.3f)",
        [round(float(shrink_steps[i]), 2) for i in (0, 14, 29, 44, horizon - 1)],
        shrink_score,
    )
    # Split conformal band calibration on V.
    kw_v, p10_v, p90_v = _predict_kw(chosen_model, val, scaling, horizon)
    band = conformal_band(kw_v, p10_v, p90_v, val.actual_kw.astype(np.float64))

    # Honest evaluation on H with the chosen candidate (trained before V, chosen on V).
    report(0.55, f"holdout evaluation of {chosen.name}")
    holdout: dict[str, dict[str, float]] = {}
    if len(hold.origins):
        kw, p10, p90 = _predict_kw(chosen_model, hold, scaling, horizon)
        p10, p90 = _calibrated(kw, p10, p90, band)
        holdout["ours"] = forecast_metrics(kw, hold.actual_kw, p10_kw=p10, p90_kw=p90)
        holdout["persistence"] = forecast_metrics(
            persistence_windows(start_minute, values_kw, hold.origins, horizon), hold.actual_kw
        )
        holdout["mean-2-weeks"] = forecast_metrics(
            seasonal_mean_windows(start_minute, values_kw, hold.origins, tz, 2, horizon),
            hold.actual_kw,
        )
        logger.info("holdout (%d days): %s", split.days, holdout)
        # The served band is calibrated on V and H together (more outcomes than V alone). The
        # band calibrated on V covered this much less on the later days of H: days after
        # training drift the same way, so the served band aims that much wider.
        nominal = QUANTILES[1] - QUANTILES[0]
        drop = max(0.0, nominal - holdout["ours"].get("coverage_p10_p90_60", nominal))
        aim = min(nominal + drop, MAX_BAND_COVERAGE)
        kw_h, p10_h, p90_h = _predict_kw(chosen_model, hold, scaling, horizon)
        band = conformal_band(
            np.concatenate([kw_v, kw_h]),
            np.concatenate([p10_v, p10_h]),
            np.concatenate([p90_v, p90_h]),
            np.concatenate([val.actual_kw, hold.actual_kw]).astype(np.float64),
            coverage=aim,
        )
        logger.info(
            "band calibrated on V and H for %.1f %% (V-calibrated band on H: %.1f %%)",
            100 * aim,
            100 * (nominal - drop),
        )
    return _Chosen(
        candidate=chosen,
        epochs=chosen_epochs,
        model=chosen_model,
        shrink_steps=shrink_steps,
        band=band,
        holdout=holdout,
        input_dim=int(val.x.shape[1]),
        train_origins=search.fit_counts[chosen.features],
    )


def train(
    start_minute: int,
    values_kw: FloatArray,
    tz: ZoneInfo,
    *,
    outdoor_air: FloatArray | None = None,
    progress: ProgressFn | None = None,
    time_budget_s: float = 50.0,
    max_epochs: int = 12,
    candidates: list[Candidate] | None = None,
    seed: int = 0,
    day_ahead: bool = True,
    notes: tuple[str, ...] = (),
    calendar: SiteCalendar | None = None,
) -> TrainResult:
    """Choose, evaluate (honest holdout) and export the forecasters as TFLite + metadata.

    Needs MIN_HISTORY_DAYS (28) days of minutes with >= 70 % valid; raises
    InsufficientHistoryError otherwise. ``outdoor_air`` (aligned with ``values_kw``, NaN where
    unknown) is offered to the models when it covers enough of the history; validation decides.
    ``time_budget_s`` bounds the whole call (roughly: the searches stop early and the final fits
    are shortened when it runs out). ``calendar``: past listed days are read as their day type
    (weekday inputs, groups and the weekly lags), as forecasts will read them.

    The steps: split the history (fit | V | H), scale on the fit part, choose the residual
    base, search the candidates on V, shrink and calibrate the chosen one and score it on H,
    train the day-ahead model, export both.
    """
    t0 = time.monotonic()
    values_kw = np.asarray(values_kw, dtype=np.float64)
    if outdoor_air is not None:
        outdoor_air = np.asarray(outdoor_air, dtype=np.float64)
        if len(outdoor_air) != len(values_kw):
            raise ValueError("outdoor_air must be aligned with values_kw")
    _check_history(values_kw)
    report = _reporter(progress)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _limit_malloc_arenas()
    report(0.0, "importing TensorFlow")
    # Here, so the module import stays cheap; the search's time is counted after it.
    import keras  # noqa: F401

    horizon = HORIZON_MINUTES
    end_minute = start_minute + len(values_kw) - 1
    split = _Split.of(start_minute, end_minute, horizon)
    air_ok = _air_usable(start_minute, outdoor_air, split.val_start)
    # Scaling from the part the candidates are trained on (no look at V or H).
    fit_slice = slice(0, split.val_start - start_minute)
    scaling = Scaling.fit(
        values_kw[fit_slice], outdoor_air[fit_slice] if outdoor_air is not None else None
    )
    # The residual base: same weekday, or every day of the weekday's group (found once, on the
    # days before V, for both models' bases), chosen by the base's own error before any network.
    found = da.weekday_groups(start_minute, values_kw, tz, split.val_start - 1, calendar)
    candidates = candidates or default_candidates()
    groups = _choose_base_groups(
        start_minute,
        values_kw,
        tz,
        candidates[0].features,
        split.first_origin,
        split.val_start,
        split.holdout_start,
        found,
        calendar,
    )
    if groups is not None:
        candidates = [with_features(c, weekday_groups=groups) for c in candidates]

    search = _CandidateSearch(
        start_minute,
        values_kw,
        tz,
        outdoor_air,
        split,
        scaling,
        max_epochs,
        seed,
        deadline_all=t0 + time_budget_s,
        calendar=calendar,
    )
    # Counted from when TensorFlow is loaded (its import time varies with the machine's load).
    search_deadline = min(time.monotonic() + 0.28 * time_budget_s, t0 + 0.4 * time_budget_s)
    search.run(candidates, air_ok, search_deadline, t0 + 0.6 * time_budget_s, report)
    # The exported model is the one chosen on V, scored on H and calibrated on V and H: a refit
    # or fine-tune on everything would leave its band and its holdout figures unchecked.
    chosen = _choose_and_score(search, start_minute, values_kw, tz, split, scaling, seed, report)
    search.release()
    gc.collect()

    day_ahead_result: _DayAheadResult | None = None
    if day_ahead and time.monotonic() > t0 + 0.75 * time_budget_s:
        logger.warning("no time left for the day-ahead model: the baseline serves the day ahead")
        day_ahead = False
    if day_ahead:
        report(0.7, "day-ahead model")
        fit_lo = _window_start(
            split.val_start - da.STEPS * da.STEP, split.first_origin, MAX_TRAIN_WEEKS
        )
        day_ahead_result = _train_day_ahead(
            start_minute,
            values_kw,
            tz,
            outdoor_air,
            chosen.candidate.features.outdoor_air,
            (fit_lo, split.val_start, split.holdout_start),
            scaling,
            max_epochs,
            seed,
            t0 + 0.87 * time_budget_s,
            found,
            calendar,
        )
        if day_ahead_result is not None:
            search.results.extend(day_ahead_result.validation)
    report(0.95, "exporting TFLite")
    tflite = export_tflite(chosen.model)
    train_s = time.monotonic() - t0
    valid_kw = values_kw[~np.isnan(values_kw)]
    features = chosen.candidate.features
    meta = ModelMeta(
        model=MODEL_NAME,
        candidate=chosen.candidate.name,
        created_at=datetime.now(UTC).isoformat(),
        timezone=str(tz),
        horizon_minutes=horizon,
        input_dim=chosen.input_dim,
        features=features,
        history_minutes=features.history_minutes,
        # Forecasts are clipped here: 0 for a consumer meter, lower where the site's meter went
        # negative (PV export), so a net meter is not forced to look like a consumer.
        floor_kw=min(0.0, float(valid_kw.min())),
        scaling=scaling,
        quantiles=QUANTILES,
        epochs=chosen.epochs,
        shrink=float(chosen.shrink_steps[-1]),
        shrink_steps=tuple(round(float(v), 4) for v in chosen.shrink_steps),
        train_weeks=chosen.candidate.train_weeks or MAX_TRAIN_WEEKS,
        train_origins=chosen.train_origins,
        trained_until_minute=int(end_minute),
        holdout_days=split.days,
        train_s=train_s,
        band=chosen.band,
        day_ahead=None if day_ahead_result is None else day_ahead_result.meta,
        holdout_metrics=chosen.holdout,
        validation=search.results,
        notes=notes,
    )
    report(1.0, f"done in {train_s:.1f} s")
    return TrainResult(
        tflite_model=tflite,
        meta=meta,
        holdout_metrics=chosen.holdout,
        validation=search.results,
        train_s=train_s,
        day_ahead_model=None if day_ahead_result is None else day_ahead_result.tflite,
        keras_model=chosen.model,
        keras_day_ahead=None if day_ahead_result is None else day_ahead_result.keras_model,
    )


def _limit_malloc_arenas() -> None:
    """Two glibc malloc arenas instead of one per thread: TensorFlow's thread pools otherwise
    leave ~100 MB of fragmented, unreturned memory in the training process."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 2)


def _trim_malloc() -> None:
    """Give freed heap memory back to the OS (between candidates)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _concat(parts: list[SampleSet]) -> SampleSet:
    return SampleSet(
        x=np.concatenate([p.x for p in parts]),
        residual=np.concatenate([p.residual for p in parts]),
        baseline_kw=np.concatenate([p.baseline_kw for p in parts]),
        actual_kw=np.concatenate([p.actual_kw for p in parts]),
        origins=np.concatenate([p.origins for p in parts]),
    )


def _subset(data: SampleSet, mask: Any) -> SampleSet:
    return SampleSet(
        x=data.x[mask],
        residual=data.residual[mask],
        baseline_kw=data.baseline_kw[mask],
        actual_kw=data.actual_kw[mask],
        origins=data.origins[mask],
    )


def with_features(candidate: Candidate, **changes: Any) -> Candidate:
    """A copy of ``candidate`` with some feature settings changed (handy for small tests)."""
    return replace(candidate, features=replace(candidate.features, **changes))
