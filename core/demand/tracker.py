"""Demand-charge domain: interval demand, the billing-period peak, projections and load decisions.

Pure logic: standard library only (plus the ``Forecast`` dataclass), no I/O, no clock reads.
Every time comes in as an argument; minute indices are UTC minutes since the epoch
(``core.timegrid``). Billing periods and fixed demand intervals follow the site's local clock.

Loads (all kW, positive = drawn from the grid):

* **net load** is the utility meter reading. It already contains PV (which lowers it), the
  battery (``battery_power_kw``: + charging, - discharging) and EV charging. Demand is billed on
  it, so every interval average, projection, target and peak here is net load.
* **base load** (``base_load_kw``) = meter - battery_power - ev_charging: the net load without the
  loads this module dispatches. It is the load a forecaster should learn: charging we allow
  today must not be learnt as tomorrow's building behaviour. PV is left in because nothing here
  forecasts PV separately and the meter sees it. Set ``DemandConfig.forecast_is_base_load`` when
  the forecaster is trained on it; the projection then adds the observed battery and EV power back.
* **gross load** (``gross_load_kw``) = meter + pv - battery_power - ev_charging: what the
  building itself consumes; reported only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from core.forecast.base import Forecast
from core.timegrid import SECONDS_PER_MINUTE, minute_of, minute_start

STATE_VERSION = 1
# The 10th..90th percentile width of a normal distribution is 2 * 1.2816 sigma.
P10_P90_WIDTH_IN_SIGMAS = 2.563
NEXT_HOUR_MINUTES = 60
# A reading timestamped this far in the future is a clock problem, not a fresh value.
_FUTURE_TOLERANCE_S = 60.0
_LATCHES = ("battery_discharge_request", "battery_charge_permit", "ev_charge_permit")


class WindowMode(StrEnum):
    """How demand intervals are formed."""

    FIXED = "fixed"  # consecutive clock-aligned intervals, site-local, aligned to the hour
    SLIDING = "sliding"  # the average of the last N minutes, evaluated at every minute


class Quality(StrEnum):
    """How much a decision can be trusted."""

    GOOD = "good"
    DEGRADED = "degraded"  # made with a fallback (held load, assumed input); see the notes
    UNAVAILABLE = "unavailable"  # could not be made; the safe default is returned


class ProjectionMethod(StrEnum):
    """What filled the remaining minutes of the interval projection."""

    FORECAST = "forecast"
    HELD = "held"  # latest minute's kW held for the rest of the interval
    NONE = "none"


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def base_load_kw(
    meter_kw: float, battery_power_kw: float = 0.0, ev_charging_power_kw: float = 0.0
) -> float:
    """Meter minus the dispatched loads (battery, EV): the load a forecaster should learn."""
    return meter_kw - battery_power_kw - ev_charging_power_kw


def battery_power_in_force(measured_kw: float | None, setpoint_kw: float | None) -> float | None:
    """The battery's power now (+ charging): the measurement while it is fresh, else the setpoint
    the dispatch plan gives the BAS (what the inverter was told), None when neither is known."""
    return measured_kw if measured_kw is not None else setpoint_kw


def value_if_fresh(value: float, at: datetime, now: datetime, max_age_s: float) -> float | None:
    """A BAS input's value while it is a number written within ``max_age_s``, else None (stale).

    The one freshness rule of the optional inputs (battery SOC and power, EV, PV, outdoor air):
    the snapshot's dispatch inputs, the stored minute's outdoor air and dispatched kW, and the
    inputs' published quality all apply it.
    """
    if not math.isfinite(value):
        return None
    return value if (now - at).total_seconds() <= max_age_s else None


def gross_load_kw(
    meter_kw: float,
    pv_power_kw: float,
    battery_power_kw: float = 0.0,
    ev_charging_power_kw: float = 0.0,
) -> float:
    """On-site consumption of the building itself: meter + PV - battery - EV (reporting only)."""
    return meter_kw + pv_power_kw - battery_power_kw - ev_charging_power_kw


def utc_offset_minutes(minute: int, tz: ZoneInfo) -> int:
    """The site's UTC offset in minutes during the given UTC minute."""
    offset = minute_start(minute).astimezone(tz).utcoffset()
    return 0 if offset is None else int(offset.total_seconds()) // SECONDS_PER_MINUTE


def interval_start_minute(minute: int, length_minutes: int, tz: ZoneInfo) -> int:
    """UTC start minute of the fixed, site-local clock-aligned interval containing ``minute``.

    ``length_minutes`` must divide 60, so intervals are aligned to the local hour. Intervals are
    ``length_minutes`` of real time; across a whole-hour DST change they stay contiguous (the
    repeated autumn hour simply has its own intervals).
    """
    _check_fixed_length(length_minutes)
    local_minute = minute + utc_offset_minutes(minute, tz)
    return minute - local_minute % length_minutes


def interval_average_kw(values_kw: list[float]) -> float | None:
    """Mean of the observed minutes of an interval; gap minutes are simply absent; None if none."""
    return sum(values_kw) / len(values_kw) if values_kw else None


def elapsed_minutes_kw(window_kw: Sequence[float], held_kw: float | None) -> list[float] | None:
    """Each elapsed minute of an interval, one entry per minute of the clock (NaN: no reading).

    A gap counts at the mean of the measured minutes (as billing averages what it measured), or at
    ``held_kw`` (the latest reading) when none was measured; None when neither is known. Shared by
    the demand projection and the dispatch controller, so both count the interval's elapsed part,
    and with it its start, the same way across a gap.
    """
    measured = [kw for kw in window_kw if not math.isnan(kw)]
    if measured:
        fill = sum(measured) / len(measured)
    elif held_kw is not None and math.isfinite(held_kw):
        fill = held_kw
    else:
        return None
    return [fill if math.isnan(kw) else float(kw) for kw in window_kw]


def projected_interval_kw(
    elapsed_sum_kw_minutes: float, remaining_kw: list[float], length_minutes: int
) -> float:
    """End-of-interval average: (kW·minutes so far + expected kW of each remaining minute) / L."""
    return (elapsed_sum_kw_minutes + sum(remaining_kw)) / length_minutes


