"""Typed records that cross from the core into the adapters (ORM rows stay in core/storage)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal


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


ObjectTypeName = Literal["analog-value", "binary-value"]  # BACnet object types (bacpypes3 spelling)


@dataclass(frozen=True, slots=True)
class PointRecord:
    """One BACnet point as a BACnet read returns it now, as plain data for the REST API and the
    metrics (built by ``bacnet.table``; the API never imports the BACnet adapter)."""

    name: str
    object_type: ObjectTypeName
    instance: int
    object_identifier: str  # e.g. analog-value,1
    present_value: float | bool
    value: float | bool | None  # None: no value yet (present_value then shows the default)
    units: str | None
    reliability: str  # bacpypes3 spelling: no-fault-detected, ...
    fault: bool  # the reliability is not no-fault-detected
    description: str
    writable: bool
    cov_increment: float | None


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A file to download: its conventional name and content."""

    name: str
    content: bytes


@dataclass(frozen=True, slots=True)
class DemandIntervalRecord:
    """A closed demand interval as stored: its average kW and whether it could set the peak."""

    start_minute: int
    length_minutes: int
    start_at: datetime
    average_kw: float
    observed_minutes: int
    complete: bool
    period_start_at: datetime
    counted_for_peak: bool


@dataclass(frozen=True, slots=True)
class LoggedForecast:
    """The 60-minute-ahead value logged for one target minute."""

    target_minute: int
    forecaster: str
    kw: float
    made_at: datetime  # about 60 minutes before the target minute
    replayed: bool = False  # computed over imported minutes after the fact, not made live
