"""The domain objects the service settings describe: demand config, tariff, dispatch controller."""

from __future__ import annotations

import math

from core.config import Settings
from core.demand import DemandConfig, WindowMode
from core.dispatch.assets import Battery, EvChargers, Tariff
from core.dispatch.controller import DispatchController
from core.timegrid import SECONDS_PER_MINUTE


def demand_config(settings: Settings) -> DemandConfig:
    """The demand domain's configuration from the service settings."""
    return DemandConfig(
        timezone=settings.tz,
        interval_minutes=settings.demand_interval_minutes,
        window=WindowMode(settings.demand_window),
        billing_cycle_day=settings.billing_cycle_day,
        target_kw=settings.demand_target_kw,
        ratchet_to_period_peak=settings.demand_ratchet,
        deadband_kw=settings.demand_deadband_kw,
        min_on_minutes=settings.demand_min_on_minutes,
        min_off_minutes=settings.demand_min_off_minutes,
        meter_max_age_minutes=max(1, math.ceil(settings.stale_after_s / SECONDS_PER_MINUTE)),
        input_max_age_s=settings.stale_after_s,
        chiller_rated_kw=settings.chiller_rated_kw,
        chiller_min_pct=settings.chiller_min_pct,
        has_battery=settings.has_battery,
        battery_reserve_pct=settings.battery_reserve_pct,
        battery_charge_kw=settings.battery_charge_kw,
        has_ev=settings.has_ev,
        ev_charge_kw=settings.ev_charge_kw,
        # The forecasters learn the base load (the meter less what is dispatched; compute.py).
        forecast_is_base_load=True,
    )


def tariff_of(settings: Settings) -> Tariff:
    """The tariff the settings describe (demand charge, flat or time-of-use energy price)."""
    return Tariff(
        demand_charge_per_kw=settings.demand_charge_per_kw,
        energy_price_per_kwh=settings.energy_price_per_kwh,
        tou_prices=settings.tou_schedule(),
    )


def dispatch_controller(settings: Settings) -> DispatchController | None:
    """The battery/EV dispatch controller the settings describe (None without a battery)."""
    if not settings.has_battery or settings.battery_capacity_kwh is None:
        return None
    charge_kw = settings.battery_charge_kw
    battery = Battery(
        capacity_kwh=settings.battery_capacity_kwh,
        charge_kw=charge_kw,
        discharge_kw=charge_kw
        if settings.battery_discharge_kw is None
        else settings.battery_discharge_kw,
        efficiency=settings.battery_efficiency,
        reserve_pct=settings.battery_reserve_pct,
        max_pct=settings.battery_max_pct,
    )
    ev = None
    ev_max = settings.ev_max_kw if settings.ev_max_kw is not None else settings.ev_charge_kw
    if settings.has_ev and ev_max > 0:
        ev = EvChargers(max_kw=ev_max, min_kw=min(settings.ev_min_kw, ev_max))
    return DispatchController(battery, tariff_of(settings), settings.tz, ev=ev)
