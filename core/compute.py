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

import numpy as np
import numpy.typing as npt

from core.accuracy import BAND_GAMMA, DAY_AHEAD_BAND_GAMMA, BandAdapter, LiveErrorTracker
from core.calendar import SiteCalendar
from core.demand import (
    ClosedInterval,
    DemandOutlook,
    DemandTracker,
    OptionalInputs,
    battery_power_in_force,
    elapsed_minutes_kw,
    interval_start_minute,
    value_if_fresh,
)
from core.demand import Reading as DemandReading
from core.dispatch.controller import (
    DispatchController,
    DispatchDecision,
    DispatchInputs,
    with_seasonal_stress,
)
from core.forecast.base import (
    DAY_AHEAD_STEP_MINUTES,
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


# With a site calendar, how much further back a forecast's history reaches (weeks).
CALENDAR_SLACK_WEEKS = 2


class SnapshotComputer:
    """Turns the minute series and the trackers into the next snapshot."""

    def __init__(
        self,
        series: MinuteSeries,
        classifier: LoadClassifier,
        errors: LiveErrorTracker,
        tz: ZoneInfo,
        percentile_window_minutes: int,
        dispatch: DispatchController | None = None,
        interval_minutes: int = 15,
        stale_after_s: float = 300.0,
        outdoor: MinuteSeries | None = None,
        dispatched: MinuteSeries | None = None,
        sliding_window: bool = False,
    ) -> None:
        self._sliding = sliding_window
        self._outdoor = outdoor
        self._dispatched = dispatched
        self._stale_after_s = stale_after_s
        self._dispatch = dispatch
        self._interval_minutes = interval_minutes
        self._series = series
        self._classifier = classifier
        self._errors = errors
        self._tz = tz
        self._window_minutes = percentile_window_minutes
        self._baseline = SeasonalMeanForecaster(weeks=2)
        # The site calendar the forecasts (and so the dispatch plan) read; None: plain weekdays.
        self.calendar: SiteCalendar | None = None
        # The served bands, kept at 80 % coverage after training by the outcomes that arrive:
        # one adapter per forecaster and output (the baseline standing in for a failed model
        # does not move the model's scale).
        self._bands: dict[tuple[str, bool], BandAdapter] = {}

    def band(self, forecaster: str, day_ahead: bool = False) -> BandAdapter:
        """The band adapter of one forecaster's 60-minute or day-ahead output."""
        key = (forecaster, day_ahead)
        adapter = self._bands.get(key)
        if adapter is None:
            adapter = BandAdapter(
                step_minutes=DAY_AHEAD_STEP_MINUTES if day_ahead else 1,
                gamma=DAY_AHEAD_BAND_GAMMA if day_ahead else BAND_GAMMA,
            )
            self._bands[key] = adapter
        return adapter

    def reset_bands(self) -> None:
        """A new model serves: its bands start from its own calibration."""
        self._bands.clear()

    def observed(self, minute: int, base_kw: float) -> None:
        """A minute of base load completed: score the bands it closes."""
        for adapter in self._bands.values():
            adapter.observed(minute, base_kw)

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

        history = self._history(origin, forecaster.history_minutes)
        forecast = self._run_forecaster(forecaster, history, now)
        # Published with the adapted band (scored later when made on a fresh reading); the demand
        # logic keeps the band as the model gives it, as the demand bench measures it.
        served = self._adapted(forecast, record=fresh) if forecast is not None else None
        forecast_quality = _quality(fresh, input_quality, forecast is not None)
        logged = None
        if forecast is not None and fresh:
            target = forecast.origin_minute + HORIZON_MINUTES
            self._errors.predicted(target, forecast.one_hour_kw)
            logged = ForecastLogEntry(target, forecast.forecaster, forecast.one_hour_kw, now)
        band = self.band(served.forecaster if served else forecaster.name)
        model = dataclasses.replace(
            previous.model,
            forecaster=forecaster.name,
            live_rmse_kw=self._errors.rmse_kw(),
            live_rmse_samples=self._errors.samples,
            band_scale=band.scale,
            band_coverage=band.coverage(),
        )
        # Every stored minute of the interval in progress counts, imported or batched ones too.
        closed = demand.add_stored_minutes(now, self._stored_minutes(origin))
        closed += demand.close_due(now)
        setpoint = previous.dispatch.setpoint_kw if previous.dispatch is not None else None
        # One projection of the interval: the building's, the battery's response to it, then
        # every demand decision on the two together.
        outlook = demand.project(now, forecast, inputs, battery_setpoint_kw=setpoint)
        day_ahead = self._run_day_ahead(forecaster, origin, now) if fresh else None
        # The plan makes its own pessimistic path from the forecast as the model gives it (the
        # replay bench feeds it the same); what is published carries the adapted band.
        dispatch = (
            self.plan_dispatch(origin, now, outlook, day_ahead, inputs, setpoint) if fresh else None
        )
        demand_snapshot = demand.decide(outlook, None if dispatch is None else dispatch.rest_kw)
        if day_ahead is not None:
            day_ahead = self._adapted_day_ahead(day_ahead, origin)
            # The day-ahead served may be the baseline's (a model without one): show its band.
            day_band = self.band(day_ahead.forecaster, day_ahead=True)
            model = dataclasses.replace(
                model,
                day_ahead_band_scale=day_band.scale,
                day_ahead_band_coverage=day_band.coverage(),
            )
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
            forecast=served,
            forecast_quality=forecast_quality,
            day_ahead=day_ahead,
            dispatch=dispatch,
            model=model,
            demand=demand_snapshot,
            demand_target_kw=demand.target_kw,
        )
        return Computed(snapshot, logged, closed)

    def _adapted(self, forecast: Forecast, record: bool) -> Forecast:
        """The 60-minute forecast with its band widened or narrowed by the live adaptation."""
        p10, p90 = forecast.p10_kw, forecast.p90_kw
        if p10 is None or p90 is None or not _band_usable(forecast.kw, p10, p90):
            return forecast
        band = self.band(forecast.forecaster)
        low, high = band.widen(forecast.kw, p10, p90)
        if record:
            last = HORIZON_MINUTES - 1
            band.issued(
                forecast.origin_minute,
                forecast.origin_minute + HORIZON_MINUTES,
                low[last:],
                high[last:],
            )
        return dataclasses.replace(forecast, p10_kw=low, p90_kw=high)

    def _adapted_day_ahead(self, day_ahead: DayAheadForecast, origin: int) -> DayAheadForecast:
        """The day-ahead with its band adapted the same way (one forecast per 15 minutes scored)."""
        p10, p90 = day_ahead.p10_kw, day_ahead.p90_kw
        if p10 is None or p90 is None or not _band_usable(day_ahead.p50_kw, p10, p90):
            return day_ahead
        band = self.band(day_ahead.forecaster, day_ahead=True)
        low, high = band.widen(day_ahead.p50_kw, p10, p90)
        band.issued(origin, day_ahead.start_minute, low, high)
        return dataclasses.replace(day_ahead, p10_kw=low, p90_kw=high)

    def _stored_minutes(self, origin: int) -> dict[int, float]:
        """The cached meter minutes of the last demand interval's length up to ``origin``."""
        length = self._interval_minutes
        values = self._series.window(origin, length)
        first = origin - length + 1
        return {first + i: float(kw) for i, kw in enumerate(values) if math.isfinite(kw)}

    def plan_dispatch(
        self,
        origin: int,
        now: datetime,
        demand: DemandOutlook,
        day_ahead: DayAheadForecast | None,
        inputs: OptionalInputs,
        setpoint_kw: float | None,
    ) -> DispatchDecision | None:
        """The battery/EV decision for the minute after ``origin`` (None without a battery).

        ``setpoint_kw``: the battery setpoint in force (the last decision's), the battery's power
        when no measurement is fresh. The live layer's answer to the demand projection of the
        interval's rest (``demand.rest_building_kw``) is the decision's ``rest_kw``.
        """
        if self._dispatch is None:
            return None
        minute = origin + 1
        step = self._interval_minutes
        # The billing interval (site-local clock-aligned, as the demand tracker bills it); with a
        # sliding window, the window the coming minute closes.
        if self._sliding:
            start = minute - (step - 1)
        else:
            start = interval_start_minute(minute, step, self._tz)
        # The latest meter minute within the stale limit (a BAS may write less often than each
        # minute); none: NaN, and the controller holds the battery and says so.
        recent = self._series.window(origin, max(1, int(self._stale_after_s // 60)))
        valid = recent[~np.isnan(recent)]
        meter = float(valid[-1]) if len(valid) else math.nan
        elapsed = self._series.window(origin, minute - start) if minute > start else None
        grid = _elapsed_minutes(elapsed, meter)
        # The building load is the meter less the battery's own power (+ charging).
        own = battery_power_in_force(self._fresh(inputs.battery_power_kw, now), setpoint_kw) or 0.0
        soc = self._fresh(inputs.battery_soc_pct, now)
        if day_ahead is not None and day_ahead.forecaster != self._baseline.name:
            seasonal = self.seasonal_day_ahead(origin, now)
            if self._dispatch.plan_forecast == "baseline":
                # The self-tuning chose to plan on the baseline over the served model.
                day_ahead = seasonal
            else:
                # The plan's pessimistic path: a trained model's P90 raised to the weeks' range.
                day_ahead = with_seasonal_stress(day_ahead, seasonal)
        forecast_step = day_ahead.step_minutes if day_ahead else DAY_AHEAD_STEP_MINUTES
        return self._dispatch.decide(
            DispatchInputs(
                minute=minute,
                step_minutes=step,
                interval_grid_kw=grid,
                load_now_kw=meter - own,  # NaN without a reading: the controller holds
                forecast_start_minute=day_ahead.start_minute if day_ahead else None,
                forecast_p50_kw=day_ahead.p50_kw if day_ahead else None,
                forecast_p90_kw=day_ahead.p90_kw if day_ahead else None,
                forecast_step_minutes=forecast_step,
                paid_peak_kw=demand.period_peak_kw,
                target_kw=demand.target_kw,
                soc_pct=soc,
                sliding=self._sliding,
                rest_load_kw=demand.rest_building_kw,
            )
        )

    def _fresh(self, reading: DemandReading | None, now: datetime) -> float | None:
        """A BAS input's value while it is recent enough, else None (stale)."""
        if reading is None:
            return None
        return value_if_fresh(reading.value, reading.at, now, self._stale_after_s)

    def _run_forecaster(
        self, forecaster: Forecaster, history: MinuteHistory, now: datetime
    ) -> Forecast | None:
        """The served forecaster's forecast; the baseline's if it fails (logged, never fatal)."""
        try:
            return forecaster.forecast(history, self._tz, now)
        except Exception:
            log.exception("forecaster %s failed; using the baseline", forecaster.name)
        baseline_history = self._history(history.end_minute, self._baseline.history_minutes)
        return self._baseline.forecast(baseline_history, self._tz, now)

    def _run_day_ahead(
        self, forecaster: Forecaster, origin: int, now: datetime
    ) -> DayAheadForecast | None:
        """The next 24 h from the served forecaster if it has a day-ahead, else the baseline's."""
        sources: list[object] = [forecaster, self._baseline]
        for source in sources:
            if not isinstance(source, DayAheadForecaster):
                continue
            result = self._day_ahead_of(source, origin, now)
            if result is not None:  # a model without a day-ahead part answers None
                return result
        return None

    def seasonal_day_ahead(self, origin: int, now: datetime) -> DayAheadForecast | None:
        """The seasonal baseline's day-ahead (None when it has none or fails)."""
        return self._day_ahead_of(self._baseline, origin, now)

    def _day_ahead_of(
        self, source: DayAheadForecaster, origin: int, now: datetime
    ) -> DayAheadForecast | None:
        """One source's day-ahead on the history it wants; None (logged) when it fails."""
        wanted = min(source.day_ahead_history_minutes, self._series.capacity_minutes)
        try:
            return source.day_ahead(self._history(origin, wanted), self._tz, now)
        except Exception:
            log.exception("day-ahead forecast of %s failed", source.name)
            return None

    def history(self, origin: int, minutes: int) -> MinuteHistory:
        """The forecasters' input at ``origin`` (what ``compute`` gives them; replays use it)."""
        return self._history(origin, minutes)

    def _history(self, origin: int, minutes: int) -> MinuteHistory:
        """The base load of the last ``minutes`` minutes up to ``origin`` (the meter less the
        battery and EV kW dispatched, where known), with outdoor air where known.

        A battery that shaved last week's peaks must not teach the forecasters that the building
        peaks lower; without a battery or EV the base load is the meter. With a calendar the
        window reaches CALENDAR_SLACK_WEEKS further back (within the cache): a listed day skipped
        pushes a same-type day that much further.
        """
        if self.calendar is not None:
            minutes = min(minutes + CALENDAR_SLACK_WEEKS * 7 * 1440, self._series.capacity_minutes)
        values = self._series.window(origin, minutes)
        if self._dispatched is not None:
            own = self._dispatched.window(origin, minutes)
            if not np.all(np.isnan(own)):
                values = values - np.nan_to_num(own)
        air = None
        if self._outdoor is not None:
            window = self._outdoor.window(origin, minutes)
            if not np.all(np.isnan(window)):
                air = window
        return MinuteHistory(origin - minutes + 1, values, outdoor_air=air, calendar=self.calendar)


def _band_usable(point: tuple[float, ...], p10: tuple[float, ...], p90: tuple[float, ...]) -> bool:
    """A band the adaptation can widen: both edges as long as the point, all finite."""
    if not point or not len(point) == len(p10) == len(p90):
        return False
    return all(bool(np.all(np.isfinite(values))) for values in (point, p10, p90))


def _quality(fresh: bool, input_quality: Quality, has_value: bool) -> Quality:
    if not fresh:
        return input_quality
    return Quality.OK if has_value else Quality.INSUFFICIENT_HISTORY


def _elapsed_minutes(window: npt.NDArray[np.float64] | None, meter_kw: float) -> list[float]:
    """Grid kW of each elapsed minute of the interval, one entry per minute of the clock, gaps
    filled by the demand projection's rule (``elapsed_minutes_kw``); zeros when nothing is known,
    so the controller's count of elapsed minutes, and with it the interval's start, stays right.
    """
    if window is None or len(window) == 0:
        return []
    values = elapsed_minutes_kw(window.tolist(), meter_kw)
    return values if values is not None else [0.0] * len(window)
