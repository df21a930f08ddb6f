"""Battery and EV dispatch: the plan behind the setpoints, and the day-ahead forecast it uses."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import ContextDep, CoreDep
from core.errors import NotReady
from core.timegrid import minute_start

router = APIRouter(prefix="/api/v1", tags=["dispatch"])


class PlanStepOut(BaseModel):
    """One step (demand interval) of the plan."""

    start: datetime
    load_p50_kw: float | None = Field(description="Forecast building load, median")
    load_p90_kw: float | None = Field(description="Forecast building load, 90th percentile")
    battery_kw: float = Field(description="+ charge / - discharge, step average")
    soc_pct: float = Field(description="State of charge at the end of the step")
    grid_kw: float = Field(description="Planned grid import, step average")


class DispatchPlanOut(BaseModel):
    """What the BAS should do with the battery and the EV chargers now, and why."""

    configured: bool = Field(description="False when no battery is configured (no plan)")
    solved_at: datetime | None = None
    minute: datetime | None = Field(None, description="The minute the setpoint applies to")
    setpoint_kw: float | None = Field(None, description="battery-power-setpoint: + charge")
    ev_limit_kw: float | None = Field(None, description="ev-charge-power-limit")
    cap_kw: float | None = Field(None, description="Interval average the live layer defends")
    planned_peak_kw: float | None = Field(None, description="planned-billing-peak")
    soc_pct: float | None = Field(None, description="SOC the plan started from (reserve if stale)")
    reliable: bool = False
    fallback: str | None = Field(None, description="Why the safe rule is in force")
    solve_ms: float | None = None
    steps: list[PlanStepOut] = Field(default_factory=list)


class DayAheadStepOut(BaseModel):
    """One 15-minute step of the day-ahead forecast."""

    start: datetime
    p10_kw: float | None
    p50_kw: float
    p90_kw: float | None


class DayAheadOut(BaseModel):
    """The next 24 h of the meter in clock-aligned steps, with a band."""

    forecaster: str
    made_at: datetime
    step_minutes: int
    steps: list[DayAheadStepOut]


@router.get("/dispatch/plan", response_model=DispatchPlanOut)
async def get_plan(core: CoreDep) -> DispatchPlanOut:
    """The battery and EV plan: setpoints now and each step's load, battery, SOC and grid."""
    snapshot = core.snapshot
    decision = snapshot.dispatch
    if decision is None:
        return DispatchPlanOut(configured=core.settings.battery_capacity_kwh is not None)
    battery = core.dispatch_battery
    steps: list[PlanStepOut] = []
    plan = decision.plan
    if plan is not None and decision.plan_start_minute is not None and battery is not None:
        step_minutes = core.settings.demand_interval_minutes
        for k in range(len(plan.battery_kw)):
            steps.append(
                PlanStepOut(
                    start=minute_start(decision.plan_start_minute + k * step_minutes),
                    load_p50_kw=_at(decision.plan_load_p50_kw, k),
                    load_p90_kw=_at(decision.plan_load_p90_kw, k),
                    battery_kw=float(plan.battery_kw[k]),
                    soc_pct=battery.pct(float(plan.soc_kwh[k])),
                    grid_kw=float(plan.grid_kw[k]),
                )
            )
    return DispatchPlanOut(
        configured=True,
        solved_at=snapshot.computed_at,
        minute=minute_start(decision.minute),
        setpoint_kw=decision.setpoint_kw,
        ev_limit_kw=decision.ev_limit_kw,
        cap_kw=decision.cap_kw,
        planned_peak_kw=decision.planned_peak_kw,
        soc_pct=decision.soc_assumed_pct,
        reliable=decision.reliable,
        fallback=decision.fallback,
        solve_ms=plan.solve_ms if plan is not None else None,
        steps=steps,
    )


@router.get(
    "/forecast/day-ahead",
    response_model=DayAheadOut,
    tags=["forecast"],
    responses={503: {"description": "No day-ahead forecast yet (no fresh meter data)."}},
)
async def get_day_ahead(core: CoreDep) -> DayAheadOut:
    """The next 24 h in 15-minute steps with P10/P50/P90 (trained model, else the baseline)."""
    forecast = core.snapshot.day_ahead
    if forecast is None:
        raise NotReady("no day-ahead forecast yet: it needs fresh meter readings")
    return DayAheadOut(
        forecaster=forecast.forecaster,
        made_at=forecast.made_at,
        step_minutes=forecast.step_minutes,
        steps=[
            DayAheadStepOut(
                start=forecast.step_start(k),
                p10_kw=_at(forecast.p10_kw, k),
                p50_kw=forecast.p50_kw[k],
                p90_kw=_at(forecast.p90_kw, k),
            )
            for k in range(forecast.steps)
        ],
    )


def _at(values: tuple[float, ...] | None, index: int) -> float | None:
    if values is None or index >= len(values):
        return None
    return float(values[index])


class TuningCandidateOut(BaseModel):
    """One candidate controller's replay of the site's recent history."""

    name: str
    billed_kw: float = Field(description="Highest interval average of grid import it replayed")
    throughput_kwh: float = Field(description="kWh through the battery over the window")


class DispatchTuningOut(BaseModel):
    """The dispatch controller's self-tuning: what the nightly replay chose and why."""

    configured: bool = Field(description="False when no battery is configured")
    chosen: str = Field(description="The candidate served (baseline: the defaults)")
    level_kw: float | None = Field(None, description="The fixed level it defends (history-level)")
    night_at: datetime | None = Field(None, description="The night the replay ran for")
    history_days: float | None = Field(None, description="Days of history replayed")
    no_battery_kw: float | None = Field(None, description="The window's bill without a battery")
    saving_kw: float | None = Field(None, description="kW the choice cut off that bill")
    saving_per_month: float | None = Field(
        None, description="saving_kw at the configured demand charge (currency per month)"
    )
    candidates: list[TuningCandidateOut] = Field(default_factory=list)
    replay_running: bool = False
    note: str | None = None


@router.get("/dispatch/tuning", response_model=DispatchTuningOut)
async def dispatch_tuning(context: ContextDep) -> DispatchTuningOut:
    """The self-tuning's choice, each candidate's replayed bill and the charge it saves."""
    tuning = context.tuning
    if tuning is None or context.core.dispatch_battery is None:
        return DispatchTuningOut(configured=False, chosen="baseline")
    status = tuning.status(context.core.settings.demand_charge_per_kw)
    return DispatchTuningOut(
        configured=True,
        chosen=status.chosen,
        level_kw=status.level_kw,
        night_at=status.night_at,
        history_days=status.history_days,
        no_battery_kw=status.no_battery_kw,
        saving_kw=status.saving_kw,
        saving_per_month=status.saving_per_month,
        candidates=[
            TuningCandidateOut(name=c.name, billed_kw=c.billed_kw, throughput_kwh=c.throughput_kwh)
            for c in status.candidates
        ],
        replay_running=tuning.running,
        note=status.note,
    )
