"""The dispatch controller the service runs every minute (and the replay bench runs the same).

Two layers:

* the **plan** (``planner.PlanSolver``): a linear program over the next 24 h on the day-ahead
  forecast. Its planned billing peak is the cap the live layer defends; its charging keeps the
  battery ready for the next expected peak.
* the **live layer**: inside each demand interval, every minute, the battery discharges just
  enough that the interval's average grid import stays at the cap if the load stays where it is
  now (the forecast can miss a spike; the meter cannot), and charges only while the interval,
  with the load staying where it is now, stays under the peak already paid less a margin. That
  does not make charging safe from the load's next jump: on a load that cycles minute to minute
  a charge in a trough followed by a rise can still lift the interval over the paid peak (replay
  of the shared minute file, 1 August: 22.14 kW against the load's own 21.71). Charging on a
  pessimistic projection of the rest of the interval instead held 1 August lower and left
  2 August to defend a level the battery could not hold (see docs/benchmarks.md, Dispatch).

When the plan cannot be solved (or the battery's SOC is stale) the controller falls back to a safe
rule (defend the floor, no charging above it; with a stale SOC the reserve is assumed, so it does
not discharge) and says so in ``DispatchDecision.fallback``.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.dispatch.assets import Battery, EvChargers, Tariff
from core.dispatch.planner import (
    PLAN_TIME_LIMIT_S,
    PlanInfeasible,
    PlanRequest,
    PlanResult,
    PlanSolver,
)
from core.forecast.base import DAY_AHEAD_STEP_MINUTES, DayAheadForecast
from core.timegrid import minute_start

log = logging.getLogger(__name__)

# When charging, keep the rest of the interval this share of the battery's charge limit under the
# ceiling (0.5 kW for a 10 kW battery). A share, not kW, so that the same building and battery
# scaled up together dispatch the same way: with a fixed 0.5 kW, the shared minute file and its
# battery scaled 40 times got 88 / 70 % of the optimum's cut in July / August against 91 / 72 %.
CHARGE_MARGIN_SHARE = 0.05


def with_seasonal_stress(
    served: DayAheadForecast, seasonal: DayAheadForecast | None
) -> DayAheadForecast:
    """The day-ahead the plan uses: the served forecast, its P90 raised to the seasonal range.

    The plan is deterministic: it needs one pessimistic path, not a band of marginal quantiles.
    A trained model's calibrated P90 is right step by step and too narrow as a path; the range
    of the same weekday's recent weeks (the seasonal baseline's P90) is a day that happened.
    """
    if seasonal is None or seasonal is served or seasonal.p90_kw is None:
        return served
    if seasonal.step_minutes != served.step_minutes:
        return served
    offset = (served.start_minute - seasonal.start_minute) // served.step_minutes
    own = served.p90_kw if served.p90_kw is not None else served.p50_kw
    stress = []
    for step, value in enumerate(own):
        other = step + offset
        inside = 0 <= other < len(seasonal.p90_kw)
        stress.append(max(value, seasonal.p90_kw[other]) if inside else value)
    return replace(served, p90_kw=tuple(stress))


def on_intervals(
    values: npt.NDArray[np.float64],
    start_minute: int,
    step_minutes: int,
    interval_start: int,
    interval_minutes: int,
) -> npt.NDArray[np.float64]:
    """A forecast in ``step_minutes`` steps from ``start_minute``, as the mean of each demand
    interval from ``interval_start`` on (whole intervals only).

    The day-ahead comes in 15-minute steps; a 30- or 60-minute tariff plans on its own intervals
    (the mean of the steps inside each), a 5- or 10-minute one on the step each falls in. A
    forecast starting after ``interval_start`` counts its first step for the minutes before it.
    """
    minutes = np.repeat(values, max(1, step_minutes))
    offset = interval_start - start_minute
    if offset >= 0:
        minutes = minutes[offset:]
    elif len(minutes):
        minutes = np.concatenate([np.full(-offset, minutes[0]), minutes])
    count = len(minutes) // interval_minutes
    means: npt.NDArray[np.float64] = (
        minutes[: count * interval_minutes].reshape(count, interval_minutes).mean(axis=1)
    )
    return means


def plan_horizon_steps(
    forecast_steps: int, forecast_step_minutes: int, interval_minutes: int, sliding: bool
) -> int:
    """How many demand intervals every plan covers, whichever interval is in progress.

    A fresh forecast starts at its step in progress, so the intervals it covers in full from the
    interval in progress vary with where that interval starts inside the step (a 5-minute tariff
    on 15-minute steps: 288, 287, 286). The plan keeps the fewest, so its length stays the same
    from one interval to the next: the kept HiGHS model is then not rebuilt and solved cold at
    each new interval (with 5-minute intervals a cold solve took 45-300 ms here, a warm one 4).
    """
    alignment = 1 if sliding else interval_minutes
    worst_offset = forecast_step_minutes - math.gcd(alignment, forecast_step_minutes)
    return max(1, (forecast_steps * forecast_step_minutes - worst_offset) // interval_minutes)


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """How the controller plans: which forecast level it plans on, how often it re-plans."""

    # The load the plan assumes: p50 + band_weight * (p90 - p50) of the day-ahead forecast.
    band_weight: float = 1.0
    replan_every_minutes: int = 1
    charge_margin_share: float = CHARGE_MARGIN_SHARE
    # While the meter asks for a discharge (or would after a recent-sized rise), discharge at
    # least what the plan does in the current step.
    follow_plan: bool = True
    # Within-interval reserve (kW per minute still to come): the live layer aims the interval that
    # far under the cap early on, so a spike beyond the power limit late in the interval is
    # already covered; the reserve shrinks to nothing by the end of the interval, and what was
    # banked and not needed is charged back. It is the largest one-minute rise of the load over
    # the last ``bank_lookback_minutes`` (a flat load banks nothing), at most ``bank_share`` of
    # the discharge limit.
    bank_share: float = 0.7
    bank_lookback_minutes: int = 60
    # The month's peak will surely reach this share of the planned peak: the live layer keeps
    # charging under it (early in a month the peak paid so far is a night's load).
    sure_share_of_planned: float = 0.6
    # A day running hotter than its forecast: when the load has run above the P50 forecast in
    # every closed interval of the last ``level_minutes`` (an hour, so a spike does not count),
    # the smallest of those errors is added to the P50 for the rest of the horizon, fading by
    # ``level_decay`` per 15 minutes, and the plan's path is at least that. The plan then sees
    # early that the battery will not hold today's cap and spreads it over the day instead of
    # running empty in the afternoon (0: off).
    level_minutes: int = 60
    level_decay: float = 0.98
    # Apply the plan's battery power as it is, without the live layer, and plan the interval in
    # progress on the forecast alone. Only for a forecast that knows the load (the replay's
    # ``perfect-forecast`` row, which measures the plan apart from the forecaster): on the
    # seasonal forecast, following the plan alone billed July 2022 at no-battery's 34.15 kW.
    follow_plan_only: bool = False
    # See ``PlanRequest.hold_value_per_kwh_step``. The service keeps 0: its live layer does the
    # charging, and of the replay's eight month rows (four battery sizes) the value changed one,
    # for the worse (5 kW / 10 kWh, August: 23.78 -> 23.96 kW). Following the plan on the true
    # load needs it (July: 72 -> 96.5 % of the optimum's cut).
    hold_value_per_kwh_step: float = 0.0
    # A plan not solved within this many seconds is given up for the minute (the safe rule).
    plan_time_limit_s: float = PLAN_TIME_LIMIT_S


@dataclass(frozen=True, slots=True)
class DispatchInputs:
    """What the controller knows at the start of minute ``minute``."""

    minute: int  # UTC minute index the setpoint applies to
    step_minutes: int  # the demand interval length
    interval_grid_kw: Sequence[float]  # grid kW of the elapsed minutes of this interval
    load_now_kw: float  # the latest building load (grid minus battery power)
    forecast_start_minute: int | None  # first minute of the forecast's step 0
    forecast_p50_kw: Sequence[float] | None  # building load per step
    forecast_p90_kw: Sequence[float] | None
    paid_peak_kw: float | None  # the billing period's peak so far
    target_kw: float | None  # the effective operator target
    soc_pct: float | None  # None when stale or never written
    # The forecast's step; the plan's is the demand interval.
    forecast_step_minutes: int = DAY_AHEAD_STEP_MINUTES
    # A sliding demand window (the average of the last ``step_minutes``, billed at every minute):
    # ``interval_grid_kw`` then holds the ``step_minutes - 1`` minutes before this one, so the
    # minute to come closes a window, and the plan's first step is that window.
    sliding: bool = False
    # The building's mean kW over the interval's remaining minutes from the demand projection
    # (each at the larger of its forecast and the latest minute's load, the battery taken out):
    # the live layer's answer to it is ``DispatchDecision.rest_kw``, what the demand warning
    # counts. None: the latest minute's load held (the replay).
    rest_load_kw: float | None = None


@dataclass(frozen=True, slots=True)
class DispatchDecision:
    """What the BAS should do this minute, and the plan behind it."""

    minute: int
    setpoint_kw: float  # + charge / - discharge
    ev_limit_kw: float | None
    cap_kw: float  # the interval average the live layer defends
    planned_peak_kw: float
    plan: PlanResult | None
    plan_start_minute: int | None
    plan_load_p50_kw: tuple[float, ...]
    plan_load_p90_kw: tuple[float, ...]
    soc_assumed_pct: float
    fallback: str | None  # why the safe rule is in force, None when the plan is
    # The battery power (+ charge) counted from this minute to the interval's end: the live
    # layer's answer to the demand projection of the rest (the setpoint when the projection is
    # the latest minute's load), within what the SOC holds over the remaining minutes. The
    # demand warning adds it back.
    rest_kw: float = 0.0

    @property
    def reliable(self) -> bool:
        """False when the setpoint comes from the fallback rule."""
        return self.fallback is None


class DispatchController:
    """Plans every minute (or every ``replan_every_minutes``) and defends the planned peak."""

    def __init__(
        self,
        battery: Battery,
        tariff: Tariff,
        tz: ZoneInfo,
        ev: EvChargers | None = None,
        settings: DispatchSettings | None = None,
    ) -> None:
        self._battery = battery
        self._tariff = tariff
        self._tz = tz
        self._ev = ev
        self._settings = settings or DispatchSettings()
        self._solver = PlanSolver(battery, tariff, self._settings.plan_time_limit_s)
        self._plan_failure = "no day-ahead forecast"
        self._price_key: tuple[int, int, int] | None = None
        self._price_cache: npt.NDArray[np.float64] = np.zeros(0)
        self._plan: PlanResult | None = None
        self._plan_start: int | None = None
        self._plan_p50: tuple[float, ...] = ()
        self._plan_p90: tuple[float, ...] = ()
        self._planned_at: int | None = None
        self.solve_ms: list[float] = []
        self._error_interval: int | None = None
        self._error_sum = 0.0
        self._error_count = 0
        self._error_forecast: float | None = None
        self._errors: deque[float] = deque(maxlen=max(1, self._settings.level_minutes))
        self._recent: deque[float] = deque(maxlen=max(2, self._settings.bank_lookback_minutes + 1))
        self._recent_minute: int | None = None
        self._level_kw: float | None = None
        self._plan_forecast: str | None = None

    @property
    def battery(self) -> Battery:
        """The battery this controller dispatches."""
        return self._battery

    @property
    def tariff(self) -> Tariff:
        """The tariff that prices the plan."""
        return self._tariff

    @property
    def settings(self) -> DispatchSettings:
        """The settings in force (the self-tuning's choice once one is served)."""
        return self._settings

    @property
    def level_kw(self) -> float | None:
        """The fixed level the self-tuning's choice defends at least (None: none)."""
        return self._level_kw

    @property
    def plan_forecast(self) -> str | None:
        """The day-ahead the self-tuning's choice plans on ("baseline" or "trained"; None: the
        served forecaster's)."""
        return self._plan_forecast

    def use_settings(
        self,
        settings: DispatchSettings,
        level_kw: float | None = None,
        plan_forecast: str | None = None,
    ) -> None:
        """Serve the self-tuning's choice from the next re-plan: its settings, the level it
        defends at least (the fixed-level rule; None for the others) and the day-ahead it
        planned on (None: the served forecaster's)."""
        self._plan_forecast = plan_forecast
        if settings.plan_time_limit_s != self._settings.plan_time_limit_s:
            self._solver = PlanSolver(self._battery, self._tariff, settings.plan_time_limit_s)
        if settings.level_minutes != self._settings.level_minutes:
            self._errors = deque(self._errors, maxlen=max(1, settings.level_minutes))
        if settings.bank_lookback_minutes != self._settings.bank_lookback_minutes:
            self._recent = deque(self._recent, maxlen=max(2, settings.bank_lookback_minutes + 1))
        self._settings = settings
        self._level_kw = level_kw if level_kw is not None and math.isfinite(level_kw) else None
        self._planned_at = None  # re-plan at the next minute

    def decide(self, inputs: DispatchInputs) -> DispatchDecision:
        """The setpoint for ``inputs.minute``."""
        battery = self._battery
        floor = max(inputs.paid_peak_kw or 0.0, inputs.target_kw or 0.0, self._level_kw or 0.0)
        fallback: str | None = None
        if inputs.soc_pct is None or not math.isfinite(inputs.soc_pct):
            soc_pct = battery.reserve_pct
            fallback = "battery SOC is stale: the reserve is assumed"
        else:
            soc_pct = min(max(inputs.soc_pct, 0.0), 100.0)
        energy = battery.kwh(soc_pct)
        elapsed = len(inputs.interval_grid_kw)
        elapsed_sum = float(sum(inputs.interval_grid_kw))
        # The forecast's error is followed per clock interval (with a sliding window, per block
        # of the window's length), so a one-minute window shift is not a closed interval.
        step = inputs.step_minutes
        block = inputs.minute - inputs.minute % step if inputs.sliding else inputs.minute - elapsed
        self._track_errors(block, inputs.load_now_kw)
        if math.isfinite(inputs.load_now_kw) and inputs.minute != self._recent_minute:
            # One entry per minute, however often the service takes a snapshot.
            self._recent.append(inputs.load_now_kw)
            self._recent_minute = inputs.minute
        plan = self._replan(inputs, energy, floor, elapsed, elapsed_sum)
        if plan is None:
            fallback = fallback or f"no plan: {self._plan_failure}"
            planned_peak = floor
        else:
            planned_peak = plan.planned_peak_kw
        cap = max(floor, planned_peak)
        metered = math.isfinite(inputs.load_now_kw)
        if metered and plan is not None and self._settings.follow_plan_only:
            setpoint = self._plan_setpoint(plan, energy, inputs.load_now_kw)
        elif metered:
            setpoint = self._live(
                inputs, cap, floor, energy, elapsed, elapsed_sum, plan, inputs.load_now_kw
            )
        else:
            # Without the last minute's load the live layer cannot tell charging from a new peak.
            setpoint = 0.0
            fallback = fallback or "no meter reading for the last minute: the battery holds"
        # The answer to the demand projection of the interval's rest (what the warning counts):
        # the live layer's rule on the projected load. The setpoint itself answers the latest
        # minute's load: discharging ahead of a forecast rise the meter does not show yet billed
        # August 2022 at 25.37 kW against 23.22 in the replay (62 -> 32 % of the optimum's cut).
        answer = setpoint
        rest = inputs.rest_load_kw
        if (
            metered
            and not self._settings.follow_plan_only
            and rest is not None
            and math.isfinite(rest)
            and rest != inputs.load_now_kw
        ):
            answer = self._live(inputs, cap, floor, energy, elapsed, elapsed_sum, plan, rest)
        if fallback is not None and inputs.soc_pct is None:
            setpoint = max(setpoint, 0.0)  # never discharge on a guessed SOC
            answer = max(answer, 0.0)
        ev_limit = None
        if self._ev is not None and not metered:
            ev_limit = self._ev.min_kw
        elif self._ev is not None:
            # Like battery charging, EV charging stays under the peak already paid once there is
            # one: the planned peak is a forecast, and charging up to it would make it real.
            ceiling = min(cap, floor) if floor > 0 else cap
            headroom = ceiling - inputs.load_now_kw - max(setpoint, 0.0)
            ev_limit = min(self._ev.max_kw, max(self._ev.min_kw, headroom))
        return DispatchDecision(
            rest_kw=self._rest_kw(answer, energy, inputs.step_minutes - elapsed),
            minute=inputs.minute,
            setpoint_kw=setpoint,
            ev_limit_kw=ev_limit,
            cap_kw=cap,
            planned_peak_kw=planned_peak,
            plan=plan,
            plan_start_minute=self._plan_start,
            plan_load_p50_kw=self._plan_p50,
            plan_load_p90_kw=self._plan_p90,
            soc_assumed_pct=soc_pct,
            fallback=fallback,
        )

    def _rest_kw(self, setpoint_kw: float, energy_kwh: float, remaining_minutes: int) -> float:
        """The setpoint held to the interval's end, within what the battery's energy allows."""
        battery = self._battery
        hours = max(1, remaining_minutes) / 60.0
        if setpoint_kw < 0:
            available = max(0.0, energy_kwh - battery.min_kwh) * battery.efficiency / hours
            return -min(-setpoint_kw, available)
        room = max(0.0, battery.max_kwh - energy_kwh) / battery.efficiency / hours
        return min(setpoint_kw, room)

    def _replan(
        self,
        inputs: DispatchInputs,
        energy: float,
        floor: float,
        elapsed: int,
        elapsed_sum: float,
    ) -> PlanResult | None:
        due = (
            self._planned_at is None
            or inputs.minute - self._planned_at >= self._settings.replan_every_minutes
            or elapsed == 0  # a new interval: the partial-interval terms changed
        )
        if not due:
            return self._plan
        self._planned_at = inputs.minute
        if inputs.forecast_p50_kw is None or inputs.forecast_start_minute is None:
            self._plan = None
            self._plan_failure = "no day-ahead forecast"
            return None
        step = inputs.step_minutes
        interval_start = inputs.minute - elapsed
        p50_src = inputs.forecast_p50_kw
        p90_src = inputs.forecast_p90_kw if inputs.forecast_p90_kw is not None else p50_src
        p50, p90 = (
            on_intervals(
                np.asarray(values, dtype=np.float64),
                inputs.forecast_start_minute,
                inputs.forecast_step_minutes,
                interval_start,
                step,
            )
            for values in (p50_src, p90_src)
        )
        horizon = plan_horizon_steps(
            len(p50_src), inputs.forecast_step_minutes, step, inputs.sliding
        )
        p50, p90 = p50[:horizon], p90[:horizon]
        if len(p50) == 0 or not np.all(np.isfinite(p50)):
            self._plan = None
            self._plan_failure = "the day-ahead forecast has no usable step"
            return None
        p90 = np.where(np.isfinite(p90), p90, p50)  # a step without a band plans on its P50
        if self._error_forecast is None:
            self._error_forecast = float(p50[0])
        load = p50 + self._settings.band_weight * (p90 - p50)
        quarters = np.arange(len(load)) * step / 15.0  # steps counted in quarter hours
        level = self._sustained_error_kw(step)
        if level > 0:
            fade = self._settings.level_decay**quarters
            lifted = p50 + level * fade
            load = np.maximum(load, lifted)
        # Step 0: the measured load now is better than the forecast for the rest of this interval.
        if elapsed and not self._settings.follow_plan_only:
            load[0] = max(load[0], inputs.load_now_kw)
        max_discharge = np.minimum(self._battery.discharge_kw, np.maximum(p50, 0.0) * 0.9)
        prices = self._prices(interval_start, step, len(load))
        request = PlanRequest(
            load_kw=load,
            max_discharge_kw=max_discharge,
            energy_price=prices,
            step_minutes=step,
            elapsed_minutes=elapsed,
            elapsed_grid_kwmin=elapsed_sum,
            start_kwh=energy,
            floor_kw=floor,
            terminal_value_per_kwh=float(prices.max()) * 1.5 + self._tariff.throughput_cost_per_kwh,
            hold_value_per_kwh_step=self._settings.hold_value_per_kwh_step,
        )
        try:
            plan = self._solver.solve(request)
        except PlanInfeasible as exc:
            log.warning("dispatch plan not solved (%s); the safe rule applies", exc)
            self._plan = None
            self._plan_failure = f"the solver gave no plan ({exc})"
            return None
        self.solve_ms.append(plan.solve_ms)
        self._plan = plan
        self._plan_start = interval_start
        self._plan_p50 = tuple(float(v) for v in p50)
        self._plan_p90 = tuple(float(v) for v in p90)
        return plan

    def _prices(self, interval_start: int, step: int, count: int) -> npt.NDArray[np.float64]:
        """The energy price of each step, by its local hour; the same for every re-plan within
        one interval, so worked out once per interval."""
        key = (interval_start, step, count)
        if self._price_key != key:
            hours = [
                minute_start(interval_start + k * step).astimezone(self._tz).hour
                for k in range(count)
            ]
            self._price_cache = np.array([self._tariff.energy_price(h) for h in hours])
            self._price_cache.setflags(write=False)  # shared by every plan of the interval
            self._price_key = key
        return self._price_cache

    def _track_errors(self, interval_start: int, load_now_kw: float) -> None:
        """Follow how far the load of each closed interval ran above its P50 forecast.

        ``load_now_kw`` is the load of the minute before ``decide``'s minute, so the minutes seen
        while an interval runs are its own; when the next interval starts the error is known.
        """
        current = self._error_interval
        if current is not None and current != interval_start:
            forecast = self._error_forecast
            if self._error_count and forecast is not None:
                self._errors.append(self._error_sum / self._error_count - forecast)
            else:
                # An interval without a measured minute or a forecast breaks a hot day's run.
                self._errors.clear()
            self._error_sum, self._error_count, self._error_forecast = 0.0, 0, None
        if current != interval_start:
            self._error_interval = interval_start
        elif math.isfinite(load_now_kw):
            self._error_sum += load_now_kw
            self._error_count += 1

    def _sustained_error_kw(self, step_minutes: int) -> float:
        """How far the load has run above its P50 forecast in every closed interval of the last
        ``level_minutes``; 0 unless all of them ran above it."""
        if self._settings.level_minutes <= 0:
            return 0.0
        wanted = max(1, self._settings.level_minutes // step_minutes)
        if len(self._errors) < wanted:
            return 0.0
        return max(0.0, min(list(self._errors)[-wanted:]))

    def _bank_kw(self) -> float:
        """The within-interval reserve per remaining minute: the load's recent largest rise."""
        if len(self._recent) < 2:
            return 0.0
        recent = np.fromiter(self._recent, dtype=np.float64)
        rise = float(np.max(np.diff(recent)))
        return min(max(rise, 0.0), self._settings.bank_share * self._battery.discharge_kw)

    def _plan_setpoint(self, plan: PlanResult, energy: float, load_kw: float) -> float:
        """The plan's battery power for the interval in progress, within what the battery holds
        (and never more discharge than the load)."""
        battery = self._battery
        minute_h = 1.0 / 60.0
        available = max(0.0, energy - battery.min_kwh) * battery.efficiency / minute_h
        room = max(0.0, battery.max_kwh - energy) / battery.efficiency / minute_h
        wanted = float(plan.battery_kw[0])
        if wanted >= 0:
            return min(wanted, battery.charge_kw, room)
        return -min(-wanted, battery.discharge_kw, available, max(load_kw, 0.0))

    def _live(
        self,
        inputs: DispatchInputs,
        cap: float,
        floor: float,
        energy: float,
        elapsed: int,
        elapsed_sum: float,
        plan: PlanResult | None,
        load_kw: float,
    ) -> float:
        """Discharge just enough to hold the interval at ``cap``; charge only under the floor.

        Charging is limited by the peak already paid (or the target), not by the planned peak:
        the planned peak is a forecast, and charging up to it would make it real. The rest of the
        interval is taken at ``load_kw``: the latest minute's load for the setpoint, the demand
        projection's rest (``inputs.rest_load_kw``, each minute at the larger of its forecast
        and the latest minute's load, ``core.demand.remaining_minute_kw``) for the answer that
        ``kw-to-shed``, the exceedance chance and the permits count.
        """
        battery = self._battery
        step = inputs.step_minutes
        remaining = max(1, step - elapsed)
        rise = self._bank_kw()  # the load's recent largest one-minute rise (capped)
        # kW-minutes kept in hand for the minutes still to come after this one.
        reserve = rise * (remaining - 1)
        allowance = (step * cap - reserve - elapsed_sum) / remaining  # average grid from now on
        load = load_kw
        minute_h = 1.0 / 60.0
        available = max(0.0, energy - battery.min_kwh) * battery.efficiency / minute_h
        room = max(0.0, battery.max_kwh - energy) / battery.efficiency / minute_h
        need = load - allowance
        if plan is not None and self._settings.follow_plan and need + rise > 0:
            # While the meter asks for a discharge, or would after a rise like the recent ones,
            # discharge at least the plan's rate for this interval: the plan spreads the
            # interval's discharge over it, and starting early leaves power for a spike later in
            # the interval (the limit binds on spikes). On a steady load under the cap the plan's
            # discharge is a forecast the meter contradicts: following it anyway spent energy on
            # a load that did not come and charged it back later in the interval at a 15 %
            # round-trip loss, interval after interval (replay of the hourly file: 56 -> 71 % of
            # the optimum's cut over eleven months, throughput -23 %).
            need = max(need, -float(plan.battery_kw[0]))
        if need > 0:
            # Never more than the building draws now (the battery does not export).
            discharge = min(need, battery.discharge_kw, available, max(inputs.load_now_kw, 0.0))
            return -discharge
        ceiling = min(cap, floor)
        if plan is not None:
            ceiling = max(ceiling, self._settings.sure_share_of_planned * plan.planned_peak_kw)
        charge_allowance = (step * ceiling - elapsed_sum) / remaining
        margin = self._settings.charge_margin_share * battery.charge_kw
        headroom = charge_allowance - load - margin
        if headroom <= 0:
            return 0.0
        wanted = battery.charge_kw
        if plan is not None and plan.battery_kw[0] < 0:
            wanted = 0.0  # the plan discharges now (a cheaper or peak step): do not charge
        return min(headroom, wanted, room)
