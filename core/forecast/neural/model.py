"""The network: candidate configurations, the Keras MLP with its pinball loss, its shrinkage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from core.forecast.features import (
    FeatureConfig,
    FloatArray,
)

QUANTILES = (0.1, 0.9)


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


def with_features(candidate: Candidate, **changes: Any) -> Candidate:
    """A copy of ``candidate`` with some feature settings changed (handy for small tests)."""
    return replace(candidate, features=replace(candidate.features, **changes))


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


def apply_shrink(model: Any, factor: float | FloatArray) -> None:
    """Scale the point head (P10/P90 keep their widths around it) inside the model itself: one
    factor, or one per output step."""
    factors = np.asarray(factor, dtype=np.float32)
    if factors.ndim == 0 and float(factors) == 1.0:
        return
    layer = model.get_layer("mean")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * factors, bias * factors])
