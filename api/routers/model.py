"""The forecasting model: what serves, its honest error, its training runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ContextDep, WriteAllowed
from api.errors import error_responses
from api.schemas import ModelOut, ModelRunOut, TrainStarted
from core.errors import NotReady
from core.records import ModelRunRecord

router = APIRouter(prefix="/api/v1/model", tags=["model"])


def _run_out(run: ModelRunRecord) -> ModelRunOut:
    return ModelRunOut.model_validate(run, from_attributes=True)


@router.get("", response_model=ModelOut)
async def get_model(context: ContextDep) -> ModelOut:
    """The forecaster in service, its held-out and live error, and any training in progress."""
    model = context.core.snapshot.model
    training = context.training
    served = None
    if training is not None and training.served_run_id is not None:
        runs = await context.core.model_runs(limit=50)
        served = next((_run_out(r) for r in runs if r.id == training.served_run_id), None)
    return ModelOut(
        forecaster=model.forecaster,
        version=model.version,
        rmse_kw=model.rmse_kw,
        rmse_source=model.rmse_source,
        heldout_rmse_kw=model.heldout_rmse_kw,
        live_rmse_kw=model.live_rmse_kw,
        live_rmse_samples=model.live_rmse_samples,
        band_scale=model.band_scale,
        band_coverage=model.band_coverage,
        day_ahead_band_scale=model.day_ahead_band_scale,
        day_ahead_band_coverage=model.day_ahead_band_coverage,
        training_minutes=model.training_minutes,
        trained_at=model.trained_at,
        training_run_in_progress=training.running_run_id if training else None,
        served_run=served,
    )


@router.get("/runs", response_model=list[ModelRunOut])
async def list_runs(
    context: ContextDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[ModelRunOut]:
    """Training runs, newest first: accepted, rejected (did not beat the baselines) or failed."""
    return [_run_out(run) for run in await context.core.model_runs(limit=limit)]


@router.post(
    "/train",
    response_model=TrainStarted,
    status_code=202,
    dependencies=[WriteAllowed],
    responses=error_responses(
        409, 503, e409="A run is already in progress.", e503="Training is not available."
    ),
)
async def start_training(context: ContextDep) -> TrainStarted:
    """Start a training run now in a separate process; poll /api/v1/model/runs for the result."""
    if context.training is None:
        raise NotReady("training is not available in this process")
    run_id = await context.training.trigger("api")
    return TrainStarted(run_id=run_id, status="running")