def remaining_minute_kw(expected_kw: float | None, measured_kw: float | None) -> float | None:
    """What a remaining minute of the interval in progress counts at: its expected kW, but never
    less than the measured level (the latest metered minute), so a load running above its
    forecast is projected where the meter has it, not where the forecast hoped.

    The one rule of the interval in progress: ``kw-to-shed``, the interval's exceedance chance,
    the charge permits' headroom and the battery's live layer (which holds the rest of the
    interval at the latest minute's load) all project the rest of the interval with it.
    """
    if expected_kw is None:
        return measured_kw
    if measured_kw is None or not math.isfinite(measured_kw):
        return expected_kw
    return max(expected_kw, measured_kw)


def allowance_kw(
    target_kw: float, length_minutes: int, elapsed_sum_kw_minutes: float, remaining_minutes: int
) -> float | None:
    """kW the load may average over the remaining minutes and still end at ``target_kw``.

    (target * L - kW·minutes so far) / remaining. Negative when the target is already lost
    (only exporting could save it). None when no minute remains: nothing is left to allocate.
    """
    if remaining_minutes <= 0:
        return None
    return (target_kw * length_minutes - elapsed_sum_kw_minutes) / remaining_minutes


def sigma_from_band_kw(p10_kw: float, p90_kw: float) -> float:
    """Standard deviation of a normal distribution with the given 10th and 90th percentiles."""
    return max(0.0, p90_kw - p10_kw) / P10_P90_WIDTH_IN_SIGMAS


def probability_of_exceedance(mean_kw: float, sigma_kw: float, threshold_kw: float) -> float:
    """P(X > threshold) for X ~ Normal(mean, sigma); a step function when sigma is 0."""
    if sigma_kw <= 0.0:
        return 1.0 if mean_kw > threshold_kw else 0.0
    z = (threshold_kw - mean_kw) / sigma_kw
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    """One monthly billing period [start, end) in UTC, from local midnight of the cycle day."""

    start: datetime
    end: datetime

    @property
    def start_minute(self) -> int:
        """UTC minute index of the start."""
        return minute_of(self.start)

    @property
    def end_minute(self) -> int:
        """UTC minute index of the (exclusive) end."""
        return minute_of(self.end)


def billing_period(at: datetime, tz: ZoneInfo, cycle_day: int) -> BillingPeriod:
    """The billing period containing ``at``: site-local midnight of ``cycle_day`` to the next."""
    if not 1 <= cycle_day <= 28:
        raise ValueError("billing cycle day must be 1..28")
    local = at.astimezone(tz)
    year, month = local.year, local.month
    if local.day < cycle_day:
        year, month = _add_months(year, month, -1)
    next_year, next_month = _add_months(year, month, 1)
    start = datetime(year, month, cycle_day, tzinfo=tz).astimezone(UTC)
    end = datetime(next_year, next_month, cycle_day, tzinfo=tz).astimezone(UTC)
    return BillingPeriod(start=start, end=end)


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def _check_fixed_length(length_minutes: int) -> None:
    if length_minutes < 1 or 60 % length_minutes != 0:
        raise ValueError("a fixed demand interval must divide 60 minutes (e.g. 5, 15, 30)")


# ---------------------------------------------------------------------------------------------
# Configuration and inputs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemandConfig:
    """Settings of the demand tracker; validated on construction."""

    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    interval_minutes: int = 15
    window: WindowMode = WindowMode.FIXED
    billing_cycle_day: int = 1
    target_kw: float | None = None
    # "Never chase a peak already paid for": the effective target is max(target, period peak).
    ratchet_to_period_peak: bool = True
    # An interval with fewer observed minutes than this is recorded but cannot set the peak.
    peak_min_coverage_pct: float = 50.0
    deadband_kw: float = 5.0
    min_on_minutes: int = 5
    min_off_minutes: int = 5
    meter_max_age_minutes: int = 5
    forecast_max_age_minutes: int = 5
    forecast_is_base_load: bool = False
    input_max_age_s: float = 300.0
    chiller_rated_kw: float | None = None
    chiller_min_pct: float = 40.0
    chiller_max_step_down_pct: float = 20.0
    chiller_step_up_pct: float = 10.0
    chiller_hold_minutes: int = 5
    has_battery: bool = False
    battery_reserve_pct: float = 20.0
    battery_charge_kw: float = 0.0
    has_ev: bool = False
    ev_charge_kw: float = 0.0

    def __post_init__(self) -> None:
        if self.window is WindowMode.FIXED:
            _check_fixed_length(self.interval_minutes)
        elif not 1 <= self.interval_minutes <= NEXT_HOUR_MINUTES:
            raise ValueError("a sliding demand window must be 1..60 minutes")
        if not 1 <= self.billing_cycle_day <= 28:
            raise ValueError("billing_cycle_day must be 1..28")
        if self.target_kw is not None:
            _check_kw("target_kw", self.target_kw)
        if self.chiller_rated_kw is not None and not self.chiller_rated_kw > 0:
            raise ValueError("chiller_rated_kw must be > 0")
        if not 0.0 <= self.chiller_min_pct <= 100.0:
            raise ValueError("chiller_min_pct must be 0..100")
        if not 0.0 <= self.battery_reserve_pct <= 100.0:
            raise ValueError("battery_reserve_pct must be 0..100")
        if not 0.0 <= self.peak_min_coverage_pct <= 100.0:
            raise ValueError("peak_min_coverage_pct must be 0..100")
        non_negative = {
            "deadband_kw": self.deadband_kw,
            "min_on_minutes": self.min_on_minutes,
            "min_off_minutes": self.min_off_minutes,
            "meter_max_age_minutes": self.meter_max_age_minutes,
            "forecast_max_age_minutes": self.forecast_max_age_minutes,
            "input_max_age_s": self.input_max_age_s,
            "chiller_max_step_down_pct": self.chiller_max_step_down_pct,
            "chiller_step_up_pct": self.chiller_step_up_pct,
            "chiller_hold_minutes": self.chiller_hold_minutes,
            "battery_charge_kw": self.battery_charge_kw,
            "ev_charge_kw": self.ev_charge_kw,
        }
        for name, value in non_negative.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0")


