"""Demand-charge management: the interval, the billing-period peak, the target, the decisions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import CommandsDep, CoreDep, WriteAllowed
from api.errors import error_responses
from api.schemas import DemandIntervalOut, DemandOut, InputsIn, IsoDateTime, TargetIn
from core.commands import InputKey
from core.errors import InvalidReading, NotReady
from core.ports import WriteInputs

router = APIRouter(prefix="/api/v1/demand", tags=["demand"])


@router.get("", response_model=DemandOut, responses=error_responses(503, e503="Not computed yet."))
async def get_demand(core: CoreDep) -> DemandOut:
    """Current interval, period peak with time, target, allowance, projection and decisions."""
    snapshot = core.snapshot
    if snapshot.demand is None:
        raise NotReady("demand figures are computed with the first snapshot; try again shortly")
    body: dict[str, Any] = snapshot.demand.to_dict()
    return DemandOut(
        **body,
        operator_target_kw=snapshot.demand_target_kw,
        inputs={name: value for name, (value, _) in snapshot.inputs.items()},
        input_qualities={name: q.value for name, q in snapshot.input_qualities.items()},
        meter_quality=snapshot.input_quality.value,
    )


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
