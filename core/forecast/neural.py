"""Training of the neural forecaster (the only module that imports TensorFlow).

Model: a direct multi-output MLP. Inputs are the last minutes (1-minute, then block means),
(optionally) level offsets of the last 15..360 minutes against the seasonal mean,
smoothed same-wall-clock windows 1 day and 1..3 weeks earlier (context before the origin plus
the 60 target minutes), the seasonal-mean baseline and the local calendar. It predicts the 60
minutes as a residual over the smoothed seasonal mean, with P10/P90 heads (pinball loss) that are
constructed to bracket the point forecast. All scaling, window lengths and the number of epochs
are chosen on the site's own history (training statistics and an inner validation split).

Splits, oldest to newest: fit part | inner validation (V) | holdout (H). Candidates are trained on
the fit part and compared on V; the chosen candidate is scored on H (never used for a choice)
beside persistence and mean-2-weeks; then the chosen configuration is refitted on everything,
within a rolling window of recent weeks, and exported as TFLite.

TensorFlow is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.forecast.base import HORIZON_MINUTES
from core.forecast.features import (
    FeatureConfig,
    FloatArray,
    IntArray,
    Scaling,
    design_matrix,
    feature_blocks,
    forecast_metrics,
    persistence_windows,
    seasonal_mean_windows,
    target_windows,
    training_origins,
)
from core.timegrid import MINUTES_PER_DAY, MINUTES_PER_WEEK

logger = logging.getLogger(__name__)

MODEL_VERSION = 1
MODEL_NAME = "mlp-residual"
# Two weeks of lags before the first training origin plus two weeks of origins to split.
MIN_HISTORY_DAYS = 28
MIN_VALID_FRACTION = 0.7
# Origins need at least this much history for their seasonal windows (1 and 2 weeks back).
FIRST_ORIGIN_DAYS = 14
# The rolling training window never exceeds this, so nightly cost stays bounded.
MAX_TRAIN_WEEKS = 12
QUANTILES = (0.1, 0.9)

_CHUNK = 4096

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
    """The exported model, its metadata and the honest holdout evaluation."""

    tflite_model: bytes
    meta: dict[str, Any]
    holdout_metrics: dict[str, dict[str, float]]
    validation: list[dict[str, Any]]
    train_s: float
    keras_model: Any = field(default=None, repr=False)


@dataclass(slots=True)
class _Data:
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
) -> _Data:
    # Chunks bound the temporary windows' memory (the training process must stay small).
    parts: list[_Data] = []
    for lo in range(0, max(len(origins), 1), _CHUNK):
        chunk = origins[lo : lo + _CHUNK]
        blocks = feature_blocks(start_minute, values_kw, chunk, tz, config)
        actual = target_windows(start_minute, values_kw, chunk, config.horizon_minutes)
        residual = (actual - blocks.baseline_kw) / scaling.scale_kw
        parts.append(
            _Data(
                x=design_matrix(blocks, scaling),
                residual=residual.astype(np.float32),
                baseline_kw=blocks.baseline_kw.astype(np.float32),
                actual_kw=actual.astype(np.float32),
                origins=chunk,
            )
        )
    return _Data(
        x=np.concatenate([p.x for p in parts]),
        residual=np.concatenate([p.residual for p in parts]),
        baseline_kw=np.concatenate([p.baseline_kw for p in parts]),
        actual_kw=np.concatenate([p.actual_kw for p in parts]),
        origins=np.concatenate([p.origins for p in parts]),
    )


def _make_model(input_dim: int, candidate: Candidate, horizon: int, seed: int) -> Any:
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
    model: Any, data: _Data, scaling: Scaling, horizon: int
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
    train: _Data,
    epochs: int,
    val: _Data | None,
    scaling: Scaling,
    horizon: int,
    deadline: float,
    patience: int = 3,
) -> tuple[int, float, list[float]]:
    """Fit epoch by epoch; with ``val``, stop when the smoothed validation score has not improved
    for ``patience`` epochs and keep that epoch's weights. Returns (best epoch, smoothed score,
    per-epoch validation scores)."""
    scores: list[float] = []
    weights: list[Any] = []
    for epoch in range(1, epochs + 1):
        model.fit(train.x, train.residual, batch_size=256, epochs=1, verbose=0, shuffle=True)
        if val is not None:
            kw, _, _ = _predict_kw(model, val, scaling, horizon)
            scores.append(_score(kw, val.actual_kw))
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


def _choose_shrink(model: Any, val: _Data, scaling: Scaling, horizon: int) -> tuple[float, float]:
    """The factor on the predicted residual (toward the smoothed seasonal mean) that scores best
    on V; (factor, score)."""
    kw, _, _ = _predict_kw(model, val, scaling, horizon)
    residual = kw - val.baseline_kw
    scored = [(_score(val.baseline_kw + a * residual, val.actual_kw), a) for a in SHRINK_GRID]
    score, factor = min(scored)
    return factor, score


def _apply_shrink(model: Any, factor: float) -> None:
    """Scale the point head (P10/P90 keep their widths around it) inside the model itself."""
    if factor == 1.0:
        return
    layer = model.get_layer("mean")
    layer.set_weights([w * np.float32(factor) for w in layer.get_weights()])


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


def train(
    start_minute: int,
    values_kw: FloatArray,
    tz: ZoneInfo,
    *,
    progress: ProgressFn | None = None,
    time_budget_s: float = 50.0,
    max_epochs: int = 12,
    candidates: list[Candidate] | None = None,
    seed: int = 0,
) -> TrainResult:
    """Choose, evaluate (honest holdout) and refit the forecaster; export TFLite + metadata.

    Needs MIN_HISTORY_DAYS (28) days of minutes with >= 70 % valid; raises
    InsufficientHistoryError otherwise. ``time_budget_s`` bounds the whole call (roughly: the
    candidate search stops early and the final fit is shortened when it runs out).
    """
    t0 = time.monotonic()
    deadline_all = t0 + time_budget_s
    values_kw = np.asarray(values_kw, dtype=np.float64)
    _check_history(values_kw)

    def report(fraction: float, message: str) -> None:
        logger.info("train %3.0f%%: %s (peak RSS %.0f MB)", 100 * fraction, message, _peak_rss_mb())
        if progress is not None:
            progress(fraction, message)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    report(0.0, "importing TensorFlow")
    import keras  # imported here so the module import stays cheap

    horizon = HORIZON_MINUTES
    end_minute = start_minute + len(values_kw) - 1
    first_origin = start_minute + FIRST_ORIGIN_DAYS * MINUTES_PER_DAY
    last_origin = end_minute - horizon
    sample_days = (last_origin - first_origin) / MINUTES_PER_DAY
    split_days = int(min(7, max(1, sample_days // 5)))
    holdout_start = last_origin - split_days * MINUTES_PER_DAY + 1
    val_start = holdout_start - split_days * MINUTES_PER_DAY
    candidates = candidates or default_candidates()

    # Scaling from the part the candidates are trained on (no look at V or H).
    fit_values = values_kw[: val_start - start_minute]
    scaling = Scaling.fit(fit_values)
    # Values after the fit part's last target are hidden while building the fit part's samples.
    results: list[dict[str, Any]] = []
    best: tuple[float, Candidate, Any, int] | None = None
    search_deadline = t0 + 0.65 * time_budget_s
    data_cache: dict[FeatureConfig, tuple[_Data, _Data, _Data]] = {}
    for i, cand in enumerate(candidates):
        if best is not None and time.monotonic() > search_deadline:
            logger.info("skipping candidate %s: search time used up", cand.name)
            continue
        report(0.05 + 0.6 * i / len(candidates), f"candidate {cand.name}")
        cfg = cand.features
        if cfg not in data_cache:
            all_origins = training_origins(
                start_minute,
                values_kw,
                first_origin,
                last_origin,
                horizon,
                recent_minutes=cfg.recent_minutes,
            )
            data_all = _build(start_minute, values_kw, all_origins, tz, cfg, scaling)
            val_sel = (all_origins >= val_start) & (all_origins < holdout_start)
            hold_sel = all_origins >= holdout_start
            data_cache[cfg] = (data_all, _subset(data_all, val_sel), _subset(data_all, hold_sel))
        data_all, val, _ = data_cache[cfg]
        # Fit-part origins' targets must end before V starts (no overlap with V's minutes).
        fit_end = val_start - horizon
        lo = _window_start(fit_end, first_origin, cand.train_weeks)
        fit = _subset(data_all, (data_all.origins >= lo) & (data_all.origins < fit_end))
        if len(fit.origins) < MINUTES_PER_DAY or len(val.origins) == 0:
            logger.info("candidate %s: too few samples", cand.name)
            continue
        model = _make_model(fit.x.shape[1], cand, horizon, seed)
        epoch, score, _scores = _fit(
            model,
            fit,
            max_epochs,
            val,
            scaling,
            horizon,
            min(search_deadline, deadline_all),
        )
        kw, _, _ = _predict_kw(model, val, scaling, horizon)
        metrics = forecast_metrics(kw, val.actual_kw)
        results.append(
            {
                "candidate": cand.name,
                "best_epoch": epoch,
                "score": score,
                "curve": [round(x, 4) for x in _scores],
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
        if best is None or score < best[0]:
            if best is not None and best[1].features != cfg:
                data_cache.pop(best[1].features, None)
            best = (score, cand, model.get_weights(), epoch)
        elif cfg != best[1].features:
            data_cache.pop(cfg, None)
        # Only the weights are kept: dropping the graphs keeps the process small.
        del fit, model
        keras.backend.clear_session()
        gc.collect()
    if best is None:
        raise InsufficientHistoryError("no candidate could be trained on this history")
    _, chosen, chosen_weights, chosen_epochs = best
    _, val, _ = data_cache[chosen.features]
    chosen_model = _make_model(val.x.shape[1], chosen, horizon, seed)
    chosen_model.set_weights(chosen_weights)
    # Shrinkage of the residual toward the smoothed seasonal mean, chosen on V.
    shrink, shrink_score = _choose_shrink(chosen_model, val, scaling, horizon)
    _apply_shrink(chosen_model, shrink)
    logger.info("shrink factor %.2f (V score %.3f)", shrink, shrink_score)

    # Honest evaluation on H with the chosen candidate (trained before V, chosen on V).
    report(0.7, f"holdout evaluation of {chosen.name}")
    _, _, hold = data_cache[chosen.features]
    holdout: dict[str, dict[str, float]] = {}
    if len(hold.origins):
        kw, p10, p90 = _predict_kw(chosen_model, hold, scaling, horizon)
        holdout["ours"] = forecast_metrics(kw, hold.actual_kw, p10_kw=p10, p90_kw=p90)
        holdout["persistence"] = forecast_metrics(
            persistence_windows(start_minute, values_kw, hold.origins, horizon), hold.actual_kw
        )
        holdout["mean-2-weeks"] = forecast_metrics(
            seasonal_mean_windows(start_minute, values_kw, hold.origins, tz, 2, horizon),
            hold.actual_kw,
        )
        logger.info("holdout (%d days): %s", split_days, holdout)
    # Residual quantiles of the chosen model on V give a fallback band check in the metadata.
    _, val, _ = data_cache[chosen.features]
    _kw_v, p10_v, p90_v = _predict_kw(chosen_model, val, scaling, horizon)
    coverage_v = float(np.mean((val.actual_kw >= p10_v) & (val.actual_kw <= p90_v)))

    # Refit on everything (rolling window), scaling from the data it is trained on.
    data_cache.clear()
    del chosen_model, chosen_weights, hold, val, best
    keras.backend.clear_session()
    gc.collect()
    report(0.75, f"refit {chosen.name} on all data ({chosen_epochs} epochs)")
    lo = _window_start(last_origin, first_origin, chosen.train_weeks)
    # The scaling covers the minutes the refit sees (its lags reach two weeks before ``lo``).
    scale_from = max(0, lo - start_minute - FIRST_ORIGIN_DAYS * MINUTES_PER_DAY)
    final_scaling = Scaling.fit(values_kw[scale_from:])
    final_origins = training_origins(
        start_minute,
        values_kw,
        lo,
        last_origin,
        horizon,
        recent_minutes=chosen.features.recent_minutes,
    )
    final_data = _build(start_minute, values_kw, final_origins, tz, chosen.features, final_scaling)
    final_model = _make_model(final_data.x.shape[1], chosen, horizon, seed)
    _fit(
        final_model,
        final_data,
        chosen_epochs,
        None,
        final_scaling,
        horizon,
        max(deadline_all, time.monotonic() + 5.0),
    )
    _apply_shrink(final_model, shrink)
    report(0.95, "exporting TFLite")
    tflite = export_tflite(final_model)
    train_s = time.monotonic() - t0
    meta: dict[str, Any] = {
        "format": "open-dsm-forecaster",
        "version": MODEL_VERSION,
        "model": MODEL_NAME,
        "candidate": chosen.name,
        "created_at": datetime.now(UTC).isoformat(),
        "timezone": str(tz),
        "horizon_minutes": horizon,
        "input_dim": int(final_data.x.shape[1]),
        "features": chosen.features.to_dict(),
        "history_minutes": chosen.features.history_minutes,
        # Forecasts are clipped here: 0 for a consumer meter, lower where the site's meter went
        # negative (PV export), so a net meter is not forced to look like a consumer.
        "floor_kw": min(0.0, float(np.nanmin(values_kw))),
        "scaling": {"center_kw": final_scaling.center_kw, "scale_kw": final_scaling.scale_kw},
        "quantiles": list(QUANTILES),
        "outputs": ["mean", "p10", "p90"],
        "epochs": chosen_epochs,
        "shrink": shrink,
        "train_weeks": chosen.train_weeks or MAX_TRAIN_WEEKS,
        "train_origins": len(final_origins),
        "trained_until_minute": int(end_minute),
        "validation_coverage_p10_p90": coverage_v,
        "holdout_days": split_days,
        "holdout_metrics": holdout,
        "validation": results,
        "train_s": train_s,
    }
    report(1.0, f"done in {train_s:.1f} s")
    return TrainResult(
        tflite_model=tflite,
        meta=meta,
        holdout_metrics=holdout,
        validation=results,
        train_s=train_s,
        keras_model=final_model,
    )


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _subset(data: _Data, mask: Any) -> _Data:
    return _Data(
        x=data.x[mask],
        residual=data.residual[mask],
        baseline_kw=data.baseline_kw[mask],
        actual_kw=data.actual_kw[mask],
        origins=data.origins[mask],
    )


def with_features(candidate: Candidate, **changes: Any) -> Candidate:
    """A copy of ``candidate`` with some feature settings changed (handy for small tests)."""
    return replace(candidate, features=replace(candidate.features, **changes))