def _check_kw(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number of kW >= 0")


@dataclass(frozen=True, slots=True)
class Reading:
    """One optional measurement and when it was taken (timezone-aware)."""

    value: float
    at: datetime


@dataclass(frozen=True, slots=True)
class OptionalInputs:
    """Measurements that may be missing or stale; each degrades the decisions that need it."""

    pv_power_kw: Reading | None = None
    battery_soc_pct: Reading | None = None
    battery_power_kw: Reading | None = None  # + charging, - discharging
    ev_charging_power_kw: Reading | None = None


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClosedInterval:
    """One finished demand interval, for the history table."""

    start_minute: int
    length_minutes: int
    average_kw: float
    observed_minutes: int
    complete: bool  # every minute of the interval was observed
    period_start_minute: int
    counted_for_peak: bool

    @property
    def start(self) -> datetime:
        """UTC start of the interval."""
        return minute_start(self.start_minute)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "start": self.start.isoformat(),
            "start_minute": self.start_minute,
            "length_minutes": self.length_minutes,
            "average_kw": self.average_kw,
            "observed_minutes": self.observed_minutes,
            "complete": self.complete,
            "period_start": minute_start(self.period_start_minute).isoformat(),
            "counted_for_peak": self.counted_for_peak,
        }


@dataclass(frozen=True, slots=True)
class IntervalStatus:
    """The demand interval in progress: so far, projected and allowed."""

    start_minute: int
    length_minutes: int
    elapsed_minutes: int
    observed_minutes: int
    remaining_minutes: int
    average_so_far_kw: float | None
    projected_kw: float | None
    projection: ProjectionMethod
    allowance_kw: float | None

    @property
    def start(self) -> datetime:
        """UTC start of the interval."""
        return minute_start(self.start_minute)


@dataclass(frozen=True, slots=True)
class DemandDecisions:
    """Recommendations for the building, each with its quality (keyed by field name).

    * ``kw_to_shed``: max(0, projected interval average - effective target), in interval-average
      kW. Keeping the interval at target needs the load lower by kw_to_shed * L / remaining over
      the remaining minutes (``IntervalStatus.allowance_kw`` is that load limit).
    * ``chiller_capacity_limit_pct``: 100 while nothing needs shedding. While kw_to_shed > 0 it
      steps down by 100 * kw_to_shed / chiller_rated_kw (at most ``chiller_max_step_down_pct``,
      never below ``chiller_min_pct``); when the projection is at least ``deadband_kw`` under
      the target (or the projection is unavailable) it steps up by ``chiller_step_up_pct``;
      otherwise it holds. At most one step per ``chiller_hold_minutes``.
    * ``charge_headroom_kw``: over every demand window that ends within the next hour and the
      forecast horizon (the current one included), the kW that could be added to each of the
      window's future minutes with its average still at the effective target:
      (target * L - known kW·min - sum of future P90 (point forecast without a band)) / future
      minutes; the smallest of them. None without a usable forecast.
    * ``ev_charge_permit``: granted when headroom - (ev_charge_kw - present EV power) >=
      ``deadband_kw``, withdrawn when it is < 0 (present power unknown: taken as 0).
    * ``battery_charge_permit``: the same with ``battery_charge_kw`` and the present charging
      power, on the headroom left after a granted EV permit's extra power (EV first); never
      together with a discharge request.
    * ``battery_discharge_request``: requested when the projection exceeds the effective target
      and SOC > ``battery_reserve_pct``; withdrawn when the projection, with the battery's
      present discharge put back on the remaining minutes, is below target - ``deadband_kw``;
      dropped at once (ignoring the minimum on time) when SOC reaches the reserve or is unknown.

    The three booleans keep ``min_on_minutes`` / ``min_off_minutes`` between changes.
    """

    kw_to_shed: float
    chiller_capacity_limit_pct: float
    battery_charge_permit: bool
    ev_charge_permit: bool
    battery_discharge_request: bool
    charge_headroom_kw: float | None
    quality: Mapping[str, Quality]


