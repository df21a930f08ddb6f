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

from core.demand.accounting import (
    BillingPeriod,
    ClosedInterval,
    billing_period,
    interval_average_kw,
    interval_start_minute,
    utc_offset_minutes,
)
from core.demand.config import (
    NEXT_HOUR_MINUTES,
    DemandConfig,
    OptionalInputs,
    ProjectionMethod,
    Quality,
    Reading,
    WindowMode,
)
from core.demand.decisions import DemandDecisions
from core.demand.loads import (
    base_load_kw,
    battery_power_in_force,
    gross_load_kw,
    value_if_fresh,
)
from core.demand.projection import (
    P10_P90_WIDTH_IN_SIGMAS,
    IntervalStatus,
    allowance_kw,
    elapsed_minutes_kw,
    probability_of_exceedance,
    projected_interval_kw,
    remaining_minute_kw,
    sigma_from_band_kw,
)
from core.demand.tracker import STATE_VERSION, DemandOutlook, DemandSnapshot, DemandTracker

__all__ = [
    "NEXT_HOUR_MINUTES",
    "P10_P90_WIDTH_IN_SIGMAS",
    "STATE_VERSION",
    "BillingPeriod",
    "ClosedInterval",
    "DemandConfig",
    "DemandDecisions",
    "DemandOutlook",
    "DemandSnapshot",
    "DemandTracker",
    "IntervalStatus",
    "OptionalInputs",
    "ProjectionMethod",
    "Quality",
    "Reading",
    "WindowMode",
    "allowance_kw",
    "base_load_kw",
    "battery_power_in_force",
    "billing_period",
    "elapsed_minutes_kw",
    "gross_load_kw",
    "interval_average_kw",
    "interval_start_minute",
    "probability_of_exceedance",
    "projected_interval_kw",
    "remaining_minute_kw",
    "sigma_from_band_kw",
    "utc_offset_minutes",
    "value_if_fresh",
]
