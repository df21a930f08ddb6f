"""The load definitions (net, base, gross) and the freshness rule of the optional inputs."""

from __future__ import annotations

import math
from datetime import datetime

from core.demand.config import Reading

# A reading timestamped this far in the future is a clock problem, not a fresh value.
_FUTURE_TOLERANCE_S = 60.0


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


def fresh_value(
    reading: Reading | None,
    name: str,
    now: datetime,
    notes: list[str],
    expected: bool,
    max_age_s: float,
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
    if age_s > max_age_s:
        notes.append(f"{name} stale ({age_s:.0f} s old): ignored")
        return None
    return reading.value
