"""The point table: every BACnet point described once.

Both the device builder and the point-list exports read this table. It imports no bacpypes3, so the
REST face can list points without loading the BACnet stack. Names, types and instances of the seed's
seven points are a contract with field technicians: never rename or renumber them; bump
``DATABASE_REVISION`` whenever the list changes (a unit test checks this).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from core.config import Settings
from core.snapshot import Quality, Snapshot

# Bumped whenever the point list (names, types, instances, units) changes.
DATABASE_REVISION = 1
SENTINEL_KW = -1.0


class ObjectType(StrEnum):
    """BACnet object types used by the device (bacpypes3 spelling)."""

    ANALOG_VALUE = "analog-value"
    BINARY_VALUE = "binary-value"


class Reliability(StrEnum):
    """BACnet reliability values the device reports (bacpypes3 spelling)."""

    NO_FAULT_DETECTED = "no-fault-detected"
    NO_SENSOR = "no-sensor"
    COMMUNICATION_FAILURE = "communication-failure"
    UNRELIABLE_OTHER = "unreliable-other"


RELIABILITY_OF_QUALITY: dict[Quality, Reliability] = {
    Quality.OK: Reliability.NO_FAULT_DETECTED,
    Quality.NO_DATA: Reliability.NO_SENSOR,
    Quality.STALE_INPUT: Reliability.COMMUNICATION_FAILURE,
    Quality.INSUFFICIENT_HISTORY: Reliability.UNRELIABLE_OTHER,
}

PointValue = float | bool


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One BACnet point: identity, engineering metadata and where its value comes from."""

    name: str
    object_type: ObjectType
    instance: int
    description: str
    units: str | None  # bacpypes3 EngineeringUnits name, None for binaries
    cov_increment: float | None
    writable: bool
    default: PointValue
    value_of: Callable[[Snapshot], PointValue | None]
    quality_of: Callable[[Snapshot], Quality]
    min_value: float | None = None
    max_value: float | None = None
    state_text: tuple[str, str] | None = None  # (inactive, active)
    names_forecaster: bool = False

    @property
    def object_identifier(self) -> str:
        """e.g. ``analog-value,1``."""
        return f"{self.object_type.value},{self.instance}"

    def present_value(self, snapshot: Snapshot) -> PointValue:
        """The value both faces publish: the snapshot's, or the sentinel until one exists."""
        value = self.value_of(snapshot)
        return self.default if value is None else value

    def reliability(self, snapshot: Snapshot) -> Reliability:
        """BACnet reliability for the snapshot's quality of this point."""
        return RELIABILITY_OF_QUALITY[self.quality_of(snapshot)]

    def describe(self, snapshot: Snapshot, settings: Settings) -> str:
        """The description with settings filled in and, for model outputs, the forecaster named."""
        text = self.description.format(
            high_percentile=settings.high_percentile,
            low_percentile=settings.low_percentile,
            window_days=settings.percentile_window_days,
        )
        if self.names_forecaster:
            text = f"{text} (forecaster: {snapshot.model.forecaster})"
        return text


def _forecast_kw(snapshot: Snapshot) -> float | None:
    return snapshot.one_hour_kw


POINTS: tuple[PointSpec, ...] = (
    PointSpec(
        name="input-power-meter",
        object_type=ObjectType.ANALOG_VALUE,
        instance=1,
        description="Building electric power written by the BAS (kW); commandable",
        units="kilowatts",
        cov_increment=0.1,
        writable=True,
        default=0.0,
        value_of=lambda s: s.input_kw,
        quality_of=lambda s: s.input_quality,
    ),
    PointSpec(
        name="one-hour-future-power",
        object_type=ObjectType.ANALOG_VALUE,
        instance=2,
        description="Forecast building power 60 minutes ahead (kW)",
        units="kilowatts",
        cov_increment=0.1,
        writable=False,
        default=SENTINEL_KW,
        value_of=_forecast_kw,
        quality_of=lambda s: s.forecast_quality,
        names_forecaster=True,
    ),
    PointSpec(
        name="power-rate-of-change",
        object_type=ObjectType.ANALOG_VALUE,
        instance=3,
        description="Rate of change of building power in kW per minute over the last minute",
        units="kilowatts",
        cov_increment=0.05,
        writable=False,
        default=SENTINEL_KW,
        value_of=lambda s: s.rate_of_change_kw_per_min,
        quality_of=lambda s: s.rate_quality,
    ),
    PointSpec(
        name="model-rsme",
        object_type=ObjectType.ANALOG_VALUE,
        instance=4,
        description="RMSE of the 60-minute-ahead forecast (kW)",
        units="kilowatts",
        cov_increment=0.01,
        writable=False,
        default=SENTINEL_KW,
        value_of=lambda s: s.model.rmse_kw,
        quality_of=lambda s: s.model_rmse_quality,
        names_forecaster=True,
    ),
    PointSpec(
        name="model-training-time",
        object_type=ObjectType.ANALOG_VALUE,
        instance=5,
        description="Wall time of the last model training (minutes)",
        units="minutes",
        cov_increment=0.1,
        writable=False,
        default=SENTINEL_KW,
        value_of=lambda s: s.model.training_minutes,
        quality_of=lambda s: s.training_quality,
    ),
    PointSpec(
        name="high-load-conditions",
        object_type=ObjectType.BINARY_VALUE,
        instance=1,
        description="Active when the last minute is above the {high_percentile:g}th percentile "
        "of the last {window_days:g} days",
        units=None,
        cov_increment=None,
        writable=False,
        default=False,
        value_of=lambda s: s.high_load,
        quality_of=lambda s: s.load_quality,
        state_text=("normal", "high load"),
    ),
    PointSpec(
        name="low-load-conditions",
        object_type=ObjectType.BINARY_VALUE,
        instance=2,
        description="Active when the last minute is below the {low_percentile:g}th percentile "
        "of the last {window_days:g} days",
        units=None,
        cov_increment=None,
        writable=False,
        default=False,
        value_of=lambda s: s.low_load,
        quality_of=lambda s: s.load_quality,
        state_text=("normal", "low load"),
    ),
)

POINTS_BY_NAME: dict[str, PointSpec] = {point.name: point for point in POINTS}
INPUT_POWER_METER = POINTS_BY_NAME["input-power-meter"]
