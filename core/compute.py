"""Snapshot computation: every number the faces show is decided here, once per interval.

grid -> signals (rate of change, load flags) -> forecasts (60 minutes, day-ahead) -> demand
accounting and decisions. ``DsmCore`` owns the state's lifecycle, the commands and persistence;
it calls ``SnapshotComputer.compute`` and carries out the side effects it returns (the forecast to
log, the closed demand intervals to store).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from core.accuracy import LiveErrorTracker
from core.demand import ClosedInterval, DemandTracker, OptionalInputs
from core.forecast.base import (
    HORIZON_MINUTES,
    DayAheadForecast,
    DayAheadForecaster,
    Forecast,
    Forecaster,
    MinuteHistory,
)
from core.forecast.baseline import SeasonalMeanForecaster
from core.series import MinuteSeries
from core.signals import (
    RATE_WINDOW_MINUTES,
    LoadClassifier,
    rate_of_change_1min,
    rate_of_change_15min,
)
from core.snapshot import Quality, Snapshot
from core.timegrid import minute_of, minute_start

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ForecastLogEntry:
    """A 60-minute-ahead forecast to store for the live RMSE."""

    target_minute: int
    forecaster: str
    kw: float
    made_at: datetime


@dataclass(frozen=True, slots=True)
class Computed:
    """A new snapshot and what the core must persist because of it."""

    snapshot: Snapshot
    forecast_log: ForecastLogEntry | None
    closed_intervals: list[ClosedInterval]


class SnapshotComputer:
    """Turns the minute series and the trackers into the next snapshot."""

    def __init__(
        self,
        series: MinuteSeries,
        classifier: LoadClassifier,
        errors: LiveErrorTracker,
        tz: ZoneInfo,
        percentile_window_minutes: int,
    ) -> None:
        self._series = series
        self._classifier = classifier
        self._errors = errors
        self._tz = tz
        self._window_minutes = percentile_window_minutes
        self._baseline = SeasonalMeanForecaster(weeks=2)

    def compute(
        self,
        previous: Snapshot,
        now: datetime,
        *,
        input_quality: Quality,
        forecaster: Forecaster,
        demand: DemandTracker,
        inputs: OptionalInputs,
    ) -> Computed:
        """The snapshot at ``now``; updates the classifier, error and demand trackers."""
        origin = minute_of(now) - 1
        fresh = input_quality == Quality.OK
        last_kw = self._series.get(origin)
        previous_kw = self._series.get(origin - 1)

        rate_1 = rate_of_change_1min(previous_kw, last_kw) if fresh else None
        rate_15 = (
            rate_of_change_15min(self._series.window(origin, RATE_WINDOW_MINUTES))
            if fresh
            else None
        )
        rate_quality = _quality(fresh, input_quality, rate_1 is not None)

        window = self._series.window(origin, self._window_minutes)
        flags = self._classifier.evaluate(last_kw if fresh else None, window, now)
        if not fresh:
            load_quality = input_quality
        elif not flags.evaluated:
            load_quality = Quality.INSUFFICIENT_HISTORY
        else:
            load_quality = Quality.OK

        history = MinuteHistory(
            origin - forecaster.history_minutes + 1,
            self._series.window(origin, forecaster.history_minutes),
        )
        forecast = self._run_forecaster(forecaster, history, now)
        forecast_quality = _quality(fresh, input_quality, forecast is not None)
        logged = None
        if forecast is not None and fresh:
            target = forecast.origin_minute + HORIZON_MINUTES
            self._errors.predicted(target, forecast.one_hour_kw)
            logged = ForecastLogEntry(target, forecast.forecaster, forecast.one_hour_kw, now)
        model = dataclasses.replace(
            previous.model,
            forecaster=forecaster.name,
            live_rmse_kw=self._errors.rmse_kw(),
            live_rmse_samples=self._errors.samples,
        )
        closed = demand.close_due(now)
        demand_snapshot = demand.evaluate(now, forecast, inputs)
        day_ahead = self._run_day_ahead(forecaster, origin, now) if fresh else None
        snapshot = dataclasses.replace(
            previous,
            computed_at=now,
            input_quality=input_quality,
            last_minute_kw=None if math.isnan(last_kw) else last_kw,
            last_minute_at=minute_start(origin) if not math.isnan(last_kw) else None,
            rate_of_change_kw_per_min=rate_1,
            rate_of_change_15min_kw_per_min=rate_15,
            rate_quality=rate_quality,
            high_load=flags.high,
            low_load=flags.low,
            high_threshold_kw=flags.high_threshold_kw,
            low_threshold_kw=flags.low_threshold_kw,
            load_quality=load_quality,
            forecast=forecast,
            forecast_quality=forecast_quality,
            day_ahead=day_ahead,
            model=model,
            demand=demand_snapshot,
            demand_target_kw=demand.target_kw,
        )
        return Computed(snapshot, logged, closed)

    def _run_forecaster(
        self, forecaster: Forecaster, history: MinuteHistory, now: datetime
    ) -> Forecast | None:
        """The served forecaster's forecast; the baseline's if it fails (logged, never fatal)."""
        try:
            return forecaster.forecast(history, self._tz, now)
        except Exception:
            log.exception("forecaster %s failed; using the baseline", forecaster.name)
        baseline_history = MinuteHistory(
            history.end_minute - self._baseline.history_minutes + 1,
            self._series.window(history.end_minute, self._baseline.history_minutes),
        )
        return self._baseline.forecast(baseline_history, self._tz, now)

    def _run_day_ahead(
        self, forecaster: Forecaster, origin: int, now: datetime
    ) -> DayAheadForecast | None:
        """The next 24 h from the served forecaster if it has a day-ahead, else the baseline's."""
        sources: list[object] = [forecaster, self._baseline]
        for source in sources:
            if not isinstance(source, DayAheadForecaster):
                continue
            wanted = min(source.day_ahead_history_minutes, self._series.capacity_minutes)
            history = MinuteHistory(origin - wanted + 1, self._series.window(origin, wanted))
            try:
                return source.day_ahead(history, self._tz, now)
            except Exception:
                log.exception("day-ahead forecast of %s failed", source.name)
        return None


def _quality(fresh: bool, input_quality: Quality, has_value: bool) -> Quality:
    if not fresh:
        return input_quality
    return Quality.OK if has_value else Quality.INSUFFICIENT_HISTORY
