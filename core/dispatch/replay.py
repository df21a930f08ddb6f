"""Closed-loop replay of a meter series through a dispatch controller, minute by minute.

The meter the controller sees is the building's load plus the battery power it commanded the
minute before; the simulated battery follows the setpoint within its power limits, its SOC window
and the site's load (it never exports). SOC starts each billing month at ``start_soc_pct``.
Billed demand is the highest clock-aligned interval average of grid import in each local calendar
month. The same replay serves the benchmark and the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.calendar import SiteCalendar
from core.dispatch.assets import Battery
from core.dispatch.controller import DispatchController, DispatchInputs, with_seasonal_stress
from core.dispatch.optimum import optimum_peak
from core.forecast.base import (
    DAY_AHEAD_STEP_MINUTES,
    DayAheadForecast,
    DayAheadForecaster,
    Forecaster,
    MinuteHistory,
)
from core.forecast.baseline import SeasonalMeanForecaster
from core.timegrid import minute_start

FloatArray = npt.NDArray[np.float64]
# Tolerance of the limit checks (floating point), kW and kWh.
EPS = 1e-6


class MinuteController(Protocol):
    """Decides the battery setpoint for each minute of a replay."""

    name: str

    def setpoint(self, state: ReplayState) -> float:
        """+ charge / - discharge kW for ``state.minute``."""
        ...


@dataclass(slots=True)
class ReplayState:
    """What a controller may look at before minute ``minute`` (nothing from the future)."""

    minute: int
    index: int  # position of ``minute`` in the load array
    step_minutes: int
    load_kw: FloatArray  # the whole building load; controllers read only [:index]
    interval_grid_kw: list[float]
    paid_peak_kw: float | None
    soc_pct: float
    last_battery_kw: float


@dataclass(slots=True)
class MonthResult:
    """One controller over one billing month."""

    controller: str
    month: str  # YYYY-MM (local)
    billed_kw: float
    throughput_kwh: float
    violations: int
    solve_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class IntervalRecord:
    """One closed demand interval of a replay: its grid import and the battery's throughput."""

    start_minute: int
    grid_kw: float
    throughput_kwh: float


def month_of(minute: int, tz: ZoneInfo) -> str:
    """Local YYYY-MM of a UTC minute index."""
    return minute_start(minute).astimezone(tz).strftime("%Y-%m")


def month_bounds(start_minute: int, count: int, tz: ZoneInfo) -> list[tuple[str, int, int]]:
    """(month, first index, end index) of each local calendar month in the series."""
    bounds: list[tuple[str, int, int]] = []
    current = None
    first = 0
    # Months change only on a local midnight: test each hour boundary, then the minutes.
    for index in range(0, count, 60):
        month = month_of(start_minute + index, tz)
        if month != current:
            exact = index
            if current is not None:
                exact = next(
                    i
                    for i in range(index - 60, index + 1)
                    if month_of(start_minute + i, tz) == month
                )
                bounds.append((current, first, exact))
            current, first = month, exact
    if current is not None:
        bounds.append((current, first, count))
    return bounds


def simulate_month(
    controller: MinuteController,
    load_kw: FloatArray,
    start_minute: int,
    first: int,
    end: int,
    battery: Battery | None,
    start_soc_pct: float,
    step_minutes: int,
    month: str,
    intervals: list[IntervalRecord] | None = None,
) -> MonthResult:
    """Run ``controller`` over ``load_kw[first:end]``; the battery starts at ``start_soc_pct``.

    ``intervals``, when given, receives every closed interval's record (for the self-tuning,
    which scores the days of a window).
    """
    energy = battery.kwh(start_soc_pct) if battery else 0.0
    minute_h = 1.0 / 60.0
    paid: float | None = None
    interval: list[float] = []
    throughput = 0.0
    interval_throughput = 0.0
    violations = 0
    last_battery = 0.0
    state = ReplayState(0, 0, step_minutes, load_kw, interval, None, start_soc_pct, 0.0)
    for index in range(first, end):
        minute = start_minute + index
        if minute % step_minutes == 0 and interval:
            average = sum(interval) / len(interval)
            paid = average if paid is None else max(paid, average)
            if intervals is not None:
                opened = minute - len(interval)
                intervals.append(IntervalRecord(opened, average, throughput - interval_throughput))
                interval_throughput = throughput
            interval.clear()
        load = float(load_kw[index])
        if math.isnan(load):
            load = 0.0
        command = 0.0
        if battery is not None:
            state.minute, state.index = minute, index
            state.paid_peak_kw = paid
            state.soc_pct = battery.pct(energy)
            state.last_battery_kw = last_battery
            command = controller.setpoint(state)
            if not math.isfinite(command):
                command = 0.0
        actual = 0.0
        if battery is not None and command != 0.0:
            if command > 0:
                room = max(0.0, battery.max_kwh - energy) / battery.efficiency / minute_h
                actual = min(command, battery.charge_kw, room)
            else:
                available = max(0.0, energy - battery.min_kwh) * battery.efficiency / minute_h
                actual = -min(-command, battery.discharge_kw, available, max(load, 0.0))
            if actual > 0:
                energy += actual * battery.efficiency * minute_h
            else:
                energy += actual / battery.efficiency * minute_h
            throughput += abs(actual) * minute_h
            if (
                energy < battery.min_kwh - EPS
                or energy > battery.max_kwh + EPS
                or actual > battery.charge_kw + EPS
                or -actual > battery.discharge_kw + EPS
            ):
                violations += 1
        last_battery = actual
        interval.append(load + actual)
    if interval:
        average = sum(interval) / len(interval)
        paid = average if paid is None else max(paid, average)
        if intervals is not None:
            opened = start_minute + end - len(interval)
            intervals.append(IntervalRecord(opened, average, throughput - interval_throughput))
    solve = list(getattr(controller, "solve_ms", []))
    return MonthResult(controller.name, month, paid or 0.0, throughput, violations, solve)


