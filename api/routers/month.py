"""The billing period so far: what it costs and what the battery took off the peak."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import CoreDep
from core.timegrid import minute_start

router = APIRouter(prefix="/api/v1", tags=["demand"])


class MonthIntervalOut(BaseModel):
    """One demand interval of the period."""

    start: datetime
    average_kw: float
    observed_minutes: int


class DailyPeakOut(BaseModel):
    """The highest interval of one site-local day."""

    day: str = Field(description="Site-local date, YYYY-MM-DD.")
    start: datetime = Field(description="UTC start of that day's highest interval.")
    kw: float


class MonthOut(BaseModel):
    """The current billing period from its stored minutes (imported and live)."""

    period_start: datetime
    period_end: datetime
    timezone: str = Field(description="The site IANA time zone (the dashboard shows times in it)")
    now: datetime = Field(description="The service's clock (a demo may run on file time).")
    latest_reading_at: datetime | None = Field(
        description="Start of the newest minute with a meter value, live or imported."
    )
    interval_minutes: int
    measured_minutes: int = Field(description="Minutes of the period with a meter value.")
    demand_charge_per_kw: float = Field(description="--demand-charge-per-kw ($/kW).")
    billed_peak_kw: float | None = Field(description="The period's highest counted interval.")
    billed_peak_start: datetime | None = Field(description="When that interval started (UTC).")
    demand_charge: float | None = Field(description="billed_peak_kw x demand_charge_per_kw.")
    energy_kwh: float = Field(description="Metered energy of the period so far.")
    energy_cost: float = Field(description="energy_kwh at the flat or time-of-use prices.")
    time_of_use: bool = Field(description="True when --tou-prices sets the energy prices.")
    top_intervals: list[MonthIntervalOut] = Field(description="The highest counted intervals.")
    daily_peaks: list[DailyPeakOut]
    peak_without_battery_kw: float | None = Field(
        description="The peak of the meter less the battery/EV kW the service dispatched (the "
        "building's own load); null without any dispatched minute."
    )
    battery_saving_kw: float | None = Field(
        description="peak_without_battery_kw - billed_peak_kw (negative: charging raised it)."
    )
    battery_saving: float | None = Field(description="battery_saving_kw x demand_charge_per_kw.")
    dispatched_minutes: int = Field(description="Minutes with a known dispatched kW.")
    notes: list[str]


@router.get("/demand/month", response_model=MonthOut)
async def get_month(core: CoreDep) -> MonthOut:
    """The billing period so far: demand charge, energy cost, top intervals, battery saving."""
    summary = await core.month()
    tz = core.settings.tz
    notes = []
    if summary.billed_peak_kw is None:
        notes.append("no complete demand interval in this billing period yet")
    if summary.dispatched_minutes == 0:
        notes.append("no battery or EV dispatch recorded this period: no saving to show")
    notes.append(
        "shedding by the BAS is not metered separately: its effect is already in the measured peak"
    )
    saving_kw = summary.dispatch_saving_kw
    return MonthOut(
        period_start=minute_start(summary.period_start_minute),
        period_end=minute_start(summary.period_end_minute),
        timezone=core.settings.timezone,
        now=core.now(),
        latest_reading_at=None if core.latest_minute is None else minute_start(core.latest_minute),
        interval_minutes=summary.interval_minutes,
        measured_minutes=summary.measured_minutes,
        demand_charge_per_kw=summary.demand_charge_per_kw,
        billed_peak_kw=summary.billed_peak_kw,
        billed_peak_start=None
        if summary.billed_peak_start_minute is None
        else minute_start(summary.billed_peak_start_minute),
        demand_charge=summary.demand_charge,
        energy_kwh=summary.energy_kwh,
        energy_cost=summary.energy_cost,
        time_of_use=bool(core.settings.tou_schedule()),
        top_intervals=[
            MonthIntervalOut(
                start=item.start,
                average_kw=item.average_kw,
                observed_minutes=item.observed_minutes,
            )
            for item in summary.top_intervals
        ],
        daily_peaks=[
            DailyPeakOut(
                day=minute_start(peak.day_start_minute).astimezone(tz).date().isoformat(),
                start=minute_start(peak.interval_start_minute),
                kw=peak.kw,
            )
            for peak in summary.daily_peaks
        ],
        peak_without_battery_kw=summary.peak_without_dispatch_kw
        if summary.dispatched_minutes
        else None,
        battery_saving_kw=saving_kw,
        battery_saving=summary.dispatch_saving,
        dispatched_minutes=summary.dispatched_minutes,
        notes=notes,
    )
