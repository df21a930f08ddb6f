"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ReadingIn(BaseModel):
    """One meter reading; ``observed_at`` omitted means now."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"observed_at": "2026-07-01T14:03:00Z", "kw": 12.4}]}
    )

    observed_at: datetime | None = Field(
        default=None, description="When the meter read this value, with a time-zone offset."
    )
    kw: float = Field(description="Building electric power in kW.")


class BatchAccepted(BaseModel):
    """What a POST of readings did."""

    accepted: int = Field(description="Readings accepted.")
    live: int = Field(description="Readings folded into the live minute grid.")
    historical_minutes: int = Field(description="Past minutes created or averaged into.")


class MinuteOut(BaseModel):
    """One stored minute of the grid."""

    observed_at: datetime = Field(description="UTC start of the minute.")
    kw: float = Field(description="Mean kW of the writes in the minute.")
    sample_count: int = Field(description="Writes averaged; 0 when carried forward.")
    carried_forward: bool = Field(description="True when no write fell in this minute.")


class ReadingsPageOut(BaseModel):
    """A page of minutes, oldest first."""

    items: list[MinuteOut]
    next_start: datetime | None = Field(
        description="Pass as ?start= to get the next page; null on the last page."
    )


class StatusFlags(BaseModel):
    """BACnet status flags."""

    in_alarm: bool
    fault: bool
    overridden: bool
    out_of_service: bool


class PointOut(BaseModel):
    """A BACnet point as a BACnet read would return it now."""

    name: str
    object_type: Literal["analog-value", "binary-value"]
    instance: int
    object_identifier: str
    present_value: float | bool
    units: str | None
    reliability: str
    status_flags: StatusFlags
    description: str
    writable: bool
    cov_increment: float | None
    updated_at: datetime | None = Field(description="When the value was last computed or written.")


class ForecastStep(BaseModel):
    """One minute of the forecast trajectory."""

    at: datetime = Field(description="UTC start of the forecast minute.")
    kw: float
    p10_kw: float | None = None
    p90_kw: float | None = None


class ForecastOut(BaseModel):
    """The next 60 minutes, minute by minute."""

    forecaster: str = Field(description="Which forecaster produced it, e.g. mean-2-weeks.")
    made_at: datetime
    origin: datetime = Field(description="UTC start of the last completed minute it used.")
    quality: str = Field(description="ok, stale-input, insufficient-history or no-data.")
    note: str
    one_hour_kw: float = Field(description="The value 60 minutes ahead (the BACnet output).")
    peak_kw: float
    peak_at: datetime
    steps: list[ForecastStep]


class HealthOut(BaseModel):
    """Liveness."""

    status: Literal["ok"]


class ReadyOut(BaseModel):
    """Readiness and why not."""

    ready: bool
    database: bool
    bacnet_bound: bool
    snapshot_age_s: float | None
    problems: list[str]


class ModelRunOut(BaseModel):
    """One training run."""

    id: int
    status: str = Field(description="running, accepted, rejected or failed")
    trigger: str = Field(description="schedule, api or cli")
    started_at: datetime
    finished_at: datetime | None
    model_version: str | None
    model_family: str | None
    rows_used: int | None
    train_start: datetime | None
    train_end: datetime | None
    holdout_start: datetime | None
    rmse_kw: float | None = Field(description="Held-out RMSE of the value 60 minutes ahead.")
    mae_kw: float | None
    cvrmse_pct: float | None = Field(
        description="Held-out CV(RMSE) of the 15-minute average ending 60 minutes ahead."
    )
    baseline_metrics: dict[str, dict[str, float | None]] | None = Field(
        description="The same metrics for the model and the baselines on the same points."
    )
    training_minutes: float | None
    error_text: str | None


class ModelOut(BaseModel):
    """The forecaster in service."""

    forecaster: str
    version: str | None
    rmse_kw: float | None = Field(description="What the BACnet point model-rsme shows.")
    rmse_source: str
    heldout_rmse_kw: float | None
    live_rmse_kw: float | None
    live_rmse_samples: int
    training_minutes: float | None
    trained_at: datetime | None
    training_run_in_progress: int | None
    served_run: ModelRunOut | None


class TrainStarted(BaseModel):
    """A training run was started."""

    run_id: int
    status: str
