"""Training samples: the history check, the split (fit | V | H) and the scaled design matrices."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.calendar import SiteCalendar
from core.forecast import day_ahead as da
from core.forecast.features import (
    FeatureConfig,
    FloatArray,
    IntArray,
    Scaling,
    WeekdayGroups,
    design_matrix,
    feature_blocks,
    target_windows,
)
from core.timegrid import MINUTES_PER_DAY, MINUTES_PER_WEEK

logger = logging.getLogger(__name__)

# Two weeks of lags before the first training origin plus two weeks of origins to split.
MIN_HISTORY_DAYS = 28
MIN_VALID_FRACTION = 0.7
# Origins need at least this much history for their seasonal windows (1 and 2 weeks back).
FIRST_ORIGIN_DAYS = 14
# The rolling training window never exceeds this, so nightly cost stays bounded.
MAX_TRAIN_WEEKS = 12
# Neighbouring minutes' origins are nearly the same sample: every third one is enough.
TRAIN_STRIDE = 3
MAX_FIT_SAMPLES = 25_000
# Outdoor air is offered to the models when at least this share of the minutes have it.
MIN_AIR_COVERAGE = 0.5
# Weeks of origins (before H) each model's seasonal base (weekday groups or not) is chosen on.
BASE_CHOICE_WEEKS = 4

CHUNK = 4096


class InsufficientHistoryError(ValueError):
    """Too little (valid) history to train and validate a model."""


@dataclass(slots=True)
class SampleSet:
    """Training samples: one row per origin, the residual to learn and what it is added to."""

    x: npt.NDArray[np.float32]
    residual: FloatArray
    baseline_kw: FloatArray
    actual_kw: FloatArray
    origins: IntArray


def check_history(values_kw: FloatArray) -> None:
    """Raise InsufficientHistoryError unless the history is long and valid enough."""
    days = len(values_kw) / MINUTES_PER_DAY
    valid = float(np.mean(~np.isnan(values_kw))) if len(values_kw) else 0.0
    if days < MIN_HISTORY_DAYS or valid * days < MIN_HISTORY_DAYS * MIN_VALID_FRACTION:
        raise InsufficientHistoryError(
            f"need at least {MIN_HISTORY_DAYS} days of minute history with "
            f">= {MIN_VALID_FRACTION:.0%} valid minutes; have {days:.1f} days, "
            f"{valid:.0%} valid"
        )


def build_samples(
    start_minute: int,
    values_kw: FloatArray,
    origins: IntArray,
    tz: ZoneInfo,
    config: FeatureConfig,
    scaling: Scaling,
    outdoor_air: FloatArray | None = None,
    calendar: SiteCalendar | None = None,
) -> SampleSet:
    """The 60-minute model's samples at ``origins``, scaled, built in chunks."""
    # Chunks bound the temporary windows' memory (the training process must stay small).
    parts: list[SampleSet] = []
    for lo in range(0, max(len(origins), 1), CHUNK):
        chunk = origins[lo : lo + CHUNK]
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
    return concat_samples(parts)


def build_day_ahead_samples(
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
    """The day-ahead model's samples at ``origins``, scaled, built in chunks."""
    parts: list[SampleSet] = []
    for lo in range(0, max(len(origins), 1), CHUNK):
        chunk = origins[lo : lo + CHUNK]
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
    return concat_samples(parts)


def concat_samples(parts: list[SampleSet]) -> SampleSet:
    """One SampleSet of the parts, in order."""
    return SampleSet(
        x=np.concatenate([p.x for p in parts]),
        residual=np.concatenate([p.residual for p in parts]),
        baseline_kw=np.concatenate([p.baseline_kw for p in parts]),
        actual_kw=np.concatenate([p.actual_kw for p in parts]),
        origins=np.concatenate([p.origins for p in parts]),
    )


def window_start(end_origin: int, first_origin: int, weeks: int | None) -> int:
    """The first fit origin: ``weeks`` (at most MAX_TRAIN_WEEKS) before ``end_origin``."""
    weeks = MAX_TRAIN_WEEKS if weeks is None else min(weeks, MAX_TRAIN_WEEKS)
    return max(first_origin, end_origin - weeks * MINUTES_PER_WEEK)


def _coverage(values: FloatArray | None) -> float:
    if values is None or len(values) == 0:
        return 0.0
    return float(np.mean(~np.isnan(values)))


@dataclass(frozen=True, slots=True)
class Split:
    """Where the origins of the fit part, the inner validation V and the holdout H lie."""

    first_origin: int  # the first origin with the seasonal windows it needs
    last_origin: int  # the last origin whose targets the history holds
    val_start: int
    holdout_start: int
    days: int  # the length of V, and of H

    @classmethod
    def of(cls, start_minute: int, end_minute: int, horizon: int) -> Split:
        """V and H: a fifth of the sampled days each, between one and seven days."""
        first_origin = start_minute + FIRST_ORIGIN_DAYS * MINUTES_PER_DAY
        last_origin = end_minute - horizon
        sample_days = (last_origin - first_origin) / MINUTES_PER_DAY
        days = int(min(7, max(1, sample_days // 5)))
        holdout_start = last_origin - days * MINUTES_PER_DAY + 1
        val_start = holdout_start - days * MINUTES_PER_DAY
        return cls(first_origin, last_origin, val_start, holdout_start, days)


def air_usable(start_minute: int, outdoor_air: FloatArray | None, val_start: int) -> bool:
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
