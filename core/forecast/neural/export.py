"""What training hands to serving: the TFLite flatbuffers and their metadata."""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np

from core.forecast.base import HORIZON_MINUTES
from core.forecast.features import FloatArray, Scaling
from core.forecast.meta import ModelMeta
from core.forecast.neural.model import QUANTILES
from core.forecast.neural.samples import MAX_TRAIN_WEEKS, Split

if TYPE_CHECKING:  # both call export_tflite: annotations only
    from core.forecast.neural.day_ahead_training import DayAheadResult
    from core.forecast.neural.search import ChosenModel

logger = logging.getLogger(__name__)

MODEL_NAME = "mlp-residual"


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


def served_meta(
    chosen: ChosenModel,
    values_kw: FloatArray,
    tz: ZoneInfo,
    split: Split,
    scaling: Scaling,
    day_ahead: DayAheadResult | None,
    validation: list[dict[str, Any]],
    train_s: float,
    notes: tuple[str, ...],
) -> ModelMeta:
    """The metadata the serving process reads beside the flatbuffers."""
    valid_kw = values_kw[~np.isnan(values_kw)]
    features = chosen.candidate.features
    return ModelMeta(
        model=MODEL_NAME,
        candidate=chosen.candidate.name,
        created_at=datetime.now(UTC).isoformat(),
        timezone=str(tz),
        horizon_minutes=HORIZON_MINUTES,
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
        trained_until_minute=int(split.last_origin + HORIZON_MINUTES),  # the last minute
        holdout_days=split.days,
        train_s=train_s,
        band=chosen.band,
        day_ahead=None if day_ahead is None else day_ahead.meta,
        holdout_metrics=chosen.holdout,
        validation=validation,
        notes=notes,
    )
