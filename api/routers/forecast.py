"""The forecast the BACnet output is taken from."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CoreDep
from api.schemas import ForecastOut, ForecastStep
from core.errors import NotReady

router = APIRouter(prefix="/api/v1", tags=["forecast"])


@router.get(
    "/forecast",
    response_model=ForecastOut,
    responses={503: {"description": "No forecast yet (no completed minute of readings)."}},
)
def get_forecast(core: CoreDep) -> ForecastOut:
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
