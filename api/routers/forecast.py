"""The forecast the BACnet output is taken from."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import CoreDep
from api.errors import error_responses
from api.schemas import ForecastOut, ForecastStep, IsoDateTime
from core.errors import NotReady
from core.timegrid import minute_start

router = APIRouter(prefix="/api/v1", tags=["forecast"])


class ForecastLogEntry(BaseModel):
    """What the service forecast, 60 minutes ahead, for one minute."""

    at: datetime = Field(description="UTC start of the target minute.")
    kw: float = Field(description="The 60-minute-ahead value (what one-hour-future-power showed).")
    forecaster: str
    made_at: datetime = Field(description="When the forecast was made (about 60 minutes before).")
    replayed: bool = Field(
        default=False,
        description="Computed after the fact over imported minutes by the forecaster in "
        "service, as it would have forecast them; false for forecasts made live.",
    )


class ForecastHistoryOut(BaseModel):
    """The forecast log: for each target minute, the forecast made 60 minutes earlier."""

    items: list[ForecastLogEntry]


@router.get(
    "/forecast",
    response_model=ForecastOut,
    responses=error_responses(503, e503="No forecast yet (no completed minute of readings)."),
)
async def get_forecast(core: CoreDep) -> ForecastOut:
    """The next 60 minutes, minute by minute, with the forecaster's name and when it was made."""
    snapshot = core.snapshot
    forecast = snapshot.forecast
    if forecast is None:
        raise NotReady(
            f"no forecast yet ({snapshot.forecast_quality.value}): it needs at least one "
            "completed minute of readings"
        )
    steps = [
        ForecastStep(
            at=forecast.target(step),
            kw=kw,
            p10_kw=forecast.p10_kw[step - 1] if forecast.p10_kw else None,
            p90_kw=forecast.p90_kw[step - 1] if forecast.p90_kw else None,
        )
        for step, kw in enumerate(forecast.kw, start=1)
    ]
    return ForecastOut(
        forecaster=forecast.forecaster,
        made_at=forecast.made_at,
        origin=forecast.origin,
        quality=snapshot.forecast_quality.value,
        note=forecast.note,
        one_hour_kw=forecast.one_hour_kw,
        peak_kw=forecast.peak_kw,
        peak_at=forecast.target(forecast.peak_step),
        steps=steps,
    )


@router.get(
    "/forecast/history",
    response_model=ForecastHistoryOut,
    responses=error_responses(400, e400="end is not after start."),
)
async def get_forecast_history(
    core: CoreDep,
    start: Annotated[
        IsoDateTime | None, Query(description="Inclusive, ISO 8601 with offset")
    ] = None,
    end: Annotated[
        IsoDateTime | None,
        Query(description="Exclusive, after start; ISO 8601 with offset"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10000, description="At most this many")] = 2000,
) -> ForecastHistoryOut:
    """The 60-minute-ahead forecast logged for each minute (kept 25 h), oldest first."""
    rows = await core.forecast_history(start, end, limit)
    return ForecastHistoryOut(
        items=[
            ForecastLogEntry(
                at=minute_start(row.target_minute),
                kw=row.kw,
                forecaster=row.forecaster,
                made_at=row.made_at,
                replayed=row.replayed,
            )
            for row in rows
        ]
    )
