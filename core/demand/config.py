"""Demand settings and optional inputs: the tracker's configuration, validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

NEXT_HOUR_MINUTES = 60


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


def check_fixed_length(length_minutes: int) -> None:
    """Raise ValueError unless a fixed interval of this length divides the hour."""
    if length_minutes < 1 or 60 % length_minutes != 0:
        raise ValueError("a fixed demand interval must divide 60 minutes (e.g. 5, 15, 30)")


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
            check_fixed_length(self.interval_minutes)
        elif not 1 <= self.interval_minutes <= NEXT_HOUR_MINUTES:
            raise ValueError("a sliding demand window must be 1..60 minutes")
        if not 1 <= self.billing_cycle_day <= 28:
            raise ValueError("billing_cycle_day must be 1..28")
        if self.target_kw is not None:
            check_kw("target_kw", self.target_kw)
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


def check_kw(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is a finite kW >= 0."""
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
