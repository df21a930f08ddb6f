"""Seasonal-naive baseline: the mean of the same local minute in the previous weeks."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from core.forecast.base import (
    DAY_AHEAD_STEP_MINUTES,
    DAY_AHEAD_STEPS,
    HORIZON_MINUTES,
    DayAheadForecast,
    Forecast,
    MinuteHistory,
)
from core.forecast.features import same_type_weeks_ago
from core.timegrid import MINUTES_PER_WEEK


class SeasonalMeanForecaster:
    """Mean of the same site-local minute of the week over the last ``weeks`` weeks.

    Each of the 60 target minutes takes the mean of the values at the same wall-clock minute 1..N
    weeks earlier (the same-type days when the history carries a calendar) that exist; where none
    exists it falls back to persistence (the last valid minute). On the shared meter data this is
    the 'mean-2-weeks' baseline (60-minute RMSE 3.19 kW).
    """

    def __init__(self, weeks: int = 2, horizon_minutes: int = HORIZON_MINUTES) -> None:
        if weeks < 1:
            raise ValueError("weeks must be >= 1")
        self._weeks = weeks
        self._horizon = horizon_minutes

    @property
    def name(self) -> str:
        """Stable name used in REST, BACnet description and benchmarks."""
        return f"mean-{self._weeks}-weeks"

    @property
    def history_minutes(self) -> int:
        """Enough to reach N weeks back from the furthest target, plus a DST hour."""
        return self._weeks * MINUTES_PER_WEEK + 120

    @property
    def day_ahead_history_minutes(self) -> int:
        """N weeks back from the first step, plus a DST hour."""
        return self._weeks * MINUTES_PER_WEEK + 120

    def day_ahead(
        self, history: MinuteHistory, tz: ZoneInfo, made_at: datetime
    ) -> DayAheadForecast | None:
        """The next 24 h in 15-minute steps; the band spans the weeks (see seasonal_day_ahead)."""
        return seasonal_day_ahead(history, tz, made_at, self._weeks, self.name)

    def forecast(self, history: MinuteHistory, tz: ZoneInfo, made_at: datetime) -> Forecast | None:
        """The seasonal mean for each step, persistence where no earlier week has data."""
        last = history.last_valid()
        if last is None:
            return None
        _, last_kw = last
        origin = history.end_minute
        targets = np.arange(origin + 1, origin + self._horizon + 1, dtype=np.int64)
        sums = np.zeros(self._horizon)
        counts = np.zeros(self._horizon)
        for week in range(1, self._weeks + 1):
            lagged = same_type_weeks_ago(targets, week, tz, history.calendar) - history.start_minute
            inside = (lagged >= 0) & (lagged < len(history.values_kw))
            values = np.full(self._horizon, np.nan)
            values[inside] = history.values_kw[lagged[inside]]
            present = ~np.isnan(values)
            sums[present] += values[present]
            counts[present] += 1
        fallback = counts == 0
        kw = np.where(fallback, last_kw, sums / np.maximum(counts, 1))
        note = ""
        if fallback.all():
            note = "no data from earlier weeks: persistence of the last value"
        elif fallback.any():
            note = f"persistence for {int(fallback.sum())} of {self._horizon} minutes"
        return Forecast(
            forecaster=self.name,
            made_at=made_at,
            origin_minute=origin,
            kw=tuple(float(v) for v in kw),
            note=note,
        )


def seasonal_day_ahead(
    history: MinuteHistory,
    tz: ZoneInfo,
    made_at: datetime,
    weeks: int,
    name: str,
) -> DayAheadForecast | None:
    """The next 24 h in clock-aligned steps from the same local times ``1..weeks`` weeks ago.

    P50 is the mean over the weeks of each step's mean; P10/P90 are the lowest and highest of the
    weeks (a band as wide as the weeks disagree). Steps no earlier week covers take the last
    valid value (persistence).
    """
    last = history.last_valid()
    if last is None:
        return None
    _, last_kw = last
    origin = history.end_minute
    step = DAY_AHEAD_STEP_MINUTES
    start = ((origin + 1) // step) * step
    targets = np.arange(start, start + DAY_AHEAD_STEPS * step, dtype=np.int64)
    per_week = np.full((weeks, DAY_AHEAD_STEPS), np.nan)
    for week in range(1, weeks + 1):
        lagged = same_type_weeks_ago(targets, week, tz, history.calendar) - history.start_minute
        inside = (lagged >= 0) & (lagged < len(history.values_kw))
        values = np.full(len(targets), np.nan)
        values[inside] = history.values_kw[lagged[inside]]
        blocks = values.reshape(DAY_AHEAD_STEPS, step)
        counts = np.sum(~np.isnan(blocks), axis=1)
        sums = np.nansum(blocks, axis=1)
        per_week[week - 1] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    covered = np.sum(~np.isnan(per_week), axis=0) > 0
    safe = np.where(np.isnan(per_week), 0.0, per_week)
    counts = np.sum(~np.isnan(per_week), axis=0)
    p50 = np.where(covered, safe.sum(axis=0) / np.maximum(counts, 1), last_kw)
    p90 = np.where(covered, np.where(np.isnan(per_week), -np.inf, per_week).max(axis=0), last_kw)
    p10 = np.where(covered, np.where(np.isnan(per_week), np.inf, per_week).min(axis=0), last_kw)
    return DayAheadForecast(
        forecaster=name,
        made_at=made_at,
        origin_minute=origin,
        start_minute=start,
        step_minutes=step,
        p50_kw=tuple(float(v) for v in p50),
        p10_kw=tuple(float(v) for v in p10),
        p90_kw=tuple(float(v) for v in p90),
    )
