"""Forecast features and targets, in plain numpy (no TensorFlow).

The meter CSV import is ``core.forecast.meter_csv``; the scores are ``core.forecast.evaluation``.

Everything here works on the 1-minute UTC grid of ``core.timegrid`` (minute indices since the
epoch). Calendar features and seasonal lags use the site-local wall clock, so a daylight-saving
change moves 'the same minute last week' by an hour in UTC, as it should.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.calendar import SiteCalendar, day_numbers
from core.forecast.base import HORIZON_MINUTES
from core.timegrid import (
    MINUTES_PER_DAY,
    same_wall_clock_days_ago,
    utc_offsets,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# ---------------------------------------------------------------------------------------------
# time zone helpers (vectorised by caching per 15-minute bucket)


def local_minutes(minutes: IntArray, tz: ZoneInfo) -> IntArray:
    """Site-local wall-clock minute index (minutes since 1970-01-01 00:00 local) of UTC minutes."""
    return minutes + utc_offsets(minutes, tz)


def _weekday_of_local(local: IntArray) -> IntArray:
    # 1970-01-01 was a Thursday (weekday 3 with Monday = 0).
    return np.asarray(np.mod(np.floor_divide(local, MINUTES_PER_DAY) + 3, 7), dtype=np.int64)


def local_weekday(minutes: IntArray, tz: ZoneInfo) -> IntArray:
    """Site-local weekday (Monday = 0) of UTC minutes."""
    return _weekday_of_local(local_minutes(np.asarray(minutes, dtype=np.int64), tz))


def active(calendar: SiteCalendar | None) -> SiteCalendar | None:
    """The calendar when it lists anything, else None (then every path is the plain one)."""
    return calendar if calendar is not None and not calendar.empty else None


def effective_weekday(
    minutes: IntArray, tz: ZoneInfo, calendar: SiteCalendar | None = None
) -> IntArray:
    """Site-local weekday (Monday = 0) of UTC minutes, or the weekday the calendar says their
    day runs like."""
    cal = active(calendar)
    if cal is None:
        return local_weekday(minutes, tz)
    local = local_minutes(np.asarray(minutes, dtype=np.int64), tz)
    return cal.weekdays(day_numbers(local))


def week_lag_days(
    minutes: IntArray, weeks: int, tz: ZoneInfo, calendar: SiteCalendar | None = None
) -> int | IntArray:
    """Days back to 'the same day ``weeks`` weeks ago' of each UTC minute's local day: 7 x
    weeks, or with a calendar the ``weeks``-th earlier day of the same type (per minute)."""
    cal = active(calendar)
    if cal is None:
        return 7 * weeks
    local = local_minutes(np.asarray(minutes, dtype=np.int64), tz)
    return cal.same_type_lags(day_numbers(local), weeks)


def same_type_weeks_ago(
    minutes: IntArray, weeks: int, tz: ZoneInfo, calendar: SiteCalendar | None = None
) -> IntArray:
    """The same local wall-clock minute on the same-type day ``weeks`` weeks back."""
    minutes = np.asarray(minutes, dtype=np.int64)
    return same_wall_clock_days_ago(minutes, week_lag_days(minutes, weeks, tz, calendar), tz)


# Weekday groups: one label per site-local weekday (Monday first), weekdays that run alike
# sharing one (see day_ahead.weekday_groups). NO_GROUPS: every weekday alone.
WeekdayGroups = tuple[int, int, int, int, int, int, int]
NO_GROUPS: WeekdayGroups = (0, 1, 2, 3, 4, 5, 6)


def has_groups(groups: WeekdayGroups | None) -> bool:
    """Whether ``groups`` puts any two weekdays together."""
    return groups is not None and len(set(groups)) < 7


def same_group(groups: WeekdayGroups, weekday: IntArray, days: int) -> npt.NDArray[np.bool_]:
    """Whether the day ``days`` before each of ``weekday`` (Monday = 0) is in its group."""
    label = np.asarray(groups, dtype=np.int64)
    same: npt.NDArray[np.bool_] = label[np.mod(weekday - days, 7)] == label[weekday]
    return same


def same_group_days(
    groups: WeekdayGroups, weekday: IntArray, then_weekday: IntArray
) -> npt.NDArray[np.bool_]:
    """Whether ``then_weekday`` is in the group of ``weekday`` (element-wise; with a calendar
    both are the weekdays the days run like)."""
    label = np.asarray(groups, dtype=np.int64)
    same: npt.NDArray[np.bool_] = label[then_weekday] == label[weekday]
    return same


def parse_weekday_groups(value: Any) -> WeekdayGroups | None:
    """Weekday groups read from an artifact (None stays None); ValueError unless 7 labels in
    0..6."""
    if value is None:
        return None
    labels = tuple(int(v) for v in value)
    if len(labels) != 7 or any(not 0 <= g <= 6 for g in labels):
        raise ValueError(f"weekday_groups must be 7 labels in 0..6, got {value!r}")
    return as_weekday_groups(labels)


def as_weekday_groups(labels: Sequence[int]) -> WeekdayGroups:
    """Seven group labels (Monday first) as the fixed-size tuple the models store."""
    if len(labels) != 7:
        raise ValueError(f"weekday groups need 7 labels, got {len(labels)}")
    return (labels[0], labels[1], labels[2], labels[3], labels[4], labels[5], labels[6])


def calendar_features(
    minutes: IntArray, tz: ZoneInfo, calendar: SiteCalendar | None = None
) -> FloatArray:
    """Local minute-of-day sin/cos and day-of-week one-hot (Monday first; the weekday the
    calendar says the day runs like): shape (n, 9)."""
    local = local_minutes(minutes, tz)
    minute_of_day = np.mod(local, MINUTES_PER_DAY)
    cal = active(calendar)
    weekday = _weekday_of_local(local) if cal is None else cal.weekdays(day_numbers(local))
    angle = 2.0 * np.pi * minute_of_day / MINUTES_PER_DAY
    out = np.zeros((len(minutes), 9), dtype=np.float64)
    out[:, 0] = np.sin(angle)
    out[:, 1] = np.cos(angle)
    out[np.arange(len(minutes)), 2 + weekday] = 1.0
    return out


def minute_of_local(text: str, tz: ZoneInfo) -> int:
    """UTC minute index of an ISO-like local wall-clock time string (e.g. '2022-08-18 00:00')."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        at = at.replace(tzinfo=tz)
    return int(at.timestamp() // 60)


# ---------------------------------------------------------------------------------------------
# features and targets


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Which inputs the model sees; chosen per site by inner validation."""

    recent_minutes: int = 60
    recent_coarse_minutes: int = 180
    coarse_step_minutes: int = 5
    seasonal_days: tuple[int, ...] = (1, 7, 14)
    seasonal_context_minutes: int = 60
    seasonal_step_minutes: int = 5
    seasonal_smooth_minutes: int = 15
    baseline_weeks: int = 2
    horizon_minutes: int = HORIZON_MINUTES
    # Level offsets: mean of the last L minutes minus the seasonal mean (baseline weeks) over the
    # same wall-clock minutes, one input per L. Empty: none (artifacts without the field).
    level_minutes: tuple[int, ...] = ()
    # Outdoor air inputs (temperature now, its 3-hour mean, its change over a day).
    outdoor_air: bool = False
    # Weekday groups (one label per local weekday, Monday first; see
    # day_ahead.weekday_groups): the residual base is the mean over every day of the last
    # baseline_weeks weeks whose weekday is in the origin weekday's group, not over the same
    # weekday only. None: the same weekday (artifacts without the field).
    weekday_groups: WeekdayGroups | None = None

    @property
    def history_minutes(self) -> int:
        """History (ending at the origin) a forecast needs, with a DST hour of slack."""
        longest_day = max(self.seasonal_days) if self.seasonal_days else 0
        longest_day = max(longest_day, 7 * self.baseline_weeks if self.level_minutes else 0)
        level = max(self.level_minutes, default=0)
        return (
            max(
                self.recent_coarse_minutes,
                level,
                longest_day * MINUTES_PER_DAY + max(self.seasonal_context_minutes, level) + 60,
            )
            + 60
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["seasonal_days"] = list(self.seasonal_days)
        d["level_minutes"] = list(self.level_minutes)
        d["weekday_groups"] = None if self.weekday_groups is None else list(self.weekday_groups)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        """Inverse of ``to_dict``."""
        data = dict(data)
        data["seasonal_days"] = tuple(int(x) for x in data["seasonal_days"])
        data["level_minutes"] = tuple(int(x) for x in data.get("level_minutes", ()))
        data["weekday_groups"] = parse_weekday_groups(data.get("weekday_groups"))
        return cls(**data)


def _block_means(windows: FloatArray, step: int) -> FloatArray:
    """NaN-aware means of consecutive blocks of ``step`` columns (trailing columns kept)."""
    if step <= 1:
        return windows
    n, width = windows.shape
    blocks = width // step
    reshaped = windows[:, : blocks * step].reshape(n, blocks, step)
    with np.errstate(invalid="ignore"), _quiet():
        return np.asarray(np.nanmean(reshaped, axis=2), dtype=np.float64)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's 'mean of empty slice' warning: all-NaN blocks are expected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        yield


def _moving_mean(windows: FloatArray, width: int) -> FloatArray:
    """NaN-aware centred moving mean along axis 1 (same shape; edges use what exists)."""
    if width <= 1:
        return windows
    valid = ~np.isnan(windows)
    filled = np.where(valid, windows, 0.0)
    half = width // 2
    pad = ((0, 0), (half + 1, half))
    csum = np.cumsum(np.pad(filled, pad), axis=1)
    ccount = np.cumsum(np.pad(valid.astype(np.float64), pad), axis=1)
    total = csum[:, width:] - csum[:, :-width]
    count = ccount[:, width:] - ccount[:, :-width]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _gather(values: FloatArray, index: IntArray) -> FloatArray:
    """values[index] with NaN where the index is outside the array."""
    inside = (index >= 0) & (index < len(values))
    out = np.full(index.shape, np.nan)
    out[inside] = values[index[inside]]
    return out


@dataclass(frozen=True, slots=True)
class FeatureBlocks:
    """Raw (unscaled, kW) feature blocks for a batch of origins, before NaN handling."""

    recent_kw: FloatArray  # (n, recent_minutes), oldest first, last column = origin
    coarse_kw: FloatArray  # (n, coarse blocks) block means before the fine window
    seasonal_kw: FloatArray  # (n, len(days) * blocks) context + target windows, earlier days
    baseline_kw: FloatArray  # (n, horizon) seasonal mean of the target window (the residual base)
    calendar: FloatArray  # (n, 9)
    last_kw: FloatArray  # (n,) last valid value at or before the origin (NaN if none recently)
    level_kw: FloatArray  # (n, len(level_minutes)) recent mean minus seasonal mean (NaN if none)
    weather: FloatArray  # (n, 3 or 0) outdoor air: now, 3-hour mean, change over a day (NaN)


def feature_blocks(
    start_minute: int,
    values_kw: FloatArray,
    origins: IntArray,
    tz: ZoneInfo,
    config: FeatureConfig,
    outdoor_air: FloatArray | None = None,
    calendar: SiteCalendar | None = None,
) -> FeatureBlocks:
    """Build the raw feature blocks for each origin (UTC minute index) from one series.

    ``outdoor_air`` is aligned with ``values_kw`` (NaN where unknown); used when the config asks.
    ``calendar``: the origin's day is the type it lists (weekday input, weekday group, and the
    weekly lags read the same-type days before it); None or empty: plain weekdays.
    """
    cal = active(calendar)
    origins = np.asarray(origins, dtype=np.int64)
    rel = origins - start_minute
    h = config.horizon_minutes
    recent_idx = rel[:, None] + np.arange(-config.recent_minutes + 1, 1)[None, :]
    recent = _gather(values_kw, recent_idx)
    coarse_span = max(0, config.recent_coarse_minutes - config.recent_minutes)
    coarse_span -= coarse_span % config.coarse_step_minutes
    if coarse_span > 0:
        coarse_idx = (
            rel[:, None]
            + np.arange(-config.recent_minutes - coarse_span + 1, -config.recent_minutes + 1)[
                None, :
            ]
        )
        coarse = _block_means(_gather(values_kw, coarse_idx), config.coarse_step_minutes)
    else:
        coarse = np.zeros((len(origins), 0))

    # Seasonal windows: the same local wall-clock span (context before origin + the target
    # window) on earlier days. The DST shift is taken at the origin for the whole window.
    # Seasonal windows are smoothed (centred moving mean): a single minute a week ago mostly
    # carries the compressor's cycle phase, which does not repeat; the level does.
    ctx = config.seasonal_context_minutes
    half = max(0, config.seasonal_smooth_minutes // 2)
    offsets = np.arange(-ctx + 1 - half, h + 1 + half)
    seasonal_parts: list[FloatArray] = []
    week_windows: list[FloatArray] = []
    groups = config.weekday_groups
    grouped = has_groups(groups)
    base_days = 7 * config.baseline_weeks
    lag_days = sorted(
        set(config.seasonal_days)
        | {7 * (w + 1) for w in range(config.baseline_weeks)}
        | (set(range(1, base_days + 1)) if grouped else set())
    )
    origin_day = day_numbers(local_minutes(origins, tz)) if cal is not None else origins
    if grouped:
        assert groups is not None
        weekday = effective_weekday(origins, tz, cal)
        group_sum = np.zeros((len(origins), h))
        group_count = np.zeros((len(origins), h))

    def window_at(lag: int | IntArray) -> FloatArray:
        base = same_wall_clock_days_ago(origins, lag, tz) - start_minute
        raw = _gather(values_kw, base[:, None] + offsets[None, :])
        return _moving_mean(raw, 2 * half + 1)[:, half : raw.shape[1] - half]

    for days in lag_days:
        use = None
        if grouped and days <= base_days:
            assert groups is not None
            # The origin's weekday decides the group for the whole hour ahead.
            if cal is None:
                use = same_group(groups, weekday, days)[:, None]
            else:
                # Listed days are exceptions: no origin's base reads them.
                then = origin_day - days
                same = same_group_days(groups, weekday, cal.weekdays(then)) & cal.ordinary(then)
                use = same[:, None]
            if not use.any() and days not in config.seasonal_days:
                continue  # no origin of the batch reads this day
        # With a calendar the weekly lags read the same-type days (per origin).
        lag: int | IntArray = days
        if cal is not None and days % 7 == 0:
            lag = cal.same_type_lags(origin_day, days // 7)
            if np.all(lag == days):
                lag = days
        window = window_at(lag)
        if days in config.seasonal_days:
            seasonal_parts.append(_block_means(window, config.seasonal_step_minutes))
        if use is not None:
            target = (window if isinstance(lag, int) else window_at(days))[:, ctx:]
            ok = use & ~np.isnan(target)
            group_sum += np.where(ok, target, 0.0)
            group_count += ok
        elif days % 7 == 0 and days // 7 <= config.baseline_weeks:
            week_windows.append(window[:, ctx:])
    seasonal = (
        np.concatenate(seasonal_parts, axis=1) if seasonal_parts else np.zeros((len(origins), 0))
    )

    # Last valid value within the fine window (persistence fallback).
    valid = ~np.isnan(recent)
    has = valid.any(axis=1)
    last_pos = recent.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)
    last = np.where(has, recent[np.arange(len(origins)), last_pos], np.nan)

    level = _level_offsets(start_minute, values_kw, origins, tz, config, cal)
    if grouped:
        with np.errstate(invalid="ignore", divide="ignore"):
            baseline = np.where(group_count > 0, group_sum / np.maximum(group_count, 1), np.nan)
    elif week_windows:
        with _quiet():
            baseline = np.nanmean(np.stack(week_windows, axis=0), axis=0)
    else:
        baseline = np.full((len(origins), h), np.nan)
    baseline = np.where(np.isnan(baseline), last[:, None], baseline)
    return FeatureBlocks(
        recent_kw=recent,
        coarse_kw=coarse,
        seasonal_kw=seasonal,
        baseline_kw=baseline,
        calendar=calendar_features(origins, tz, cal),
        last_kw=last,
        level_kw=level,
        weather=(
            weather_features(start_minute, outdoor_air, origins)
            if config.outdoor_air
            else np.zeros((len(origins), 0))
        ),
    )


def window_means(
    start_minute: int, values: FloatArray | None, lo: IntArray, length: int
) -> FloatArray:
    """NaN-aware mean of minutes ``lo .. lo+length-1`` (UTC indices, any shape) of a series,
    by prefix sums (no per-minute windows); NaN where none is known."""
    lo = np.asarray(lo, dtype=np.int64)
    if values is None or len(values) == 0:
        return np.full(lo.shape, np.nan)
    valid = ~np.isnan(values)
    csum = np.concatenate(([0.0], np.cumsum(np.where(valid, values, 0.0))))
    ccount = np.concatenate(([0], np.cumsum(valid)))
    a = np.clip(lo - start_minute, 0, len(values))
    b = np.clip(lo - start_minute + length, 0, len(values))
    count = ccount[b] - ccount[a]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (csum[b] - csum[a]) / np.maximum(count, 1), np.nan)


def weather_features(
    start_minute: int, outdoor_air: FloatArray | None, origins: IntArray
) -> FloatArray:
    """Outdoor air at each origin: the last 15 minutes' mean, the 3-hour mean and the change
    against the same hour a day earlier; shape (n, 3), NaN where unknown."""
    origins = np.asarray(origins, dtype=np.int64)
    now = window_means(start_minute, outdoor_air, origins - 14, 15)
    mean3h = window_means(start_minute, outdoor_air, origins - 179, 180)
    day = window_means(start_minute, outdoor_air, origins - 14 - MINUTES_PER_DAY, 15)
    return np.stack([now, mean3h, now - day], axis=1)


def _level_offsets(
    start_minute: int,
    values_kw: FloatArray,
    origins: IntArray,
    tz: ZoneInfo,
    config: FeatureConfig,
    calendar: SiteCalendar | None = None,
) -> FloatArray:
    """Mean of the last L minutes minus the mean of the same wall-clock minutes in the baseline
    weeks (same-type days with a calendar), for each L of ``config.level_minutes`` (kW; NaN where
    either side has no value)."""
    spans = config.level_minutes
    if not spans or config.baseline_weeks < 1:
        return np.zeros((len(origins), 0))
    longest = max(spans)
    rel = origins - start_minute
    offsets = np.arange(-longest + 1, 1)
    recent = _gather(values_kw, rel[:, None] + offsets[None, :])
    weeks = []
    for w in range(1, config.baseline_weeks + 1):
        base = same_type_weeks_ago(origins, w, tz, calendar) - start_minute
        weeks.append(_gather(values_kw, base[:, None] + offsets[None, :]))
    with _quiet():
        seasonal = np.nanmean(np.stack(weeks, axis=0), axis=0)
        cols = [
            np.nanmean(recent[:, -span:], axis=1) - np.nanmean(seasonal[:, -span:], axis=1)
            for span in spans
        ]
    return np.stack(cols, axis=1)


@dataclass(frozen=True, slots=True)
class Scaling:
    """Affine kW scaling from the training history: (kw - center_kw) / scale_kw."""

    center_kw: float
    scale_kw: float
    # Outdoor air scaling (the stored unit); unused by models without outdoor air.
    center_air: float = 0.0
    scale_air: float = 1.0

    @classmethod
    def fit(cls, values_kw: FloatArray, outdoor_air: FloatArray | None = None) -> Scaling:
        """Mean and standard deviation of the valid training minutes (and outdoor air)."""
        valid = values_kw[~np.isnan(values_kw)]
        if len(valid) == 0:
            raise ValueError("no valid values to fit a scaling")
        scale = float(np.std(valid))
        center_air, scale_air = 0.0, 1.0
        if outdoor_air is not None:
            air = outdoor_air[~np.isnan(outdoor_air)]
            if len(air):
                center_air = float(np.mean(air))
                scale_air = max(float(np.std(air)), 1e-3)
        return cls(
            center_kw=float(np.mean(valid)),
            scale_kw=scale if scale > 1e-6 else 1.0,
            center_air=center_air,
            scale_air=scale_air,
        )


def design_matrix(blocks: FeatureBlocks, scaling: Scaling) -> npt.NDArray[np.float32]:
    """Scaled model input: NaN filled (recent by last value, seasonal by baseline) + masks."""
    c, s = scaling.center_kw, scaling.scale_kw
    last = np.where(np.isnan(blocks.last_kw), c, blocks.last_kw)[:, None]
    recent = blocks.recent_kw
    recent_missing = np.isnan(recent).mean(axis=1, keepdims=True)
    recent = np.where(np.isnan(recent), last, recent)
    coarse = np.where(np.isnan(blocks.coarse_kw), last, blocks.coarse_kw)
    base_mean = np.nanmean(blocks.baseline_kw, axis=1, keepdims=True)
    seasonal_missing = np.isnan(blocks.seasonal_kw).mean(axis=1, keepdims=True)
    seasonal = np.where(np.isnan(blocks.seasonal_kw), base_mean, blocks.seasonal_kw)
    baseline = blocks.baseline_kw
    x = np.concatenate(
        [
            (recent - c) / s,
            (coarse - c) / s,
            (seasonal - c) / s,
            (baseline - c) / s,
            blocks.calendar,
            recent_missing,
            seasonal_missing,
            np.nan_to_num(blocks.level_kw, nan=0.0) / s,
            scaled_weather(blocks.weather, scaling),
        ],
        axis=1,
    )
    return np.asarray(np.nan_to_num(x, nan=0.0), dtype=np.float32)


def scaled_weather(weather: FloatArray, scaling: Scaling) -> FloatArray:
    """Outdoor air columns scaled (the change is only divided), 0 where unknown, plus a
    missing flag; (n, 0) for a model without outdoor air."""
    if weather.shape[1] == 0:
        return weather
    centre = np.array([scaling.center_air, scaling.center_air, 0.0])[: weather.shape[1]]
    scaled = (weather - centre) / scaling.scale_air
    missing = np.isnan(weather[:, :1]).astype(np.float64)
    return np.concatenate([np.nan_to_num(scaled, nan=0.0), missing], axis=1)


def target_windows(
    start_minute: int, values_kw: FloatArray, origins: IntArray, horizon: int
) -> FloatArray:
    """The kW of minutes origin+1 .. origin+horizon for each origin (NaN where missing)."""
    rel = np.asarray(origins, dtype=np.int64) - start_minute
    return _gather(values_kw, rel[:, None] + np.arange(1, horizon + 1)[None, :])


def training_origins(
    start_minute: int,
    values_kw: FloatArray,
    first_origin: int,
    last_origin: int,
    horizon: int,
    *,
    max_recent_missing: float = 0.5,
    recent_minutes: int = 60,
) -> IntArray:
    """Origins in [first, last] whose whole target window exists and whose recent window is
    mostly present (long gaps are masked out of training this way)."""
    if last_origin < first_origin:
        return np.zeros(0, dtype=np.int64)
    origins = np.arange(first_origin, last_origin + 1, dtype=np.int64)
    missing = np.isnan(values_kw).astype(np.float64)
    csum = np.concatenate(([0.0], np.cumsum(missing)))
    rel = origins - start_minute
    # Target window rel+1..rel+h must be complete and inside the series.
    inside = (rel - recent_minutes + 1 >= 0) & (rel + horizon < len(values_kw))
    rel_c = np.clip(rel, recent_minutes - 1, len(values_kw) - horizon - 1)
    target_missing = csum[rel_c + horizon + 1] - csum[rel_c + 1]
    recent_missing = (csum[rel_c + 1] - csum[rel_c - recent_minutes + 1]) / recent_minutes
    keep = inside & (target_missing == 0) & (recent_missing <= max_recent_missing)
    return np.asarray(origins[keep], dtype=np.int64)


def seasonal_mean_windows(
    start_minute: int,
    values_kw: FloatArray,
    origins: IntArray,
    tz: ZoneInfo,
    weeks: int,
    horizon: int,
    calendar: SiteCalendar | None = None,
) -> FloatArray:
    """The 'mean-N-weeks' baseline for each origin (raw minutes), persistence where none; with
    a calendar the weeks are the same-type days of the origin's day."""
    windows = [
        target_windows(
            start_minute, values_kw, same_type_weeks_ago(origins, w, tz, calendar), horizon
        )
        for w in range(1, weeks + 1)
    ]
    with _quiet():
        mean = np.nanmean(np.stack(windows), axis=0)
    last = persistence_windows(start_minute, values_kw, origins, 1)[:, 0]
    return np.where(np.isnan(mean), last[:, None], mean)


def persistence_windows(
    start_minute: int, values_kw: FloatArray, origins: IntArray, horizon: int
) -> FloatArray:
    """The last valid value at or before each origin, repeated over the horizon."""
    valid = ~np.isnan(values_kw)
    idx = np.where(valid, np.arange(len(values_kw)), -1)
    last_idx = np.maximum.accumulate(idx)
    rel = np.clip(np.asarray(origins, dtype=np.int64) - start_minute, 0, len(values_kw) - 1)
    li = last_idx[rel]
    last = np.where(li >= 0, values_kw[np.maximum(li, 0)], np.nan)
    return np.repeat(last[:, None], horizon, axis=1)
