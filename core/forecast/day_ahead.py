"""Day-ahead features and targets in plain numpy: the next 96 clock-aligned 15-minute steps.

Step 0 is the step in progress at the origin (as in ``DayAheadForecast``). All windows are means
from prefix sums, so a batch of origins costs O(origins x steps), never O(origins x minutes).
The model predicts each step's mean as a residual over the seasonal mean of the same local
steps one and two weeks earlier (the 'mean-2-weeks' day-ahead).
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.forecast.base import DAY_AHEAD_STEP_MINUTES, DAY_AHEAD_STEPS
from core.forecast.features import (
    FloatArray,
    IntArray,
    Scaling,
    _moving_mean,
    _quiet,
    calendar_features,
    scaled_weather,
    weather_features,
    window_means,
)
from core.timegrid import MINUTES_PER_DAY, MINUTES_PER_WEEK, same_wall_clock_days_ago

STEP = DAY_AHEAD_STEP_MINUTES
STEPS = DAY_AHEAD_STEPS
WEEKS = 2
# History a day-ahead forecast reads: two weeks before the last step, a day of recent steps
# and a DST hour.
HISTORY_MINUTES = WEEKS * MINUTES_PER_WEEK + MINUTES_PER_DAY + 120
LEVEL_SPANS = (60, 180, MINUTES_PER_DAY)
# Widths (in steps) of the centred moving mean the seasonal base may be smoothed with; training
# chooses one on its validation days (1: none, as artifacts without the field).
BASELINE_SMOOTH_CHOICES = (1, 3, 5)


def step_start(origins: IntArray) -> IntArray:
    """Start minute of the step in progress at each origin (the origin minute is complete)."""
    return np.asarray(((np.asarray(origins) + 1) // STEP) * STEP, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class DayAheadBlocks:
    """Raw (kW) day-ahead inputs for a batch of origins."""

    recent_kw: FloatArray  # (n, 24) hourly means of the last 24 h, oldest first
    level_kw: FloatArray  # (n, 3) last 1 h / 3 h / 24 h minus the same spans 1-2 weeks earlier
    partial_kw: FloatArray  # (n,) mean of the step in progress so far (NaN at a step boundary)
    elapsed: FloatArray  # (n,) fraction of the step in progress already measured
    weeks_kw: FloatArray  # (n, WEEKS * 96) the same local steps 1..WEEKS weeks earlier
    baseline_kw: FloatArray  # (n, 96) their mean (persistence where none): the residual base
    calendar: FloatArray  # (n, 9) of the first step
    weather: FloatArray  # (n, 3 or 0)


def day_ahead_blocks(
    start_minute: int,
    values_kw: FloatArray,
    origins: IntArray,
    tz: ZoneInfo,
    outdoor_air: FloatArray | None = None,
    use_outdoor_air: bool = False,
    smooth_steps: int = 1,
) -> DayAheadBlocks:
    """Day-ahead inputs for each origin from one series (and its outdoor air).

    ``smooth_steps`` > 1 smooths the seasonal base over that many neighbouring steps (see
    ``smooth_profile``).
    """
    origins = np.asarray(origins, dtype=np.int64)
    n = len(origins)
    first = step_start(origins)
    steps = np.arange(STEPS, dtype=np.int64) * STEP
    hours = np.arange(24, dtype=np.int64) * 60
    recent_lo = origins[:, None] + 1 - MINUTES_PER_DAY + hours[None, :]
    recent = window_means(start_minute, values_kw, recent_lo, 60)
    levels = []
    for span in LEVEL_SPANS:
        now = window_means(start_minute, values_kw, origins + 1 - span, span)
        past = [
            window_means(
                start_minute,
                values_kw,
                same_wall_clock_days_ago(origins + 1 - span, 7 * week, tz),
                span,
            )
            for week in range(1, WEEKS + 1)
        ]
        with _quiet():
            levels.append(now - np.nanmean(np.stack(past, axis=0), axis=0))
    level = np.stack(levels, axis=1)
    elapsed_minutes = origins + 1 - first
    partial = _partial(start_minute, values_kw, first, elapsed_minutes)
    targets = first[:, None] + steps[None, :]
    weeks = []
    for week in range(1, WEEKS + 1):
        lagged = same_wall_clock_days_ago(targets.reshape(-1), 7 * week, tz).reshape(n, STEPS)
        weeks.append(window_means(start_minute, values_kw, lagged, STEP))
    with _quiet():
        baseline = np.nanmean(np.stack(weeks, axis=0), axis=0)
    last = _last_valid(recent, partial)
    baseline = smooth_profile(np.where(np.isnan(baseline), last[:, None], baseline), smooth_steps)
    return DayAheadBlocks(
        recent_kw=recent,
        level_kw=level,
        partial_kw=partial,
        elapsed=elapsed_minutes / STEP,
        weeks_kw=np.concatenate(weeks, axis=1),
        baseline_kw=baseline,
        calendar=calendar_features(first, tz),
        weather=(
            weather_features(start_minute, outdoor_air, origins)
            if use_outdoor_air
            else np.zeros((n, 0))
        ),
    )


def smooth_profile(profile_kw: FloatArray, width_steps: int) -> FloatArray:
    """Centred moving mean over ``width_steps`` neighbouring steps of each row (the ends use the
    steps that exist). Where the weeks disagree on when the building starts or stops, the mean
    of neighbouring steps is a better expectation than either week's sharp edge."""
    if width_steps <= 1:
        return profile_kw
    return _moving_mean(profile_kw, width_steps)