class NoBattery:
    """The building as metered: no battery."""

    name = "no-battery"

    def setpoint(self, state: ReplayState) -> float:
        """Nothing."""
        return 0.0


class Threshold:
    """Discharge above a fixed kW, recharge below it minus ``recharge_gap_kw`` (minute level)."""

    def __init__(self, threshold_kw: float, battery: Battery, recharge_gap_kw: float = 2.0) -> None:
        self.name = f"threshold-{threshold_kw:g}"
        self._threshold = threshold_kw
        self._battery = battery
        self._gap = recharge_gap_kw

    def setpoint(self, state: ReplayState) -> float:
        """Act on the load of the minute before (what the meter showed)."""
        if state.index == 0:
            return 0.0
        load = float(state.load_kw[state.index - 1])
        if load > self._threshold:
            return -min(load - self._threshold, self._battery.discharge_kw)
        if load < self._threshold - self._gap:
            return min(self._threshold - self._gap - load, self._battery.charge_kw)
        return 0.0


DayAheadFn = Callable[[MinuteHistory, datetime], DayAheadForecast | None]


class PlannerController:
    """The service's dispatch controller, fed the day-ahead of a forecaster on the load so far."""

    def __init__(
        self,
        name: str,
        controller: DispatchController,
        day_ahead: DayAheadFn,
        history_minutes: int,
        start_minute: int,
        tz: ZoneInfo,
        target_kw: float | None = None,
        refresh_every_minute: bool = False,
        calendar: SiteCalendar | None = None,
    ) -> None:
        self.name = name
        # The site calendar the day-ahead forecasts read (None: plain weekdays).
        self._calendar = calendar
        # A day-ahead is made at each interval's start, as the service's is; a perfect forecast
        # is made every minute (its interval in progress is the rest of that interval).
        self._refresh_every_minute = refresh_every_minute
        self._controller = controller
        self._day_ahead = day_ahead
        self._history_minutes = history_minutes
        self._start_minute = start_minute
        self._target = target_kw
        self._forecast: DayAheadForecast | None = None
        self._forecast_at: int | None = None
        self._tz = tz

    @property
    def solve_ms(self) -> list[float]:
        """Solve times of every plan so far (ms)."""
        return self._controller.solve_ms

    def set_target(self, target_kw: float | None) -> None:
        """The level the controller defends at least (the operator target's place)."""
        self._target = target_kw

    def setpoint(self, state: ReplayState) -> float:
        """One minute of the service's controller."""
        if state.index == 0:
            return 0.0
        origin_index = state.index - 1
        step = state.step_minutes
        if (
            self._forecast is None
            or self._forecast_at is None
            or state.minute % step == 0
            or self._refresh_every_minute
        ):
            lo = max(0, origin_index - self._history_minutes + 1)
            history = MinuteHistory(
                self._start_minute + lo,
                state.load_kw[lo : origin_index + 1],
                calendar=self._calendar,
            )
            self._forecast = self._day_ahead(history, minute_start(state.minute))
            self._forecast_at = state.minute
        forecast = self._forecast
        decision = self._controller.decide(
            DispatchInputs(
                minute=state.minute,
                step_minutes=step,
                interval_grid_kw=state.interval_grid_kw,
                load_now_kw=float(state.load_kw[origin_index]),
                forecast_start_minute=forecast.start_minute if forecast else None,
                forecast_p50_kw=forecast.p50_kw if forecast else None,
                forecast_p90_kw=forecast.p90_kw if forecast else None,
                forecast_step_minutes=forecast.step_minutes if forecast else DAY_AHEAD_STEP_MINUTES,
                paid_peak_kw=state.paid_peak_kw,
                target_kw=self._target,
                soc_pct=state.soc_pct,
            )
        )
        return decision.setpoint_kw


