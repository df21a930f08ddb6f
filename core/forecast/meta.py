"""The forecaster artifact's metadata as typed dataclasses (meta.json), with versioned parsing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.forecast.features import FeatureConfig, Scaling, WeekdayGroups, parse_weekday_groups

ARTIFACT_FORMAT = "open-dsm-forecaster"
# 1: the 60-minute model only; 2: + band calibration, outdoor air, the day-ahead model.
MODEL_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)

Metrics = dict[str, dict[str, float]]


class MetaError(ValueError):
    """meta.json is missing a field or has one of the wrong type."""


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@dataclass(frozen=True, slots=True)
class BandCalibration:
    """Additive kW shifts of P10 and P90 per step (conformal, from the inner validation split)."""

    p10_shift_kw: tuple[float, ...] = ()
    p90_shift_kw: tuple[float, ...] = ()
    validation_coverage: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "p10_shift_kw": list(self.p10_shift_kw),
            "p90_shift_kw": list(self.p90_shift_kw),
            "validation_coverage": self.validation_coverage,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> BandCalibration:
        """Inverse of ``to_dict``; empty (no shift) when absent."""
        if not data:
            return cls()
        cov = data.get("validation_coverage")
        return cls(
            p10_shift_kw=_floats(data.get("p10_shift_kw", ())),
            p90_shift_kw=_floats(data.get("p90_shift_kw", ())),
            validation_coverage=None if cov is None else float(cov),
        )


@dataclass(frozen=True, slots=True)
class DayAheadMeta:
    """The day-ahead model (day_ahead.tflite) beside the 60-minute one."""

    input_dim: int
    outdoor_air: bool
    history_minutes: int
    epochs: int
    band: BandCalibration
    holdout_metrics: Metrics = field(default_factory=dict)
    # Width (steps) of the moving mean over the seasonal base (1: none; older artifacts).
    baseline_smooth_steps: int = 1
    # Weekday groups of the seasonal base (see day_ahead.weekday_groups); None: the same weekday
    # one and two weeks back (mean-2-weeks; older artifacts).
    weekday_groups: WeekdayGroups | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "baseline_smooth_steps": self.baseline_smooth_steps,
            "weekday_groups": None if self.weekday_groups is None else list(self.weekday_groups),
            "input_dim": self.input_dim,
            "outdoor_air": self.outdoor_air,
            "history_minutes": self.history_minutes,
            "epochs": self.epochs,
            "band": self.band.to_dict(),
            "holdout_metrics": self.holdout_metrics,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DayAheadMeta:
        """Inverse of ``to_dict``."""
        return cls(
            input_dim=int(data["input_dim"]),
            outdoor_air=bool(data["outdoor_air"]),
            history_minutes=int(data["history_minutes"]),
            epochs=int(data["epochs"]),
            band=BandCalibration.from_dict(data.get("band")),
            holdout_metrics=dict(data.get("holdout_metrics", {})),
            baseline_smooth_steps=int(data.get("baseline_smooth_steps", 1)),
            weekday_groups=parse_weekday_groups(data.get("weekday_groups")),
        )


@dataclass(frozen=True, slots=True)
class ModelMeta:
    """Everything the server needs to use an exported forecaster, and how it was chosen."""

    model: str
    candidate: str
    created_at: str
    timezone: str
    horizon_minutes: int
    input_dim: int
    features: FeatureConfig
    history_minutes: int
    floor_kw: float
    scaling: Scaling
    epochs: int
    shrink: float
    train_weeks: int
    train_origins: int
    trained_until_minute: int
    holdout_days: int
    train_s: float
    quantiles: tuple[float, ...] = (0.1, 0.9)
    band: BandCalibration = field(default_factory=BandCalibration)
    day_ahead: DayAheadMeta | None = None
    # The factor on the residual at each step (baked into the exported model; ``shrink`` is the
    # last step's). Empty: one factor for every step (older artifacts).
    shrink_steps: tuple[float, ...] = ()
    holdout_metrics: Metrics = field(default_factory=dict)
    validation: list[dict[str, Any]] = field(default_factory=list)
    notes: tuple[str, ...] = ()
    version: int = MODEL_VERSION
    format: str = ARTIFACT_FORMAT

    @property
    def holdout_start_minute(self) -> int:
        """First origin of the held-out part: the last ``holdout_days`` of forecast origins."""
        last_origin = self.trained_until_minute - self.horizon_minutes
        return last_origin - self.holdout_days * 1440 + 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (meta.json)."""
        return {
            "format": self.format,
            "version": self.version,
            "model": self.model,
            "candidate": self.candidate,
            "created_at": self.created_at,
            "timezone": self.timezone,
            "horizon_minutes": self.horizon_minutes,
            "input_dim": self.input_dim,
            "features": self.features.to_dict(),
            "history_minutes": self.history_minutes,
            "floor_kw": self.floor_kw,
            "scaling": {
                "center_kw": self.scaling.center_kw,
                "scale_kw": self.scaling.scale_kw,
                "center_air": self.scaling.center_air,
                "scale_air": self.scaling.scale_air,
            },
            "quantiles": list(self.quantiles),
            "outputs": ["mean", "p10", "p90"],
            "epochs": self.epochs,
            "shrink": self.shrink,
            "shrink_steps": list(self.shrink_steps),
            "train_weeks": self.train_weeks,
            "train_origins": self.train_origins,
            "trained_until_minute": self.trained_until_minute,
            "holdout_days": self.holdout_days,
            "train_s": self.train_s,
            "band": self.band.to_dict(),
            "day_ahead": None if self.day_ahead is None else self.day_ahead.to_dict(),
            "holdout_metrics": self.holdout_metrics,
            "validation": self.validation,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMeta:
        """Parse meta.json of a supported version; MetaError on a missing or bad field."""
        if data.get("format") != ARTIFACT_FORMAT or data.get("version") not in SUPPORTED_VERSIONS:
            raise MetaError(
                f"unsupported artifact: format {data.get('format')!r}, "
                f"version {data.get('version')!r}"
            )
        try:
            scaling = data["scaling"]
            day_ahead = data.get("day_ahead")
            return cls(
                format=str(data["format"]),
                version=int(data["version"]),
                model=str(data["model"]),
                candidate=str(data["candidate"]),
                created_at=str(data["created_at"]),
                timezone=str(data["timezone"]),
                horizon_minutes=int(data["horizon_minutes"]),
                input_dim=int(data["input_dim"]),
                features=FeatureConfig.from_dict(data["features"]),
                history_minutes=int(data["history_minutes"]),
                floor_kw=float(data.get("floor_kw", 0.0)),
                scaling=Scaling(
                    center_kw=float(scaling["center_kw"]),
                    scale_kw=float(scaling["scale_kw"]),
                    center_air=float(scaling.get("center_air", 0.0)),
                    scale_air=float(scaling.get("scale_air", 1.0)),
                ),
                quantiles=_floats(data.get("quantiles", (0.1, 0.9))),
                epochs=int(data["epochs"]),
                shrink=float(data.get("shrink", 1.0)),
                shrink_steps=_floats(data.get("shrink_steps", ())),
                train_weeks=int(data["train_weeks"]),
                train_origins=int(data["train_origins"]),
                trained_until_minute=int(data["trained_until_minute"]),
                holdout_days=int(data["holdout_days"]),
                train_s=float(data["train_s"]),
                band=BandCalibration.from_dict(data.get("band")),
                day_ahead=None if not day_ahead else DayAheadMeta.from_dict(day_ahead),
                holdout_metrics=dict(data.get("holdout_metrics", {})),
                validation=list(data.get("validation", [])),
                notes=tuple(str(n) for n in data.get("notes", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MetaError(f"bad forecaster metadata: {exc!r}") from exc
