"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ContextDep
from api.schemas import HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz() -> HealthOut:
    """The process is up and serving HTTP."""
    return HealthOut(status="ok")


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
async def readyz(context: ContextDep) -> JSONResponse:
    """Database reachable, BACnet bound, and the snapshot recomputed recently."""
    core = context.core
    database = await core.ready()
    bound = context.bacnet_bound()
    age = core.snapshot_age_s()
    problems = []
    if core.writer.fault is not None:
        problems.append(f"{core.writer.name} not taking writes: {core.writer.fault.error}")
    elif not database:
        problems.append(f"{core.writer.name} unreachable")
    if not bound:
        problems.append("BACnet not bound")
    limit = 3 * core.settings.snapshot_interval_s
    if age is None:
        problems.append("no snapshot computed yet")
    elif age > limit:
        problems.append(f"snapshot is {age:.0f} s old (limit {limit:.0f} s)")
    body = ReadyOut(
        ready=not problems,
        database=database,
        bacnet_bound=bound,
        snapshot_age_s=age,
        problems=problems,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if not problems else 503)
