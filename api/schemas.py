"""Request and response bodies of the REST API."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    WithJsonSchema,
)

# The years a timestamp may name at all (the core applies its own, narrower checks).
EARLIEST_YEAR = 1970
LATEST_YEAR = 2999
# The highest plausible kW by default (--max-kw): the demand target's documented maximum.
DEFAULT_MAX_KW = 100_000.0
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def _iso_text_only(value: object) -> object:
    """Refuse numbers (and numeric text such as ``?start=0.5``): a time is ISO 8601 text."""
    if isinstance(value, bool | int | float) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError(
            "must be an ISO 8601 date-time with a time-zone offset "
            "(e.g. 2026-07-01T14:03:00Z), not a number"
        )
    return value


def _sane_year(value: datetime) -> datetime:
    """Refuse a time that cannot be a reading or query bound (year 1, overflow at UTC)."""
    try:
        year = value.astimezone(UTC).year if value.tzinfo is not None else value.year
    except OverflowError:
        year = value.year  # year 1 or 9999 shifted past the calendar's end
    if not EARLIEST_YEAR <= year <= LATEST_YEAR:
        raise ValueError(f"year {year} is outside {EARLIEST_YEAR}..{LATEST_YEAR}")
    return value


IsoDateTime = Annotated[
    datetime,
    BeforeValidator(_iso_text_only),
    AfterValidator(_sane_year),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "formatMinimum": f"{EARLIEST_YEAR}-01-01T00:00:00Z",
            "formatMaximum": f"{LATEST_YEAR}-12-31T23:59:59Z",
            "description": f"ISO 8601 text with a time-zone offset, in years "
            f"{EARLIEST_YEAR}..{LATEST_YEAR}",
        }
    ),
]
"""A date-time given as ISO 8601 text, in years 1970..2999; the offset is checked by the core."""

Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
"""A finite JSON number: true/false and numeric strings are refused (strict)."""


class ErrorItem(BaseModel):
    """One problem with the request."""

    loc: list[str | int] = Field(description="Where: 'body', 'query' or 'path', then the field.")
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every error reply (400, 401, 404, 409, 413, 422, 503): one line, and for 422 the list."""

    detail: str = Field(description="What was wrong, in one line (at most a few kB).")
    errors: list[ErrorItem] | None = Field(
        default=None,
        description="Validation problems (422 and 400), at most 20; the input is not echoed.",
    )
    errors_omitted: int | None = Field(
        default=None, description="How many further problems were not listed."
    )


class ReadingIn(BaseModel):
    """One meter reading; ``observed_at`` omitted means now."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"observed_at": "2026-07-01T14:03:00Z", "kw": 12.4}]}
    )

    observed_at: IsoDateTime | None = Field(
        default=None, description="When the meter read this value, with a time-zone offset."
    )
    kw: Number = Field(description="Building electric power in kW.")


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
    outdoor_air_temp: float | None = Field(
        None,
        description="Outdoor air temperature in force in this minute, in the configured unit "
        "(--outdoor-air-units); null when unknown.",
    )
    dispatched_kw: float | None = Field(
        None,
        description="Battery and EV charging kW this service dispatched in this minute (+ drawn "
        "from the grid); the forecasters learn kw less this. Null when none is known.",
    )


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

    model_config = ConfigDict(from_attributes=True)

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
    band_scale: float = Field(
        description="How much the 60-minute P10-P90 band is widened (>1) or narrowed (<1) from "
        "its training calibration, adapted online so that it keeps covering 80 % of outcomes."
    )
    band_coverage: float | None = Field(
        description="Share of the 60-minute outcomes inside the band as served, since this "
        "forecaster started serving (null before the first)."
    )
    day_ahead_band_scale: float = Field(description="The same scale for the day-ahead band.")
    day_ahead_band_coverage: float | None = Field(
        description="Share of the day-ahead 15-minute outcomes inside the band as served."
    )
    training_minutes: float | None
    trained_at: datetime | None
    training_run_in_progress: int | None
    served_run: ModelRunOut | None


class TrainStarted(BaseModel):
    """A training run was started."""

    run_id: int
    status: str


class TargetIn(BaseModel):
    """The demand target."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"target_kw": 21.5}]})

    target_kw: Number | None = Field(
        description="kW (interval average), above 0 and at most --max-kw (default 100,000); "
        "null removes it.",
        json_schema_extra={"exclusiveMinimum": 0, "maximum": DEFAULT_MAX_KW},
    )


class InputsIn(BaseModel):
    """Optional site inputs; give any subset."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"pv_power_kw": 4.2, "battery_soc_pct": 64.0}]},
    )

    observed_at: IsoDateTime | None = Field(default=None, description="Default now.")
    pv_power_kw: Number | None = Field(default=None, description="Solar PV output, kW.")
    battery_soc_pct: Number | None = Field(default=None, description="Battery state of charge, %.")
    battery_power_kw: Number | None = Field(
        default=None, description="Battery power, kW: + charging, - discharging."
    )
    ev_charging_power_kw: Number | None = Field(default=None, description="EV charging, kW.")
    outdoor_air_temp: Number | None = Field(
        default=None, description="Outdoor air temperature in --outdoor-air-units (default °F)."
    )

    @classmethod
    def input_names(cls) -> list[str]:
        """The input fields."""
        return [name for name in cls.model_fields if name != "observed_at"]


class DemandIntervalOut(BaseModel):
    """A closed demand interval."""

    start: datetime
    length_minutes: int
    average_kw: float
    observed_minutes: int
    complete: bool
    billing_period_start: datetime
    counted_for_peak: bool


class DemandIntervalNow(BaseModel):
    """The demand interval in progress: so far, projected and allowed."""

    start: datetime = Field(description="UTC start of the interval.")
    length_minutes: int
    elapsed_minutes: int
    observed_minutes: int
    remaining_minutes: int
    average_so_far_kw: float | None
    projected_kw: float | None = Field(description="Projected end-of-interval average kW.")
    projection: Literal["forecast", "held", "none"] = Field(
        description="What filled the remaining minutes: the forecast, the latest kW held, or none."
    )
    allowance_kw: float | None = Field(
        description="Load limit over the remaining minutes that keeps the interval at target."
    )


class BillingPeriodOut(BaseModel):
    """The billing period."""

    start: datetime
    end: datetime


class DemandDecisionsOut(BaseModel):
    """The recommendations for the building (see docs/controls.md, Sequences)."""

    kw_to_shed: float
    chiller_capacity_limit_pct: float
    battery_charge_permit: bool
    ev_charge_permit: bool
    battery_discharge_request: bool
    charge_headroom_kw: float | None
    quality: dict[str, str] = Field(description="Each decision's quality, keyed by field name.")


class DemandOut(BaseModel):
    """The demand-charge picture now (see docs/controls.md, Sequences)."""

    at: datetime
    interval: DemandIntervalNow
    period: BillingPeriodOut
    period_peak_kw: float | None
    period_peak_start: datetime | None
    target_kw: float | None
    effective_target_kw: float | None = Field(description="max(target, period peak) if ratchet")
    next_hour_peak_kw: float | None
    next_hour_peak_start: datetime | None
    p_exceed_interval: float | None = Field(description="0..1, from the forecast band")
    p_exceed_next_hour: float | None
    gross_load_kw: float | None
    decisions: DemandDecisionsOut
    notes: list[str]
    operator_target_kw: float | None
    inputs: dict[str, float]
    input_qualities: dict[str, str]
    meter_quality: str