def choose_smoothing(
    seasonal_kw: FloatArray,
    actual_kw: FloatArray,
    choices: tuple[int, ...] = BASELINE_SMOOTH_CHOICES,
) -> tuple[int, dict[int, float]]:
    """The smoothing width (of ``choices``) whose smoothed seasonal profile scores the lowest
    CV(RMSE) against the outcomes (the narrower one on a tie), and every width's score."""
    ok = ~np.isnan(actual_kw)
    scores = {
        width: cvrmse_pct(smooth_profile(seasonal_kw, width)[ok], actual_kw[ok])
        for width in choices
    }
    best = min(choices, key=lambda width: (round(scores[width], 6), width))
    return best, scores


def _partial(
    start_minute: int, values_kw: FloatArray, first: IntArray, length: IntArray
) -> FloatArray:
    """Mean of minutes first .. first+length-1 for per-row lengths (prefix sums)."""
    valid = ~np.isnan(values_kw)
    csum = np.concatenate(([0.0], np.cumsum(np.where(valid, values_kw, 0.0))))
    ccount = np.concatenate(([0], np.cumsum(valid)))
    a = np.clip(first - start_minute, 0, len(values_kw))
    b = np.clip(first - start_minute + length, 0, len(values_kw))
    count = ccount[b] - ccount[a]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (csum[b] - csum[a]) / np.maximum(count, 1), np.nan)


def _last_valid(recent: FloatArray, partial: FloatArray) -> FloatArray:
    valid = ~np.isnan(recent)
    has = valid.any(axis=1)
    pos = recent.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)
    last = np.where(has, recent[np.arange(len(recent)), pos], np.nan)
    return np.where(np.isnan(partial), last, partial)


def day_ahead_targets(start_minute: int, values_kw: FloatArray, origins: IntArray) -> FloatArray:
    """Actual mean of each of the 96 steps (NaN where a step has fewer than 10 minutes)."""
    origins = np.asarray(origins, dtype=np.int64)
    first = step_start(origins)
    lo = first[:, None] + np.arange(STEPS, dtype=np.int64)[None, :] * STEP
    mean = window_means(start_minute, values_kw, lo, STEP)
    valid = ~np.isnan(values_kw)
    ccount = np.concatenate(([0], np.cumsum(valid)))
    a = np.clip(lo - start_minute, 0, len(values_kw))
    b = np.clip(lo - start_minute + STEP, 0, len(values_kw))
    return np.where(ccount[b] - ccount[a] >= 10, mean, np.nan)


def day_ahead_matrix(blocks: DayAheadBlocks, scaling: Scaling) -> npt.NDArray[np.float32]:
    """Scaled model input, compact on purpose (a site has few distinct days to learn from):
    how the last day's hours and the step in progress differ from the seasonal mean, the level
    offsets, the seasonal mean's own level, the calendar, outdoor air and missing flags."""
    c, s = scaling.center_kw, scaling.scale_kw
    base = blocks.baseline_kw
    # The seasonal mean of the last day's hours is not in the blocks; the offsets against the
    # weeks are: hourly means minus the baseline's mean level keep the shape of the day.
    base_level = np.nanmean(base, axis=1, keepdims=True)
    recent_missing = np.isnan(blocks.recent_kw).mean(axis=1, keepdims=True)
    recent = np.where(np.isnan(blocks.recent_kw), base_level, blocks.recent_kw)
    partial_off = np.nan_to_num(blocks.partial_kw - base[:, 0], nan=0.0)
    weeks_missing = np.isnan(blocks.weeks_kw).mean(axis=1, keepdims=True)
    week1 = blocks.weeks_kw[:, :STEPS]
    week2 = blocks.weeks_kw[:, STEPS : 2 * STEPS]
    # How much the two weeks disagree, in 6-hour blocks (a hint at how far to trust them).
    spread = np.nan_to_num(np.abs(week1 - week2), nan=0.0).reshape(len(base), 4, -1).mean(axis=2)
    x = np.concatenate(
        [
            (recent - base_level) / s,
            (partial_off / s)[:, None],
            blocks.elapsed[:, None],
            np.nan_to_num(blocks.level_kw, nan=0.0) / s,
            (base_level - c) / s,
            spread / s,
            blocks.calendar,
            recent_missing,
            weeks_missing,
            scaled_weather(blocks.weather, scaling),
        ],
        axis=1,
    )
    return np.asarray(np.nan_to_num(x, nan=0.0), dtype=np.float32)


def day_ahead_origins(
    start_minute: int,
    values_kw: FloatArray,
    first_origin: int,
    last_origin: int,
    stride: int = 5,
) -> IntArray:
    """Origins every ``stride`` minutes in [first, last] whose 96 steps all have data and whose
    last hour is mostly present."""
    lo = first_origin + (-(first_origin + 1)) % stride
    origins = np.arange(lo, last_origin + 1, stride, dtype=np.int64)
    if len(origins) == 0:
        return origins
    targets = day_ahead_targets(start_minute, values_kw, origins)
    recent = window_means(start_minute, values_kw, origins - 59, 60)
    keep = ~np.isnan(targets).any(axis=1) & ~np.isnan(recent)
    return np.asarray(origins[keep], dtype=np.int64)


def cvrmse_pct(predicted: FloatArray, actual: FloatArray) -> float:
    """CV(RMSE) in percent over every origin and step pooled."""
    return float(100.0 * np.sqrt(np.mean((predicted - actual) ** 2)) / np.mean(actual))
