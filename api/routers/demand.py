"""Demand-charge management: the interval, the billing-period peak, the target, the decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CommandsDep, CoreDep, WriteAllowed
from api.errors import error_responses
from api.schemas import (
    BillingPeriodOut,
    DemandDecisionsOut,
    DemandIntervalNow,
    DemandIntervalOut,
    DemandOut,
    InputsIn,
    IsoDateTime,
    TargetIn,
)
from core.commands import InputKey
from core.errors import InvalidReading, NotReady
from core.ports import WriteInputs
from core.timegrid import minute_start

router = APIRouter(prefix="/api/v1/demand", tags=["demand"])


@router.get("", response_model=DemandOut, responses=error_responses(503, e503="Not computed yet."))
async def get_demand(core: CoreDep) -> DemandOut:
    """Current interval, period peak with time, target, allowance, projection and decisions."""
    snapshot = core.snapshot
    demand = snapshot.demand
    if demand is None:
        raise NotReady("demand figures are computed with the first snapshot; try again shortly")
    interval = demand.interval
    decisions = demand.decisions
    return DemandOut(
        at=demand.at.astimezone(UTC),
        interval=DemandIntervalNow(
            start=interval.start,
            length_minutes=interval.length_minutes,
            elapsed_minutes=interval.elapsed_minutes,
            observed_minutes=interval.observed_minutes,
            remaining_minutes=interval.remaining_minutes,
            average_so_far_kw=interval.average_so_far_kw,
            projected_kw=interval.projected_kw,
            projection=interval.projection.value,
            allowance_kw=interval.allowance_kw,
        ),
        period=BillingPeriodOut(start=demand.period.start, end=demand.period.end),
        period_peak_kw=demand.period_peak_kw,
        period_peak_start=_start(demand.period_peak_start_minute),
        target_kw=demand.target_kw,
        effective_target_kw=demand.effective_target_kw,
        next_hour_peak_kw=demand.next_hour_peak_kw,
        next_hour_peak_start=_start(demand.next_hour_peak_start_minute),
        p_exceed_interval=demand.p_exceed_interval,
        p_exceed_next_hour=demand.p_exceed_next_hour,
        gross_load_kw=demand.gross_load_kw,
        decisions=DemandDecisionsOut(
            kw_to_shed=decisions.kw_to_shed,
            chiller_capacity_limit_pct=decisions.chiller_capacity_limit_pct,
            battery_charge_permit=decisions.battery_charge_permit,
            ev_charge_permit=decisions.ev_charge_permit,
            battery_discharge_request=decisions.battery_discharge_request,
            charge_headroom_kw=decisions.charge_headroom_kw,
            quality={name: q.value for name, q in decisions.quality.items()},
        ),
        notes=list(demand.notes),
        operator_target_kw=snapshot.demand_target_kw,
        inputs={name: value for name, (value, _) in snapshot.inputs.items()},
        input_qualities={name: q.value for name, q in snapshot.input_qualities.items()},
        meter_quality=snapshot.input_quality.value,
    )


def _start(minute: int | None) -> datetime | None:
    """The UTC start of ``minute``, None for None."""
    return None if minute is None else minute_start(minute)


@router.get(
    "/intervals",
    response_model=list[DemandIntervalOut],
    responses=error_responses(400, e400="end is not after start."),
)
async def list_intervals(
    core: CoreDep,
    start: Annotated[
        IsoDateTime | None, Query(description="Inclusive, ISO 8601 with offset")
    ] = None,
    end: Annotated[
        IsoDateTime | None,
        Query(description="Exclusive, after start; ISO 8601 with offset"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> list[DemandIntervalOut]:
    """Closed demand intervals (average kW), oldest first."""
    rows = await core.demand_intervals(start, end, limit)
    return [
        DemandIntervalOut(
            start=row.start_at,
            length_minutes=row.length_minutes,
            average_kw=row.average_kw,
            observed_minutes=row.observed_minutes,
            complete=row.complete,
            billing_period_start=row.period_start_at,
            counted_for_peak=row.counted_for_peak,
        )
        for row in rows
    ]


@router.put(
    "/target",
    response_model=TargetIn,
    dependencies=[WriteAllowed],
    responses=error_responses(
        409,
        503,
        e409="A higher BACnet priority commands the target.",
        e503="The database is not taking writes; nothing changed.",
    ),
)
async def put_target(core: CoreDep, commands: CommandsDep, body: TargetIn) -> TargetIn:
    """Set the demand target in kW at priority 16 (null relinquishes REST's write)."""
    await commands.command(WriteInputs({InputKey.DEMAND_TARGET_KW: body.target_kw}))
    return TargetIn(target_kw=core.snapshot.demand_target_kw)


@router.post(
    "/inputs",
    status_code=204,
    dependencies=[WriteAllowed],
    responses=error_responses(
        409,
        503,
        e409="A higher BACnet priority commands one of the inputs.",
        e503="The database is not taking writes; nothing changed.",
    ),
)
async def post_inputs(commands: CommandsDep, body: InputsIn) -> None:
    """Post site inputs (PV, battery, EV, outdoor air) at priority 16; same checks as BACnet."""
    values = body.model_dump(exclude_none=True, exclude={"observed_at"})
    if not values:
        raise InvalidReading("give at least one of " + ", ".join(InputsIn.input_names()))
    await commands.command(WriteInputs(values, body.observed_at))