class TrainedDayAhead:
    """The trained model's day-ahead when it has one, its P90 raised to the seasonal weeks' range
    for the plan as the service does (``with_seasonal_stress``); else the baseline's, refined
    for the next hour by the model's 60-minute forecast."""

    def __init__(self, model: Forecaster, baseline: SeasonalMeanForecaster, tz: ZoneInfo) -> None:
        self._model = model
        self._baseline = baseline
        self._tz = tz
        self.history_minutes = max(
            baseline.day_ahead_history_minutes, TrainedDayAhead.history_for(model)
        )

    @staticmethod
    def history_for(model: Forecaster) -> int:
        """Minutes of history the model's forecasts read."""
        return max(
            model.history_minutes,
            model.day_ahead_history_minutes if isinstance(model, DayAheadForecaster) else 0,
        )

    def __call__(self, history: MinuteHistory, at: datetime) -> DayAheadForecast | None:
        if isinstance(self._model, DayAheadForecaster):
            wanted = self._model.day_ahead_history_minutes
            own = self._model.day_ahead(tail(history, wanted), self._tz, at)
        else:
            own = None
        base = self._baseline.day_ahead(
            tail(history, self._baseline.day_ahead_history_minutes), self._tz, at
        )
        if own is not None:
            return with_seasonal_stress(own, base)
        if base is None:
            return None
        forecast = self._model.forecast(tail(history, self._model.history_minutes), self._tz, at)
        if forecast is None:
            return base
        p50, p90 = list(base.p50_kw), list(base.p90_kw or base.p50_kw)
        minutes = np.arange(forecast.origin_minute + 1, forecast.origin_minute + 61)
        steps = (minutes - base.start_minute) // base.step_minutes
        high = forecast.p90_kw or forecast.kw
        for step in np.unique(steps):
            mask = steps == step
            p50[int(step)] = float(np.mean(np.asarray(forecast.kw)[mask]))
            p90[int(step)] = max(p50[int(step)], float(np.mean(np.asarray(high)[mask])))
        return DayAheadForecast(
            forecaster=forecast.forecaster,
            made_at=at,
            origin_minute=base.origin_minute,
            start_minute=base.start_minute,
            step_minutes=base.step_minutes,
            p50_kw=tuple(p50),
            p10_kw=base.p10_kw,
            p90_kw=tuple(p90),
        )


def tail(history: MinuteHistory, minutes: int) -> MinuteHistory:
    """The last ``minutes`` of ``history`` (all of it when shorter)."""
    if len(history.values_kw) <= minutes:
        return history
    return MinuteHistory(
        history.end_minute - minutes + 1, history.values_kw[-minutes:], calendar=history.calendar
    )


class PerfectDayAhead:
    """A day-ahead that knows the load: the true mean of each 15-minute step over the next 24 h.

    For measuring the plan apart from the forecaster (the replay's ``perfect-forecast`` row). The
    step in progress counts only its minutes from ``made_at`` on, as a forecast made every minute
    would know them. Not causal: never for anything but that measurement.
    """

    def __init__(self, load_kw: FloatArray, start_minute: int) -> None:
        values = np.nan_to_num(np.asarray(load_kw, dtype=np.float64), nan=0.0)
        self._sums = np.concatenate([[0.0], np.cumsum(values)])
        self._start = start_minute

    def __call__(self, history: MinuteHistory, made_at: datetime) -> DayAheadForecast | None:
        """96 steps from the step that holds ``made_at``."""
        step = DAY_AHEAD_STEP_MINUTES
        origin = int(made_at.timestamp() // 60)
        first = origin - origin % step
        count = len(self._sums) - 1
        means: list[float] = []
        for k in range(24 * 60 // step):
            lo = min(max(first + k * step, origin, self._start) - self._start, count)
            hi = min(first + (k + 1) * step - self._start, count)
            if hi <= lo:
                means.append(means[-1] if means else 0.0)
                continue
            means.append(float((self._sums[hi] - self._sums[lo]) / (hi - lo)))
        values = tuple(means)
        return DayAheadForecast(
            forecaster="perfect",
            made_at=made_at,
            origin_minute=origin - 1,
            start_minute=first,
            step_minutes=step,
            p50_kw=values,
            p10_kw=values,
            p90_kw=values,
        )


def month_optimum(
    load_kw: FloatArray,
    start_minute: int,
    first: int,
    end: int,
    battery: Battery,
    start_soc_pct: float,
    step_minutes: int,
    month: str,
) -> MonthResult:
    """The perfect-foresight optimum of one month (same battery, true load)."""
    head = (-(start_minute + first)) % step_minutes
    tail = (end - first - head) % step_minutes
    segment = load_kw[first:end]
    segment = np.where(np.isnan(segment), 0.0, segment)
    # Partial intervals at the month's edges: pad with their own mean (billing counts them).
    parts = []
    if head:
        parts.append(np.full(step_minutes, segment[:head].mean()))
    body = segment[head : len(segment) - tail] if tail else segment[head:]
    parts.append(body)
    if tail:
        parts.append(np.full(step_minutes, segment[-tail:].mean()))
    minutes = np.concatenate(parts).reshape(-1, step_minutes)
    loads = minutes.mean(axis=1)
    # Minutes with a negative load (PV exporting) allow no discharge.
    max_discharge = np.clip(minutes, 0.0, battery.discharge_kw).mean(axis=1)
    result = optimum_peak(loads, max_discharge, battery, battery.kwh(start_soc_pct), step_minutes)
    return MonthResult("optimum", month, result.billed_kw, result.throughput_kwh, 0)
