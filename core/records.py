"""Typed records that cross from the core into the adapters (ORM rows stay in core/storage)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    """Where a training run stands; every status but RUNNING is final."""

    RUNNING = "running"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        """True once the run has ended."""
        return self is not RunStatus.RUNNING


@dataclass(frozen=True, slots=True)
class ModelRunRecord:
    """One training run as stored."""

    id: int
    started_at: datetime
    finished_at: datetime | None
    status: RunStatus
    trigger: str
    model_version: str | None
    model_family: str | None
    artifact_path: str | None
    rows_used: int | None
    train_start: datetime | None
    train_end: datetime | None
    holdout_start: datetime | None
    rmse_kw: float | None
    mae_kw: float | None
    cvrmse_pct: float | None
    baseline_metrics: dict[str, Any] | None
    training_minutes: float | None
    error_text: str | None


@dataclass(frozen=True, slots=True)
class HeldMinute:
    """What the core holds in memory for one minute (NaN where it holds nothing)."""

    meter_kw: float
    base_load_kw: float  # the meter less the battery and EV kW dispatched
    outdoor_air_temp: float  # in the site's configured unit