@dataclass(frozen=True, slots=True)
class DemandSnapshot:
    """Everything ``evaluate`` worked out for one moment.

    ``p_exceed_interval`` / ``p_exceed_next_hour``: the chance that the current window, and any
    window ending within the next hour, averages above the effective target. Each forecast
    minute is Normal(kw, (p90 - p10) / 2.563); step errors are assumed perfectly correlated
    (conservative), so a window's sigma is the sum of its future steps' sigmas / L, elapsed
    minutes carry none, and P(any window) is the largest single-window P. None without a band.
    """

    at: datetime
    minute: int
    interval: IntervalStatus
    period: BillingPeriod
    period_peak_kw: float | None
    period_peak_start_minute: int | None
    target_kw: float | None
    effective_target_kw: float | None
    next_hour_peak_kw: float | None
    next_hour_peak_start_minute: int | None
    p_exceed_interval: float | None
    p_exceed_next_hour: float | None
    gross_load_kw: float | None
    decisions: DemandDecisions
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for REST."""

        def iso(minute: int | None) -> str | None:
            return None if minute is None else minute_start(minute).isoformat()

        interval = self.interval
        decisions = self.decisions
        return {
            "at": self.at.astimezone(UTC).isoformat(),
            "interval": {
                "start": interval.start.isoformat(),
                "length_minutes": interval.length_minutes,
                "elapsed_minutes": interval.elapsed_minutes,
                "observed_minutes": interval.observed_minutes,
                "remaining_minutes": interval.remaining_minutes,
                "average_so_far_kw": interval.average_so_far_kw,
                "projected_kw": interval.projected_kw,
                "projection": interval.projection.value,
                "allowance_kw": interval.allowance_kw,
            },
            "period": {"start": self.period.start.isoformat(), "end": self.period.end.isoformat()},
            "period_peak_kw": self.period_peak_kw,
            "period_peak_start": iso(self.period_peak_start_minute),
            "target_kw": self.target_kw,
            "effective_target_kw": self.effective_target_kw,
            "next_hour_peak_kw": self.next_hour_peak_kw,
            "next_hour_peak_start": iso(self.next_hour_peak_start_minute),
            "p_exceed_interval": self.p_exceed_interval,
            "p_exceed_next_hour": self.p_exceed_next_hour,
            "gross_load_kw": self.gross_load_kw,
            "decisions": {
                "kw_to_shed": decisions.kw_to_shed,
                "chiller_capacity_limit_pct": decisions.chiller_capacity_limit_pct,
                "battery_charge_permit": decisions.battery_charge_permit,
                "ev_charge_permit": decisions.ev_charge_permit,
                "battery_discharge_request": decisions.battery_discharge_request,
                "charge_headroom_kw": decisions.charge_headroom_kw,
                "quality": {k: v.value for k, v in decisions.quality.items()},
            },
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------
# Tracker
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Latch:
    """A boolean with minimum on and off times (anti short-cycling)."""

    on: bool = False
    since_minute: int | None = None  # when it last changed; None: may change at once

    def update(self, minute: int, turn_on: bool, turn_off: bool, min_on: int, min_off: int) -> bool:
        held = None if self.since_minute is None else minute - self.since_minute
        if self.on and turn_off and (held is None or held >= min_on):
            self.on, self.since_minute = False, minute
        elif not self.on and turn_on and not turn_off and (held is None or held >= min_off):
            self.on, self.since_minute = True, minute
        return self.on

    def force_off(self, minute: int) -> None:
        if self.on:
            self.on, self.since_minute = False, minute


@dataclass(frozen=True, slots=True)
class _Window:
    """One demand window seen from now: its known part and the forecast of its future part."""

    start_minute: int
    mean_kw: float
    sigma_kw: float | None
    headroom_kw: float | None  # kW that may be added to each future minute, staying at target


@dataclass(frozen=True, slots=True)
class _Step:
    mean_kw: float
    sigma_kw: float | None
    upper_kw: float  # P90 when a band exists, else the point forecast


class DemandTracker:
    """Tracks interval demand and the billing-period peak from minute means; makes decisions.

    Feed ``observe_minute`` every completed minute mean of the net (meter) load in time order,
    call ``evaluate`` as often as wanted (the service: every 60 s), persist ``to_state``.
    """

    def __init__(self, config: DemandConfig) -> None:
        self._config = config
        self._target_kw = config.target_kw
        self._target_from_operator = False
        self._minutes_kw: dict[int, float] = {}  # observed minutes of the last L minutes
        self._open_start: int | None = None  # fixed mode: the interval being filled
        self._last_minute: int | None = None
        self._last_kw: float | None = None
        self._period_start_minute: int | None = None
        self._peak_kw: float | None = None
        self._peak_start_minute: int | None = None
        self._latches = {name: _Latch() for name in _LATCHES}
        self._chiller_pct = 100.0
        self._chiller_changed_minute: int | None = None

    @property
    def config(self) -> DemandConfig:
        """The settings this tracker runs with."""
        return self._config

    @property
    def target_kw(self) -> float | None:
        """The configured (or operator-set) demand target, before the peak ratchet."""
        return self._target_kw

    @property
    def period_peak_kw(self) -> float | None:
        """Highest counted interval average of the tracked billing period so far."""
        return self._peak_kw

    @property
    def period_peak_start_minute(self) -> int | None:
        """UTC start minute of the interval that set the period peak."""
        return self._peak_start_minute

    def set_target(self, kw: float | None) -> None:
        """Set the demand target (kW) from the operator; None removes it. Persisted in state."""
        if kw is not None:
            _check_kw("target", kw)
        self._target_kw = kw
        self._target_from_operator = True

    # -- observations --------------------------------------------------------------------------

    def observe_minute(self, minute: int, kw: float) -> list[ClosedInterval]:
        """Add one completed minute mean of the meter (kW); return the intervals it closed.

        Minutes must come in increasing order; a repeated or older minute, or a non-finite kW, is
        ignored. A missing minute is a gap: it does not count toward the interval average, the
        interval is marked incomplete, and projections treat it as having been at the average of
        the observed minutes. Fixed mode closes an interval on its last minute, or on the first
        minute seen after it (or ``close_due``) when its last minute is missing. Sliding mode
        closes the window ending at each observed minute.
        """
        if not math.isfinite(kw) or (self._last_minute is not None and minute <= self._last_minute):
            return []
        cfg = self._config
        length = cfg.interval_minutes
        closed: list[ClosedInterval] = []
        if cfg.window is WindowMode.FIXED:
            start = interval_start_minute(minute, length, cfg.timezone)
            if self._open_start is not None and self._open_start != start:
                closed.extend(self._close_open_interval())
            self._record(minute, kw)
            if self._open_start is None:
                self._open_start = start
            if minute == start + length - 1:
                closed.extend(self._close_open_interval())
        else:
            self._record(minute, kw)
            window = self._close(minute - length + 1, minute)
            if window is not None:
                closed.append(window)
        return closed

    def seed_peak(self, intervals: Sequence[ClosedInterval]) -> bool:
        """Count intervals measured from stored (imported) minutes toward the period peak.

        Only intervals that count for the peak of the tracked period (or a newer one) raise it;
        returns True when the peak changed.
        """
        changed = False
        for item in intervals:
            if not item.counted_for_peak or not self._roll_period(item.period_start_minute):
                continue
            if self._peak_kw is None or item.average_kw > self._peak_kw:
                self._peak_kw, self._peak_start_minute = item.average_kw, item.start_minute
                changed = True
        return changed

    def close_due(self, now: datetime) -> list[ClosedInterval]:
        """Close a fixed interval that has ended without its last minute (meter gap)."""
        if self._open_start is None:
            return []
        if minute_of(now) >= self._open_start + self._config.interval_minutes:
            return self._close_open_interval()
        return []

    def _record(self, minute: int, kw: float) -> None:
        self._minutes_kw[minute] = kw
        oldest = minute - self._config.interval_minutes
        for old in [m for m in self._minutes_kw if m <= oldest]:
            del self._minutes_kw[old]
        self._last_minute, self._last_kw = minute, kw

    def _close_open_interval(self) -> list[ClosedInterval]:
        start = self._open_start
        self._open_start = None
        if start is None:
            return []
        closed = self._close(start, start)
        return [] if closed is None else [closed]

    def _close(self, start: int, period_minute: int) -> ClosedInterval | None:
        """Build the record of [start, start + L); ``period_minute`` picks its billing period."""
        cfg = self._config
        length = cfg.interval_minutes
        values = [kw for m, kw in self._minutes_kw.items() if start <= m < start + length]
        average = interval_average_kw(values)
        if average is None:
            return None
        period = billing_period(minute_start(period_minute), cfg.timezone, cfg.billing_cycle_day)
        is_current = self._roll_period(period.start_minute)
        covered = 100.0 * len(values) / length >= cfg.peak_min_coverage_pct
        counted = is_current and covered
        if counted and (self._peak_kw is None or average > self._peak_kw):
            self._peak_kw, self._peak_start_minute = average, start
        return ClosedInterval(
            start_minute=start,
            length_minutes=length,
            average_kw=average,
            observed_minutes=len(values),
            complete=len(values) == length,
            period_start_minute=period.start_minute,
            counted_for_peak=counted,
        )

    def _roll_period(self, period_start_minute: int) -> bool:
        """Move to a newer billing period (resetting the peak); False for an older one."""
        if self._period_start_minute is None or period_start_minute > self._period_start_minute:
            self._period_start_minute = period_start_minute
            self._peak_kw, self._peak_start_minute = None, None
            return True
        return period_start_minute == self._period_start_minute

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(
        self,
        now: datetime,
        forecast: Forecast | None,
        inputs: OptionalInputs,
        battery_setpoint_kw: float | None = None,
    ) -> DemandSnapshot:
        """Status of the interval containing ``now``, next-hour outlook, and the decisions.

        ``battery_setpoint_kw``: the battery power the dispatch plan asks for now; a base-load
        forecast adds it back when no ``battery_power_kw`` measurement is fresh.

        Updates the hysteresis state (latches, chiller limit), so call it at most a few times a
        minute; calls within one minute cannot flip a latch twice.
        """
        cfg = self._config
        length = cfg.interval_minutes
        now_minute = minute_of(now)
        notes: list[str] = []

        period = billing_period(now, cfg.timezone, cfg.billing_cycle_day)
        self._roll_period(period.start_minute)
        in_period = self._period_start_minute == period.start_minute
        peak_kw = self._peak_kw if in_period else None
        peak_start = self._peak_start_minute if in_period else None

        soc = self._fresh(inputs.battery_soc_pct, "battery_soc_pct", now, notes, cfg.has_battery)
        battery_kw = self._fresh(
            inputs.battery_power_kw, "battery_power_kw", now, notes, cfg.has_battery
        )
        ev_kw = self._fresh(
            inputs.ev_charging_power_kw, "ev_charging_power_kw", now, notes, cfg.has_ev
        )
        pv_kw = self._fresh(inputs.pv_power_kw, "pv_power_kw", now, notes, False)

        held_kw = self._held_kw(now_minute)
        if held_kw is None:
            notes.append("no recent meter minute: no held-load fallback")
        usable = self._usable_forecast(forecast, now_minute, notes)
        step = self._step_function(
            usable, battery_power_in_force(battery_kw, battery_setpoint_kw), ev_kw, notes
        )

        target = self._target_kw
        effective = target
        if cfg.ratchet_to_period_peak and peak_kw is not None:
            # Billed demand is never below zero: a period whose intervals so far all exported
            # (PV over the load) ratchets to 0, so load that still exports is never shed.
            ratchet = max(peak_kw, 0.0)
            effective = ratchet if effective is None else max(effective, ratchet)
        if effective is None:
            notes.append("no demand target and no period peak yet: no shedding decisions")

        if cfg.window is WindowMode.FIXED:
            win_start = interval_start_minute(now_minute, length, cfg.timezone)
        else:
            win_start = now_minute - length + 1
        interval = self._interval_status(win_start, now_minute, held_kw, step, effective, notes)

        windows = self._next_hour_windows(win_start, now_minute, usable, step, held_kw, effective)
        if not windows and usable is not None:
            notes.append("forecast does not cover a whole demand window: no next-hour outlook")
        has_band = usable is not None and _band_ok(usable)
        if usable is not None and not has_band:
            notes.append("forecast has no P10/P90 band: no exceedance probability")
        p_interval: float | None = None
        p_hour: float | None = None
        if has_band and effective is not None and windows:
            probs = [
                probability_of_exceedance(w.mean_kw, w.sigma_kw or 0.0, effective) for w in windows
            ]
            # With perfectly correlated errors one standard normal drives every window, so the
            # chance that any window exceeds equals the largest single-window chance.
            p_hour = max(probs)
            if windows[0].start_minute == win_start:
                p_interval = probs[0]
        peak_window = max(windows, key=lambda w: w.mean_kw) if windows else None

        decisions = self._decide(
            now_minute,
            interval,
            effective,
            windows,
            usable is not None,
            soc,
            battery_kw,
            ev_kw,
            notes,
        )

        gross: float | None = None
        if (
            pv_kw is not None
            and held_kw is not None
            and (battery_kw is not None or not cfg.has_battery)
            and (ev_kw is not None or not cfg.has_ev)
        ):
            gross = gross_load_kw(held_kw, pv_kw, battery_kw or 0.0, ev_kw or 0.0)

        return DemandSnapshot(
            at=now,
            minute=now_minute,
            interval=interval,
            period=period,
            period_peak_kw=peak_kw,
            period_peak_start_minute=peak_start,
            target_kw=target,
            effective_target_kw=effective,
            next_hour_peak_kw=None if peak_window is None else peak_window.mean_kw,
            next_hour_peak_start_minute=None if peak_window is None else peak_window.start_minute,
            p_exceed_interval=p_interval,
            p_exceed_next_hour=p_hour,
            gross_load_kw=gross,
            decisions=decisions,
            notes=tuple(notes),
        )

    def _fresh(
        self, reading: Reading | None, name: str, now: datetime, notes: list[str], expected: bool
    ) -> float | None:
        """The reading's value when present, finite and recent; otherwise None with a note."""
        if reading is None:
            if expected:
                notes.append(f"{name} missing")
            return None
        if not math.isfinite(reading.value) or reading.at.tzinfo is None:
            notes.append(f"{name} is not a number or has a naive timestamp: ignored")
            return None
        age_s = (now - reading.at).total_seconds()
        if age_s < -_FUTURE_TOLERANCE_S:
            notes.append(f"{name} timestamped in the future: ignored")
            return None
        if age_s > self._config.input_max_age_s:
            notes.append(f"{name} stale ({age_s:.0f} s old): ignored")
            return None
        return reading.value

    def _held_kw(self, now_minute: int) -> float | None:
        if self._last_minute is None or self._last_kw is None:
            return None
        if now_minute - self._last_minute - 1 > self._config.meter_max_age_minutes:
            return None
        return self._last_kw

    def _usable_forecast(
        self, forecast: Forecast | None, now_minute: int, notes: list[str]
    ) -> Forecast | None:
        if forecast is None:
            notes.append("no forecast: projection holds the latest kW")
            return None
        age_minutes = now_minute - 1 - forecast.origin_minute
        if age_minutes > self._config.forecast_max_age_minutes:
            notes.append(f"forecast stale ({age_minutes} min old): ignored")
            return None
        if not all(math.isfinite(v) for v in forecast.kw):
            notes.append("forecast has non-finite values: ignored")
            return None
        return forecast

    def _step_function(
        self,
        forecast: Forecast | None,
        battery_kw: float | None,
        ev_kw: float | None,
        notes: list[str],
    ) -> Callable[[int], _Step | None]:
        """Expected net kW of a future minute from the forecast, or None where it has none."""
        offset_kw = 0.0
        if forecast is not None and self._config.forecast_is_base_load:
            # A base-load forecast lacks the dispatched loads; assume what runs now keeps running.
            offset_kw = (battery_kw or 0.0) + (ev_kw or 0.0)
            if (self._config.has_battery and battery_kw is None) or (
                self._config.has_ev and ev_kw is None
            ):
                notes.append("base-load forecast: unknown battery/EV power taken as 0 kW")
        band = forecast is not None and _band_ok(forecast)

        def step(minute: int) -> _Step | None:
            if forecast is None:
                return None
            index = minute - forecast.origin_minute - 1
            if not 0 <= index < len(forecast.kw):
                return None
            mean = forecast.kw[index] + offset_kw
            if band and forecast.p10_kw is not None and forecast.p90_kw is not None:
                sigma = sigma_from_band_kw(forecast.p10_kw[index], forecast.p90_kw[index])
                return _Step(mean, sigma, max(mean, forecast.p90_kw[index] + offset_kw))
            return _Step(mean, None, mean)

        return step

    def _elapsed_sum(self, start: int, now_minute: int, held_kw: float | None) -> float | None:
        """kW·minutes of [start, now): observed minutes, gaps at the observed mean (else held)."""
        if now_minute <= start:
            return 0.0
        window = [self._minutes_kw.get(m, math.nan) for m in range(start, now_minute)]
        values = elapsed_minutes_kw(window, held_kw)
        return None if values is None else sum(values)

    def _interval_status(
        self,
        start: int,
        now_minute: int,
        held_kw: float | None,
        step: Callable[[int], _Step | None],
        effective_kw: float | None,
        notes: list[str],
    ) -> IntervalStatus:
        length = self._config.interval_minutes
        end = start + length
        elapsed = now_minute - start
        observed = [kw for m, kw in self._minutes_kw.items() if start <= m < now_minute]
        average = interval_average_kw(observed)
        elapsed_sum = self._elapsed_sum(start, now_minute, held_kw)
        if elapsed > 0 and not observed and elapsed_sum is not None:
            notes.append("no minute of this interval observed yet: elapsed part holds latest kW")
        remaining_kw: list[float] = []
        method = ProjectionMethod.FORECAST
        forecast_minutes = 0
        lifted = 0
        for minute in range(now_minute, end):
            forecast_step = step(minute)
            if forecast_step is not None:
                kw = remaining_minute_kw(forecast_step.mean_kw, held_kw)
                remaining_kw.append(forecast_step.mean_kw if kw is None else kw)
                if kw is not None and kw > forecast_step.mean_kw:
                    lifted += 1
                forecast_minutes += 1
            elif held_kw is not None:
                remaining_kw.append(held_kw)
                method = ProjectionMethod.HELD
            else:
                method = ProjectionMethod.NONE
                break
        if method is ProjectionMethod.HELD and forecast_minutes:
            notes.append("forecast covers only part of the interval: the rest holds latest kW")
        if lifted and held_kw is not None:
            notes.append(
                f"the load runs above the forecast: the interval's rest is projected at least "
                f"at the measured {held_kw:.2f} kW"
            )
        projected: float | None = None
        if method is not ProjectionMethod.NONE and elapsed_sum is not None:
            projected = projected_interval_kw(elapsed_sum, remaining_kw, length)
        else:
            method = ProjectionMethod.NONE
            notes.append("no projection: neither forecast nor a recent meter minute")
        return IntervalStatus(
            start_minute=start,
            length_minutes=length,
            elapsed_minutes=elapsed,
            observed_minutes=len(observed),
            remaining_minutes=end - now_minute,
            average_so_far_kw=average,
            projected_kw=projected,
            projection=method,
            allowance_kw=(
                None
                if effective_kw is None or elapsed_sum is None
                else allowance_kw(effective_kw, length, elapsed_sum, end - now_minute)
            ),
        )

    def _next_hour_windows(
        self,
        win_start: int,
        now_minute: int,
        forecast: Forecast | None,
        step: Callable[[int], _Step | None],
        held_kw: float | None,
        effective_kw: float | None,
    ) -> list[_Window]:
        """Demand windows that end within the next hour and the forecast horizon, current first."""
        if forecast is None:
            return []
        length = self._config.interval_minutes
        horizon_end = min(
            forecast.origin_minute + forecast.horizon_minutes + 1, now_minute + NEXT_HOUR_MINUTES
        )
        if self._config.window is WindowMode.FIXED:
            starts = range(win_start, horizon_end - length + 1, length)
        else:
            starts = range(win_start, horizon_end - length + 1)
        windows: list[_Window] = []
        for start in starts:
            known = self._elapsed_sum(start, min(now_minute, start + length), held_kw)
            future = [step(m) for m in range(max(start, now_minute), start + length)]
            if start == win_start:
                # The interval in progress: its rest at least at the measured level, as the
                # projection (``remaining_minute_kw``); later windows keep the forecast.
                future = [_at_least(s, held_kw) for s in future]
            if known is None or any(s is None for s in future):
                break
            steps = [s for s in future if s is not None]
            mean = (known + sum(s.mean_kw for s in steps)) / length
            sigma: float | None = None
            if steps and all(s.sigma_kw is not None for s in steps):
                # Perfectly correlated step errors (conservative): sigma of the mean is the
                # sum of the step sigmas over L, not sqrt(sum of squares) / L.
                sigma = sum(s.sigma_kw or 0.0 for s in steps) / length
            elif not steps:
                sigma = 0.0
            headroom: float | None = None
            if effective_kw is not None and steps:
                upper = sum(s.upper_kw for s in steps)
                headroom = (effective_kw * length - known - upper) / len(steps)
            windows.append(_Window(start, mean, sigma, headroom))
        return windows

    def _decide(
        self,
        now_minute: int,
        interval: IntervalStatus,
        effective_kw: float | None,
        windows: list[_Window],
        have_forecast: bool,
        soc_pct: float | None,
        battery_kw: float | None,
        ev_kw: float | None,
        notes: list[str],
    ) -> DemandDecisions:
        cfg = self._config
        quality: dict[str, Quality] = {}
        projected = interval.projected_kw
        base_quality = (
            Quality.GOOD if interval.projection is ProjectionMethod.FORECAST else Quality.DEGRADED
        )

        # kW to shed: interval-average kW above the effective target.
        if projected is None or effective_kw is None:
            kw_to_shed = 0.0
            quality["kw_to_shed"] = Quality.UNAVAILABLE
        else:
            kw_to_shed = max(0.0, projected - effective_kw)
            quality["kw_to_shed"] = base_quality

        chiller_pct = self._decide_chiller(now_minute, projected, effective_kw, kw_to_shed)
        if cfg.chiller_rated_kw is None:
            quality["chiller_capacity_limit_pct"] = Quality.UNAVAILABLE
        else:
            quality["chiller_capacity_limit_pct"] = quality["kw_to_shed"]

        # Battery discharge request.
        discharge = self._latches["battery_discharge_request"]
        if not cfg.has_battery:
            discharge.force_off(now_minute)
            quality["battery_discharge_request"] = Quality.UNAVAILABLE
        elif soc_pct is None:
            # The reserve cannot be checked: stop now, like at the reserve.
            discharge.force_off(now_minute)
            quality["battery_discharge_request"] = Quality.UNAVAILABLE
            notes.append("battery SOC unknown: no discharge request")
        elif projected is None or effective_kw is None:
            discharge.update(now_minute, False, True, cfg.min_on_minutes, cfg.min_off_minutes)
            quality["battery_discharge_request"] = Quality.UNAVAILABLE
        elif soc_pct <= cfg.battery_reserve_pct:
            # Protecting the reserve overrides the minimum on time.
            discharge.force_off(now_minute)
            quality["battery_discharge_request"] = base_quality
        else:
            # Would the interval still be over target if the battery stopped now? Its current
            # discharge would come back on the remaining minutes.
            discharging_kw = max(0.0, -(battery_kw or 0.0))
            if_stopped_kw = (
                projected + discharging_kw * interval.remaining_minutes / cfg.interval_minutes
            )
            discharge.update(
                now_minute,
                turn_on=projected > effective_kw,
                turn_off=if_stopped_kw < effective_kw - cfg.deadband_kw,
                min_on=cfg.min_on_minutes,
                min_off=cfg.min_off_minutes,
            )
            quality["battery_discharge_request"] = base_quality

        # Charge permits: the smallest headroom over the demand windows of the next hour.
        headrooms = [w.headroom_kw for w in windows if w.headroom_kw is not None]
        headroom = min(headrooms) if headrooms else None
        ev_on = self._decide_permit(
            "ev_charge_permit",
            cfg.has_ev,
            headroom,
            have_forecast,
            cfg.ev_charge_kw,
            ev_kw,
            now_minute,
            quality,
            notes,
        )
        ev_added_kw = max(0.0, cfg.ev_charge_kw - (ev_kw or 0.0)) if ev_on else 0.0
        battery_headroom = None if headroom is None else headroom - ev_added_kw
        battery_on = self._decide_permit(
            "battery_charge_permit",
            cfg.has_battery,
            battery_headroom,
            have_forecast,
            cfg.battery_charge_kw,
            max(0.0, battery_kw) if battery_kw is not None else None,
            now_minute,
            quality,
            notes,
        )
        if battery_on and discharge.on:
            self._latches["battery_charge_permit"].force_off(now_minute)
            battery_on = False

        return DemandDecisions(
            kw_to_shed=kw_to_shed,
            chiller_capacity_limit_pct=chiller_pct,
            battery_charge_permit=battery_on,
            ev_charge_permit=ev_on,
            battery_discharge_request=discharge.on,
            charge_headroom_kw=headroom,
            quality=quality,
        )

    def _decide_permit(
        self,
        name: str,
        equipped: bool,
        headroom_kw: float | None,
        have_forecast: bool,
        charge_kw: float,
        observed_kw: float | None,
        now_minute: int,
        quality: dict[str, Quality],
        notes: list[str],
    ) -> bool:
        """Permit while the headroom covers the extra charging power (deadband to grant)."""
        cfg = self._config
        latch = self._latches[name]
        if not equipped:
            latch.force_off(now_minute)
            quality[name] = Quality.UNAVAILABLE
            return False
        if headroom_kw is None:
            latch.update(now_minute, False, True, cfg.min_on_minutes, cfg.min_off_minutes)
            quality[name] = Quality.UNAVAILABLE
            if not have_forecast:
                notes.append(f"{name}: withheld without a usable forecast")
            return latch.on
        quality[name] = Quality.GOOD
        if observed_kw is None:
            # Unknown present charging: assume none is in the forecast yet, add it all.
            quality[name] = Quality.DEGRADED
            notes.append(f"{name}: present charging power unknown, assumed 0 kW")
        added_kw = max(0.0, charge_kw - (observed_kw or 0.0))
        margin_kw = headroom_kw - added_kw
        return latch.update(
            now_minute,
            turn_on=margin_kw >= cfg.deadband_kw,
            turn_off=margin_kw < 0.0,
            min_on=cfg.min_on_minutes,
            min_off=cfg.min_off_minutes,
        )

    def _decide_chiller(
        self,
        now_minute: int,
        projected_kw: float | None,
        effective_kw: float | None,
        shed_kw: float,
    ) -> float:
        """Step the chiller limit down by shed/rated, or up in steps, at most once per hold time.

        Integrating rather than proportional-from-100: the measured shed is what remains with the
        present limit already in force. The hold time lets the chiller respond before the next
        step (anti wind-up); inside the deadband the limit is held.
        """
        cfg = self._config
        if cfg.chiller_rated_kw is None:
            return 100.0
        pct = self._chiller_pct
        may_change = (
            self._chiller_changed_minute is None
            or now_minute - self._chiller_changed_minute >= cfg.chiller_hold_minutes
        )
        blind = projected_kw is None or effective_kw is None
        new_pct = pct
        if may_change and not blind and shed_kw > 0.0 and pct > cfg.chiller_min_pct:
            step_pct = min(100.0 * shed_kw / cfg.chiller_rated_kw, cfg.chiller_max_step_down_pct)
            new_pct = max(cfg.chiller_min_pct, pct - step_pct)
        elif (
            may_change
            and pct < 100.0
            and (
                blind
                or (
                    projected_kw is not None
                    and effective_kw is not None
                    and projected_kw <= effective_kw - cfg.deadband_kw
                )
            )
        ):
            # Without data, fall back toward normal operation rather than hold a curtailment.
            new_pct = min(100.0, pct + cfg.chiller_step_up_pct)
        if new_pct != pct:
            self._chiller_pct, self._chiller_changed_minute = new_pct, now_minute
        return self._chiller_pct

    # -- persistence ---------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state: enough to resume after a restart."""
        cfg = self._config
        return {
            "version": STATE_VERSION,
            "timezone": cfg.timezone.key,
            "interval_minutes": cfg.interval_minutes,
            "window": cfg.window.value,
            "billing_cycle_day": cfg.billing_cycle_day,
            "target_kw": self._target_kw,
            "target_from_operator": self._target_from_operator,
            "minutes_kw": [[m, kw] for m, kw in sorted(self._minutes_kw.items())],
            "open_start_minute": self._open_start,
            "last_minute": self._last_minute,
            "last_kw": self._last_kw,
            "period_start_minute": self._period_start_minute,
            "peak_kw": self._peak_kw,
            "peak_start_minute": self._peak_start_minute,
            "latches": {
                name: {"on": latch.on, "since_minute": latch.since_minute}
                for name, latch in self._latches.items()
            },
            "chiller_pct": self._chiller_pct,
            "chiller_changed_minute": self._chiller_changed_minute,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], config: DemandConfig) -> DemandTracker:
        """Resume from ``to_state``; raise ValueError for an unknown version or malformed state.

        A config-set target follows ``config`` (an operator-set one survives). When the interval
        length, window mode, time zone or cycle day changed, the partial interval and the period
        peak are dropped (they were measured differently); the latches are kept.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported demand state version {state.get('version')!r}")
        tracker = cls(config)
        try:
            if state["target_from_operator"]:
                tracker._target_kw = _opt_float(state["target_kw"])
                tracker._target_from_operator = True
            same_grid = (
                state["timezone"] == config.timezone.key
                and state["interval_minutes"] == config.interval_minutes
                and state["window"] == config.window.value
                and state["billing_cycle_day"] == config.billing_cycle_day
            )
            tracker._last_minute = _opt_int(state["last_minute"])
            tracker._last_kw = _opt_float(state["last_kw"])
            if same_grid:
                tracker._minutes_kw = {int(m): float(kw) for m, kw in state["minutes_kw"]}
                tracker._open_start = _opt_int(state["open_start_minute"])
                tracker._period_start_minute = _opt_int(state["period_start_minute"])
                tracker._peak_kw = _opt_float(state["peak_kw"])
                tracker._peak_start_minute = _opt_int(state["peak_start_minute"])
            for name in _LATCHES:
                saved = state["latches"][name]
                tracker._latches[name] = _Latch(bool(saved["on"]), _opt_int(saved["since_minute"]))
            tracker._chiller_pct = float(state["chiller_pct"])
            tracker._chiller_changed_minute = _opt_int(state["chiller_changed_minute"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed demand state: {exc!r}") from exc
        return tracker


def _at_least(step: _Step | None, measured_kw: float | None) -> _Step | None:
    """A forecast minute of the interval in progress under the measured-level rule."""
    if step is None:
        return None
    mean = remaining_minute_kw(step.mean_kw, measured_kw)
    if mean is None or mean <= step.mean_kw:
        return step
    return _Step(mean, step.sigma_kw, max(step.upper_kw, mean))


def _band_ok(forecast: Forecast) -> bool:
    p10, p90 = forecast.p10_kw, forecast.p90_kw
    if p10 is None or p90 is None or len(p10) != len(forecast.kw) or len(p90) != len(forecast.kw):
        return False
    return all(
        math.isfinite(a) and math.isfinite(b) and b >= a for a, b in zip(p10, p90, strict=True)
    )


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
