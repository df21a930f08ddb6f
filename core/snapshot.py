"""The one snapshot of the core's state that feeds BACnet, REST and metrics alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from core.commands import CommandState
from core.demand import DemandSnapshot
from core.dispatch.controller import DispatchDecision
from core.forecast.base import DayAheadForecast, Forecast
from core.records import ModelRunRecord

OPTIONAL_INPUTS = ("pv_power_kw", "battery_soc_pct", "battery_power_kw", "ev_charging_power_kw")


class Quality(StrEnum):
    """Why a value can or cannot be trusted; each adapter maps it (BACnet reliability, REST)."""

    OK = "ok"
    NO_DATA = "no-data"  # nothing to compute from yet (never written, no model trained)
    STALE_INPUT = "stale-input"  # the meter input stopped arriving
    INSUFFICIENT_HISTORY = "insufficient-history"  # data exists but not enough of it
    STORAGE_FAULT = "storage-fault"  # the database is not taking writes: writes are refused
    DEGRADED = "degraded"  # computed by a fallback rule (e.g. dispatch with a stale SOC)


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """Which forecaster serves, and its error figures."""

    forecaster: str
    version: str | None = None
    heldout_rmse_kw: float | None = None  # from the training run of a served trained model
    live_rmse_kw: float | None = None  # 60-minute-ahead error of what was served, trailing 24 h
    live_rmse_samples: int = 0
    # The online band adaptation (core.accuracy.BandAdapter) of the 60-minute and day-ahead
    # P10-P90 bands: the width scale in force and the coverage of the bands served so far.
    band_scale: float = 1.0
    band_coverage: float | None = None
    day_ahead_band_scale: float = 1.0
    day_ahead_band_coverage: float | None = None
    training_minutes: float | None = None  # wall time of the last finished training run
    trained_at: datetime | None = None

    @property
    def rmse_kw(self) -> float | None:
        """What model-rsme shows: the held-out RMSE of a trained model, else the live RMSE."""
        return self.heldout_rmse_kw if self.heldout_rmse_kw is not None else self.live_rmse_kw

    @property
    def rmse_source(self) -> str:
        """Where ``rmse_kw`` comes from."""
        if self.heldout_rmse_kw is not None:
            return "held-out data at training"
        return "live 60-minute-ahead error, trailing 24 h"

    @classmethod
    def serving(
        cls, forecaster: str, measured: ModelStatus, run: ModelRunRecord | None = None
    ) -> ModelStatus:
        """The status of the forecaster that serves now: its training run's figures (a trained
        model; None for the baseline) and what was measured before (the live RMSE, and the last
        training's time when no run is given)."""
        return cls(
            forecaster=forecaster,
            version=run.model_version if run is not None else None,
            heldout_rmse_kw=run.rmse_kw if run is not None else None,
            live_rmse_kw=measured.live_rmse_kw,
            live_rmse_samples=measured.live_rmse_samples,
            training_minutes=run.training_minutes if run is not None else measured.training_minutes,
            trained_at=run.finished_at if run is not None else measured.trained_at,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the faces publish, computed once per interval (input fields on every write)."""

    computed_at: datetime | None = None
    input_kw: float | None = None
    input_observed_at: datetime | None = None
    input_quality: Quality = Quality.NO_DATA
    last_minute_kw: float | None = None
    last_minute_at: datetime | None = None
    rate_of_change_kw_per_min: float | None = None
    rate_of_change_15min_kw_per_min: float | None = None
    rate_quality: Quality = Quality.NO_DATA
    high_load: bool = False
    low_load: bool = False
    high_threshold_kw: float | None = None
    low_threshold_kw: float | None = None
    load_quality: Quality = Quality.NO_DATA
    forecast: Forecast | None = None
    forecast_quality: Quality = Quality.NO_DATA
    # The next 24 h in 15-minute steps (served forecaster or the seasonal baseline); transient.
    day_ahead: DayAheadForecast | None = None
    # The battery/EV dispatch decision and its plan, when a battery is configured; transient.
    dispatch: DispatchDecision | None = None
    model: ModelStatus = field(default_factory=lambda: ModelStatus(forecaster="none"))
    # Demand-charge management: recomputed every interval from the tracker's persisted state,
    # so it is not part of the saved snapshot.
    demand: DemandSnapshot | None = None
    demand_target_kw: float | None = None
    # Optional BAS inputs: (value, observed_at) by name, and each one's quality.
    inputs: dict[str, tuple[float, datetime]] = field(default_factory=dict)
    input_qualities: dict[str, Quality] = field(default_factory=dict)
    # Each commandable input's priority array, by input key (persisted on its own).
    commands: dict[str, CommandState] = field(default_factory=dict)
    # Why the database is not taking writes; None while it is.
    storage_fault: str | None = None

    def optional_input(self, name: str) -> float | None:
        """The latest value of an optional input (pv_power_kw, ...), or None."""
        item = self.inputs.get(name)
        return item[0] if item else None

    def optional_input_quality(self, name: str) -> Quality:
        """Quality of an optional input: no-data until written, stale-input when old."""
        return self.input_qualities.get(name, Quality.NO_DATA)

    @property
    def one_hour_kw(self) -> float | None:
        """The forecast 60 minutes ahead, or None."""
        return self.forecast.one_hour_kw if self.forecast else None

    @property
    def model_rmse_quality(self) -> Quality:
        """OK once an RMSE figure exists."""
        return Quality.OK if self.model.rmse_kw is not None else Quality.NO_DATA

    @property
    def training_quality(self) -> Quality:
        """OK once a training run has finished."""
        return Quality.OK if self.model.training_minutes is not None else Quality.NO_DATA

    def to_state(self) -> dict[str, Any]:
        """JSON-safe form for the service_state table."""
        data: dict[str, Any] = {}
        for item in fields(self):
            if item.name in _TRANSIENT:
                continue
            value = getattr(self, item.name)
            is_instance = is_dataclass(value) and not isinstance(value, type)
            data[item.name] = asdict(value) if is_instance else value
        return _jsonable(data)  # type: ignore[no-any-return]

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Snapshot:
        """Rebuild a snapshot persisted with ``to_state``."""

        def dt(value: Any) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        forecast = None
        if state.get("forecast"):
            f = state["forecast"]
            forecast = Forecast(
                forecaster=f["forecaster"],
                made_at=datetime.fromisoformat(f["made_at"]),
                origin_minute=int(f["origin_minute"]),
                kw=tuple(f["kw"]),
                p10_kw=tuple(f["p10_kw"]) if f.get("p10_kw") else None,
                p90_kw=tuple(f["p90_kw"]) if f.get("p90_kw") else None,
                note=f.get("note", ""),
            )
        m = state.get("model") or {"forecaster": "none"}
        model = ModelStatus(
            forecaster=m["forecaster"],
            version=m.get("version"),
            heldout_rmse_kw=m.get("heldout_rmse_kw"),
            live_rmse_kw=m.get("live_rmse_kw"),
            live_rmse_samples=int(m.get("live_rmse_samples", 0)),
            band_scale=float(m.get("band_scale", 1.0)),
            band_coverage=m.get("band_coverage"),
            day_ahead_band_scale=float(m.get("day_ahead_band_scale", 1.0)),
            day_ahead_band_coverage=m.get("day_ahead_band_coverage"),
            training_minutes=m.get("training_minutes"),
            trained_at=dt(m.get("trained_at")),
        )
        return cls(
            computed_at=dt(state.get("computed_at")),
            input_kw=state.get("input_kw"),
            input_observed_at=dt(state.get("input_observed_at")),
            input_quality=Quality(state.get("input_quality", "no-data")),
            last_minute_kw=state.get("last_minute_kw"),
            last_minute_at=dt(state.get("last_minute_at")),
            rate_of_change_kw_per_min=state.get("rate_of_change_kw_per_min"),
            rate_of_change_15min_kw_per_min=state.get("rate_of_change_15min_kw_per_min"),
            rate_quality=Quality(state.get("rate_quality", "no-data")),
            high_load=bool(state.get("high_load")),
            low_load=bool(state.get("low_load")),
            high_threshold_kw=state.get("high_threshold_kw"),
            low_threshold_kw=state.get("low_threshold_kw"),
            load_quality=Quality(state.get("load_quality", "no-data")),
            forecast=forecast,
            forecast_quality=Quality(state.get("forecast_quality", "no-data")),
            model=model,
            demand_target_kw=state.get("demand_target_kw"),
        )


# Recomputed at the first computation after a restart (from the demand tracker's own state).
_TRANSIENT = frozenset(
    {"demand", "inputs", "input_qualities", "commands", "storage_fault", "day_ahead", "dispatch"}
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return value.value
    return value
